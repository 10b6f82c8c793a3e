"""The CNI spec's rules, pure: error codes, environment, versions, network configuration.

Spec: https://www.cni.dev/docs/spec/ (1.1; results in the 1.0 format). Each
check raises :class:`CniError` with the spec's code; validation follows the
reference implementation (libcni's ``skel``): same error codes, same messages
where it has them. :mod:`glia.cni.invocation` puts the checks together for one
run of the plugin, :mod:`glia.cni.prevresult` checks a ``prevResult`` and
:mod:`glia.cni.result` shapes what the plugin prints; the agent
(glia.endpoint.request) runs the same checks again. No I/O here, so
everything is tested with plain dicts.

Standard library only, imported by a process that must start fast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

# Well-known error codes (spec section "Error").
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_INTERNAL = 999  # what libcni's skel uses for an error that has no code

# Result format 1.0 is also a valid 1.1 result; 0.3.x and 0.4.0 results differ
# only by a "version" key per IP, added by
# :func:`glia.cni.result.result_for_version`.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
VERSION_OUTPUT_VERSION = "1.0.0"
# The version stamped on errors when the configuration gives no usable one.
FALLBACK_VERSION = "1.0.0"

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# The verbs that exist only from a spec version on (libcni skel's floors).
_VERB_MIN_VERSION = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}
# Required environment per verb (CNI_PATH is accepted but never required: this
# plugin delegates to no other plugin, so it never searches it).
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}

# Same value as glia.agent.client.DEFAULT_SOCKET (a test keeps them equal); not
# imported from there, as that module pulls in http.client, which VERSION and
# invalid invocations need not pay for.
DEFAULT_AGENT_SOCKET = "/run/glia/agent.sock"
DEFAULT_AGENT_WAIT = 5.0  # seconds to wait for a starting agent, like Cilium's client
VALID_ATTACHMENTS_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")

_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_MAX_IFNAME = 15
# The spec sets no length; runtimes use 64 hex digits (a sha256: podman, Docker,
# containerd, CRI-O). What the agent makes of an id: the host veth's name is a
# hash of it (gliae + 10 hex digits, any length fits IFNAMSIZ); the endpoint
# record's file name is ``<id>-<ifname>.json`` (NAME_MAX 255 bytes, so at most
# 234 characters); the IPAM owner, the endpoint's value in etcd and every log
# line carry it. 128 leaves room for a prefixed id and keeps all of those far
# from a limit. Enforced on ADD and CHECK (what creates or reads an endpoint);
# DEL takes any length, so an endpoint made before this limit can still go.
MAX_CONTAINER_ID = 128
# PATH_MAX including the terminating NUL: the kernel refuses longer paths.
MAX_PATH = 4095


class CniError(Exception):
    """An error to print as CNI error JSON: ``code`` is a spec error code."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


class PluginSettings(NamedTuple):
    """glia-cni's own keys in the network configuration."""

    agent_socket: str
    delete_queue_dir: str
    agent_wait: float  # seconds to wait for the agent's socket to appear


# -- environment -------------------------------------------------------------------


def parse_cni_args(raw: str) -> dict[str, str]:
    """``IgnoreUnknown=1;K8S_POD_NAME=x;K8S_POD_NAMESPACE=y`` -> dict (error code 4).

    Unknown keys are kept for the agent whatever ``IgnoreUnknown`` says: the
    agent refuses an ADD with keys it cannot honour (``MAC``, ...;
    :func:`glia.endpoint.request.check_supported`) rather than ignore them.
    Empty segments (a trailing ``;``) are skipped.
    """
    out: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(
                ERR_INVALID_ENV, "invalid CNI_ARGS", f"ARGS: invalid pair {pair!r}, want KEY=VALUE"
            )
        if key != "IgnoreUnknown":
            out[key] = value
    return out


def valid_name(name: str) -> bool:
    """The spec's rule for container ids and network names."""
    return _NAME_RE.fullmatch(name) is not None


def validate_container_id(container_id: str) -> None:
    if not valid_name(container_id):
        raise CniError(ERR_INVALID_ENV, "invalid characters in containerID", container_id[:200])


def check_container_id_length(container_id: str) -> None:
    """Code 4 (spec: invalid necessary environment variable, named in the message)."""
    if len(container_id) > MAX_CONTAINER_ID:
        raise CniError(
            ERR_INVALID_ENV,
            f"CNI_CONTAINERID is longer than {MAX_CONTAINER_ID} characters",
            f"{len(container_id)} characters: {container_id[:40]}...",
        )


def check_netns_path(netns: str) -> None:
    """What can be said of ``CNI_NETNS`` without opening it (code 4)."""
    if not netns.startswith("/"):
        raise CniError(ERR_INVALID_ENV, "CNI_NETNS must be an absolute path", netns[:200])
    if "\0" in netns:
        raise CniError(ERR_INVALID_ENV, "CNI_NETNS contains a NUL character", repr(netns[:200]))
    if len(netns.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise CniError(
            ERR_INVALID_ENV, f"CNI_NETNS is longer than {MAX_PATH} bytes (PATH_MAX)", netns[:200]
        )


def validate_ifname(ifname: str) -> None:
    """The kernel's rules for an interface name (net/core/dev.c ``dev_valid_name``)."""
    if len(ifname.encode()) > _MAX_IFNAME:
        raise CniError(
            ERR_INVALID_ENV,
            "interface name is too long",
            f"interface name should be less than {_MAX_IFNAME + 1} characters",
        )
    if ifname in (".", ".."):
        raise CniError(ERR_INVALID_ENV, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in ifname):
        raise CniError(ERR_INVALID_ENV, "interface name contains / or : or whitespace characters")


def command_of(env: Mapping[str, str]) -> str:
    """``CNI_COMMAND``, checked against the verbs this plugin knows (error code 4)."""
    cmd = env.get("CNI_COMMAND", "")
    if not cmd:
        raise CniError(ERR_INVALID_ENV, "required env variables [CNI_COMMAND] missing")
    if cmd not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"unknown CNI_COMMAND: {cmd}")
    return cmd


def check_env(cmd: str, env: Mapping[str, str]) -> None:
    missing = [name for name in _REQUIRED_ENV[cmd] if not env.get(name)]
    if missing:
        raise CniError(ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    if env.get("CNI_CONTAINERID"):
        validate_container_id(env["CNI_CONTAINERID"])
        if cmd in ("ADD", "CHECK"):
            check_container_id_length(env["CNI_CONTAINERID"])
    if env.get("CNI_IFNAME"):
        validate_ifname(env["CNI_IFNAME"])
    if env.get("CNI_NETNS"):
        check_netns_path(env["CNI_NETNS"])


# -- versions ---------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int] | None:
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def check_version(cmd: str, version: str) -> None:
    """The configuration's ``cniVersion`` must be one we speak and allow the verb (code 1)."""
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
        raise CniError(
            ERR_INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f'config is "{version}", plugin supports [{supported}]',
        )
    floor = _VERB_MIN_VERSION.get(cmd)
    parsed = parse_version(version)
    if floor is not None and parsed is not None and parsed < floor:
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"config version does not allow {cmd}")


# -- network configuration --------------------------------------------------------


def parse_config(raw: bytes) -> dict[str, Any]:
    """stdin -> the network configuration object (code 6 if not JSON, 7 if invalid)."""
    try:
        conf = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CniError(ERR_DECODE, f"error unmarshall network config: {e}") from None
    if not isinstance(conf, dict):
        raise CniError(
            ERR_DECODE, "error unmarshall network config: not a JSON object", type(conf).__name__
        )
    version = conf.get("cniVersion", "")
    if not isinstance(version, str):
        raise CniError(ERR_DECODE, "error unmarshall network config: cniVersion is not a string")
    name = conf.get("name")
    if not isinstance(name, str):
        raise CniError(ERR_INVALID_CONFIG, "missing network name")
    if not valid_name(name):
        raise CniError(ERR_INVALID_CONFIG, "invalid characters found in network name", name[:200])
    return conf


def check_plugin_type(conf: Mapping[str, Any]) -> None:
    """The configuration's ``type`` (code 7); after the version, which tells more when both fail."""
    # The spec: "type (string): the name of the CNI plugin binary on disk. Must
    # not contain characters disallowed in file paths for the system" (/ here).
    ptype = conf.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniError(
            ERR_INVALID_CONFIG,
            'missing plugin type: the network configuration needs a string "type"',
            f"type: {json.dumps(ptype)[:200]}" if "type" in conf else "",
        )
    if any(c in "/\\\0" for c in ptype):
        raise CniError(ERR_INVALID_CONFIG, "invalid characters found in plugin type", ptype[:200])


def config_version(conf: Mapping[str, Any]) -> str:
    # As libcni: a configuration without cniVersion is a 0.1.0 one.
    version = conf.get("cniVersion") or "0.1.0"
    return version if isinstance(version, str) else "0.1.0"


def plugin_settings(conf: Mapping[str, Any], default_socket: str) -> PluginSettings:
    """glia-cni's keys: ``agentSocket``, ``deleteQueueDir``, ``agentWaitSeconds`` (code 7)."""
    sock = conf.get("agentSocket", default_socket)
    if not isinstance(sock, str) or not sock.startswith("/"):
        raise CniError(ERR_INVALID_CONFIG, "agentSocket must be an absolute path", repr(sock))
    queue = conf.get("deleteQueueDir", default_delete_queue_dir(sock))
    if not isinstance(queue, str) or not queue.startswith("/"):
        raise CniError(ERR_INVALID_CONFIG, "deleteQueueDir must be an absolute path", repr(queue))
    wait = conf.get("agentWaitSeconds", DEFAULT_AGENT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 300:
        raise CniError(
            ERR_INVALID_CONFIG, "agentWaitSeconds must be a number of seconds in 0..300", repr(wait)
        )
    return PluginSettings(sock, queue, float(wait))


def default_delete_queue_dir(agent_socket: str) -> str:
    """Next to the socket, so each lab node has its own queue with no extra setting."""
    parent = agent_socket.rsplit("/", 1)[0] or "/"
    return parent.rstrip("/") + "/cni-delete-queue"


def valid_attachments(conf: Mapping[str, Any]) -> list[dict[str, str]]:
    """GC's list of attachments to keep (code 7 if absent or malformed).

    Absent is an error rather than "keep nothing": releasing every attachment of
    the network because a runtime forgot the key would take all pods down.
    """
    for key in VALID_ATTACHMENTS_KEYS:
        if key in conf:
            raw = conf[key]
            break
    else:
        raise CniError(ERR_INVALID_CONFIG, "GC needs cni.dev/valid-attachments in the config")
    if not isinstance(raw, list):
        raise CniError(ERR_INVALID_CONFIG, f"{key} must be a list", type(raw).__name__)
    out = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("containerID"), str)
            or not isinstance(item.get("ifname"), str)
        ):
            raise CniError(
                ERR_INVALID_CONFIG,
                f"each {key} entry needs string containerID and ifname",
                json.dumps(item)[:200],
            )
        out.append({"containerID": item["containerID"], "ifname": item["ifname"]})
    return out
