"""The CNI protocol, pure: parse and validate an invocation, shape requests and results.

Spec: https://www.cni.dev/docs/spec/ (1.1; results in the 1.0 format). Called
by :mod:`glia.cni.plugin`; no I/O here, so everything is tested with plain
dicts. Validation follows the reference implementation (libcni's ``skel``):
same error codes, same messages where it has them.

Standard library only, imported by a process that must start fast.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple, NoReturn

from glia.cni.ports import PortMappingError, port_mappings

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
# only by a "version" key per IP, added by :func:`result_for_version`.
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


class Invocation(NamedTuple):
    """Everything one run of the plugin was given, validated."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str]  # CNI_ARGS without the IgnoreUnknown directive
    config: dict[str, Any]  # the network configuration from stdin, as given
    cni_version: str


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


def version_output() -> dict[str, Any]:
    """What ``CNI_COMMAND=VERSION`` prints."""
    return {"cniVersion": VERSION_OUTPUT_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}


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


# -- the whole invocation ---------------------------------------------------------


def parse_invocation(env: Mapping[str, str], stdin: bytes) -> Invocation:
    """Validate everything but VERSION, in libcni's order: env, config, version."""
    cmd = command_of(env)
    check_env(cmd, env)
    conf = parse_config(stdin)
    version = config_version(conf)
    check_version(cmd, version)
    check_plugin_type(conf)
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    if cmd == "ADD" and "prevResult" in conf:
        # Chained after the plugin that made the interface (docs/chaining.md): the
        # agent attaches to it; a prevResult it cannot read is refused here.
        if not isinstance(conf["prevResult"], dict):
            raise CniError(ERR_INVALID_CONFIG, "prevResult must be an object (a CNI result)")
        check_prev_result(normalize_prev_result(conf["prevResult"]))
    if cmd == "ADD":
        try:
            port_mappings(conf)
        except PortMappingError as e:
            raise CniError(ERR_INVALID_CONFIG, f"podman run -p: {e}") from None
    if cmd == "CHECK":
        if not isinstance(conf.get("prevResult"), dict):
            raise CniError(ERR_INVALID_CONFIG, "CHECK needs the prevResult of the ADD")
        check_prev_result(normalize_prev_result(conf["prevResult"]))
    return Invocation(
        command=cmd,
        container_id=env.get("CNI_CONTAINERID", ""),
        netns=env.get("CNI_NETNS", ""),
        ifname=env.get("CNI_IFNAME", ""),
        args=args,
        config=conf,
        cni_version=version,
    )


def agent_request(inv: Invocation) -> dict[str, Any]:
    """The ``CniRequest`` body of ``POST /v1/cni/{add,del,check}`` (docs/agent-api.md).

    ``prev_result`` is the configuration's, in the 1.0 shape; a malformed one
    (only DEL gets this far with one, and DEL must not fail for it) is left out.
    """
    prev = inv.config.get("prevResult")
    if isinstance(prev, dict):
        prev = normalize_prev_result(prev)
        try:
            check_prev_result(prev)
        except CniError:
            prev = None
    return {
        "command": inv.command,
        "container_id": inv.container_id,
        "netns": inv.netns,
        "ifname": inv.ifname,
        "args": inv.args,
        "config": inv.config,
        "prev_result": prev if isinstance(prev, dict) else None,
    }


def gc_request(inv: Invocation) -> dict[str, Any]:
    """The body of ``POST /v1/cni/gc``."""
    return {"valid_attachments": valid_attachments(inv.config), "config": inv.config}


# -- prevResult -------------------------------------------------------------------


def check_prev_result(prev: Any) -> None:
    """A 1.0 result's shape (code 7, naming the field): what CHECK compares against.

    Spec "Success" result: ``interfaces`` [{name, mac?, mtu?, sandbox?}], ``ips``
    [{address (CIDR), gateway?, interface? (an index of interfaces)}], ``routes``
    [{dst (CIDR), gw?}], ``dns`` {nameservers?, domain?, search?, options?}. Keys
    the spec does not name are allowed: a chained plugin may add its own.
    """
    if not isinstance(prev, dict):
        _bad_prev("prevResult", "a JSON object", prev)
    interfaces = _prev_list(prev, "interfaces")
    for i, itf in enumerate(interfaces):
        where = f"prevResult.interfaces[{i}]"
        if not isinstance(itf, dict):
            _bad_prev(where, "an object", itf)
        if not isinstance(itf.get("name"), str) or not itf["name"]:
            _bad_prev(f"{where}.name", "an interface name", itf.get("name"))
        for key in ("mac", "sandbox", "socketPath", "pciID"):
            if key in itf and not isinstance(itf[key], str):
                _bad_prev(f"{where}.{key}", "a string", itf[key])
        if "mtu" in itf and not _is_uint(itf["mtu"]):
            _bad_prev(f"{where}.mtu", "a number of bytes", itf["mtu"])
    for i, ip in enumerate(_prev_list(prev, "ips")):
        where = f"prevResult.ips[{i}]"
        if not isinstance(ip, dict):
            _bad_prev(where, "an object", ip)
        _prev_cidr(ip.get("address"), f"{where}.address")
        if ip.get("gateway") is not None:
            _prev_ip(ip["gateway"], f"{where}.gateway")
        index = ip.get("interface")
        if index is not None and (not _is_uint(index) or index >= len(interfaces)):
            _bad_prev(
                f"{where}.interface",
                f"an index of prevResult.interfaces (0..{len(interfaces) - 1})"
                if interfaces
                else "absent (prevResult has no interfaces)",
                index,
            )
    for i, route in enumerate(_prev_list(prev, "routes")):
        where = f"prevResult.routes[{i}]"
        if not isinstance(route, dict):
            _bad_prev(where, "an object", route)
        _prev_cidr(route.get("dst"), f"{where}.dst")
        if route.get("gw") is not None:
            _prev_ip(route["gw"], f"{where}.gw")
    dns = prev.get("dns")
    if dns is not None:
        if not isinstance(dns, dict):
            _bad_prev("prevResult.dns", "an object", dns)
        if "domain" in dns and not isinstance(dns["domain"], str):
            _bad_prev("prevResult.dns.domain", "a string", dns["domain"])
        for key in ("nameservers", "search", "options"):
            value = dns.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                _bad_prev(f"prevResult.dns.{key}", "a list of strings", value)


def _prev_list(prev: dict[str, Any], key: str) -> list[Any]:
    value = prev.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        _bad_prev(f"prevResult.{key}", "a list", value)
    return value


def _prev_cidr(value: Any, where: str) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        ipaddress.ip_interface(value)
        if "/" not in value:
            raise ValueError(value)
    except ValueError:
        _bad_prev(where, "an address with its prefix length (CIDR)", value)


def _prev_ip(value: Any, where: str) -> None:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        ipaddress.ip_address(value)
    except ValueError:
        _bad_prev(where, "an IP address", value)


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_prev(where: str, expected: str, got: Any) -> NoReturn:
    try:
        shown = json.dumps(got)
    except (TypeError, ValueError):
        shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise CniError(
        ERR_INVALID_CONFIG,
        f"invalid prevResult: {where}: expected {expected}, got {shown}",
        "CHECK compares the container's networking with the prevResult of its ADD",
    )


# -- results ----------------------------------------------------------------------


def normalize_prev_result(prev: dict[str, Any]) -> dict[str, Any]:
    """A 0.3/0.4 prevResult in the 1.0 shape (no per-IP ``version``), so the agent sees one."""
    out = dict(prev)
    ips = prev.get("ips")
    if isinstance(ips, list):
        out["ips"] = [
            {k: v for k, v in ip.items() if k != "version"} if isinstance(ip, dict) else ip
            for ip in ips
        ]
    return out


def result_for_version(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The agent's 1.0 result, stamped with the configuration's version and shaped for it.

    0.3.0-0.4.0 results carry ``"version": "4"|"6"`` per IP; otherwise they are
    the 1.0 format (libcni's types/100 ``convertTo04x``).
    """
    out = dict(result)
    out["cniVersion"] = version
    parsed = parse_version(version)
    if parsed is not None and parsed < (1, 0, 0):
        ips = result.get("ips") or []
        if not isinstance(ips, list):
            raise CniError(ERR_INTERNAL, "the agent returned an invalid result", "ips: not a list")
        converted = []
        for ip in ips:
            address = ip.get("address") if isinstance(ip, dict) else None
            try:
                if not isinstance(ip, dict) or not isinstance(address, str):
                    raise ValueError(address)
                family = ipaddress.ip_interface(address).version
            except ValueError:
                raise CniError(
                    ERR_INTERNAL, "the agent returned an invalid result", f"ips: {ip!r}"
                ) from None
            converted.append({**ip, "version": str(family)})
        out["ips"] = converted
    return out


def add_result(result: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Check the agent's ADD answer looks like a 1.0 result, then :func:`result_for_version`."""
    for key in ("interfaces", "ips", "routes"):
        if key in result and not isinstance(result[key], list):
            raise CniError(
                ERR_INTERNAL, "the agent returned an invalid result", f"{key}: not a list"
            )
    if "dns" in result and not isinstance(result["dns"], dict):
        raise CniError(ERR_INTERNAL, "the agent returned an invalid result", "dns: not an object")
    return result_for_version(result, version)


def error_version(conf_version: str | None) -> str:
    """The ``cniVersion`` of an error: the configuration's if we speak it."""
    if conf_version in SUPPORTED_VERSIONS:
        return conf_version
    return FALLBACK_VERSION
