"""The agent's checks of a CNI request body, before an ADD or CHECK changes or reads anything.

Pure. Called by :class:`glia.endpoint.manager.EndpointManager` for ``POST
/v1/cni/add`` and ``/v1/cni/check`` (docs/agent-api.md): the body comes from
glia-cni, which checked the same things, but the agent trusts no client. The
rules are glia-cni's own (:mod:`glia.cni.spec`, :mod:`glia.cni.prevresult`),
so both sides refuse the same input with the same CNI error code; what needs
the file system (is ``CNI_NETNS`` a pod's network namespace?) is
:mod:`glia.endpoint.netns_check`.

Codes, as the spec defines them (https://www.cni.dev/docs/spec/#error): 4 for
a request field that comes from an environment variable (``CNI_CONTAINERID``,
``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS``; the message names it), 7 for the
network configuration (``cniVersion``'s type, ``prevResult``), 1 for a version
glia does not speak.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from glia.cni import spec
from glia.cni.ports import PortMappingError, port_mappings
from glia.cni.prevresult import check_prev_result
from glia.cni.spec import ERR_INVALID_CONFIG, ERR_INVALID_ENV, CniError
from glia.model.endpoint import MAX_ALIASES, Endpoint, HostPort, alias_problem
from glia.model.identity import NAMESPACE_LABEL

DEFAULT_IFNAME = "eth0"
DEFAULT_NAMESPACE = "default"
DEFAULT_CNI_VERSION = "1.0.0"
# K8S_POD_NAME becomes the endpoint's name: a key segment in etcd
# (.../endpoints/v1/<cluster>/<namespace>/<name>) and a log word. Kubernetes
# pod names are DNS subdomains (253), podman names letters, digits, _ . -.
MAX_POD_NAME = 253
# K8S_POD_NAMESPACE is also a label value (io.kubernetes.pod.namespace): 63.
MAX_POD_NAMESPACE = 63
_POD_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

# CNI_ARGS glia reads (IP) or may ignore because they only name the pod
# (Kubernetes' runtimes send all four K8S_ ones; podman sends K8S_POD_NAME and
# IgnoreUnknown, which glia-cni strips, plus whatever CNI_ARGS its own
# environment holds). Any other key is an option glia cannot honour, MAC= above
# all (podman run --mac-address): refused, never silently ignored.
KNOWN_CNI_ARGS = frozenset(
    {"K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "IP"}
)
_ARG_OPTION = {"MAC": "--mac-address (CNI_ARGS MAC)"}
# runtimeConfig keys (capabilities) glia-cni reads; portMappings are the host ports
# the agent serves on the lb maps (docs/hostport.md); a chained endpoint ignores
# them (a portmap plugin chained after glia-cni may serve them).
KNOWN_RUNTIME_CONFIG = frozenset({"aliases", "ips", "portMappings"})


class NetnsId(NamedTuple):
    """A network namespace's identity: its nsfs file's device and inode."""

    dev: int
    ino: int


@dataclass(frozen=True, slots=True)
class AddRequest:
    """A checked ``POST /v1/cni/add`` body."""

    container_id: str
    netns: str
    ifname: str
    name: str  # K8S_POD_NAME, else the container id's first 12 characters
    namespace: str  # K8S_POD_NAMESPACE, else "default"
    cni_version: str  # of the result
    ip: str | None = None  # the address asked for (podman run --ip), if any
    aliases: tuple[str, ...] = ()  # --network-alias names (and podman's short id), lower case
    ports: tuple[HostPort, ...] = ()  # podman run -p (runtimeConfig.portMappings)


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A checked ``POST /v1/cni/check`` body."""

    container_id: str
    netns: str
    ifname: str
    prev_result: dict[str, Any]  # well-formed (check_prev_result)


def parse_add(body: Any) -> AddRequest:
    """The ADD request's fields, or CniError (4, 7 or 1) naming the one that is wrong."""
    cid, netns, ifname = _attachment(body)
    name, namespace = _pod(body.get("args"), cid)
    version = _cni_version(body.get("config"))
    check_supported(body.get("args"), body.get("config"))
    ip = requested_ip(body.get("args"), body.get("config"))
    aliases = requested_aliases(body.get("config"))
    ports = requested_ports(body.get("config"))
    return AddRequest(cid, netns, ifname, name, namespace, version, ip, aliases, ports)


def requested_ports(config: Any) -> tuple[HostPort, ...]:
    """The host ports of ``runtimeConfig.portMappings`` (code 7 if glia cannot honour one).

    The rules are glia-cni's (:func:`glia.cni.ports.port_mappings`). The same
    mapping listed twice counts once; two mappings of this request that claim
    one frontend (``-p 8080:80 -p 8080:81``) are refused, as podman would.
    """
    if not isinstance(config, Mapping):
        return ()
    try:
        mappings = port_mappings(config)
    except PortMappingError as e:
        raise CniError(ERR_INVALID_CONFIG, f"podman run -p: {e}") from None
    out: list[HostPort] = []
    for m in mappings:
        hp = HostPort(m.host_port, m.container_port, m.protocol, m.host_ip)
        if hp in out:
            continue
        clash = next((o for o in out if o.overlaps(hp)), None)
        if clash is not None:
            raise CniError(
                ERR_INVALID_CONFIG, f"podman run -p: {hp} and {clash} claim the same host port"
            )
        out.append(hp)
    return tuple(out)


def check_host_ports(ports: Iterable[HostPort], others: Iterable[Endpoint]) -> None:
    """Refuse (code 7) a host port another endpoint of this node holds, naming the holder.

    Same protocol and host port, and the same host IP or either empty (an empty
    one claims the node IP and 127.0.0.1, and a host IP may be either).
    """
    for hp in ports:
        for other in others:
            clash = next((o for o in other.ports if o.overlaps(hp)), None)
            if clash is not None:
                raise CniError(
                    ERR_INVALID_CONFIG,
                    f"podman run -p {hp}: host port {clash.host_port}/{clash.protocol} is "
                    f"taken by {other.namespace}/{other.name} "
                    f"(container {other.container_id[:12]}, -p {clash})",
                )


def check_supported(args: Any, config: Any) -> None:
    """Refuse (code 4 or 7) an ADD asking for what glia cannot do, naming the option.

    ``args`` are CNI_ARGS (already checked to be strings), ``config`` the
    network configuration with the runtime's ``runtimeConfig``.
    """
    for key in sorted(args or {}):
        if key in KNOWN_CNI_ARGS:
            continue
        option = _ARG_OPTION.get(key, f"CNI_ARGS {str(key)[:60]}")
        raise CniError(
            ERR_INVALID_ENV,
            f"{option} is not supported by glia",
            f"glia reads CNI_ARGS {', '.join(sorted(KNOWN_CNI_ARGS))} only; "
            "run the container without that option",
        )
    rc = config.get("runtimeConfig") if isinstance(config, Mapping) else None
    if rc is None:
        return
    if not isinstance(rc, Mapping):
        raise CniError(ERR_INVALID_CONFIG, "runtimeConfig must be an object")
    for key in sorted(rc):
        if key not in KNOWN_RUNTIME_CONFIG:
            raise CniError(
                ERR_INVALID_CONFIG,
                f"runtimeConfig.{str(key)[:60]} (capability) is not supported by glia",
                f"glia-cni reads {', '.join(sorted(KNOWN_RUNTIME_CONFIG))} only",
            )


def requested_aliases(config: Any) -> tuple[str, ...]:
    """The endpoint's DNS aliases from ``runtimeConfig.aliases`` (code 7 if malformed).

    Podman (CNI backend) sends ``{"<network>": ["db", "<short id>"]}`` when the
    conflist declares the ``aliases`` capability: its ``--network-alias`` names
    and the container's 12-character short id. Only the list of this network
    (``config.name``) counts. Names are folded to lower case (DNS is
    case-insensitive); each must be a DNS label, at most ``MAX_ALIASES`` of them.
    """
    rc = config.get("runtimeConfig") if isinstance(config, Mapping) else None
    if not isinstance(rc, Mapping) or rc.get("aliases") is None:
        return ()
    by_net = rc["aliases"]
    if not isinstance(by_net, Mapping):
        raise CniError(
            ERR_INVALID_CONFIG, "runtimeConfig.aliases must be an object: network -> list of names"
        )
    network = config.get("name") if isinstance(config, Mapping) else None
    raw = by_net.get(network, []) if isinstance(network, str) else []
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise CniError(
            ERR_INVALID_CONFIG, f"runtimeConfig.aliases.{network}: expected a list of names"
        )
    out: list[str] = []
    for alias in raw:
        alias = alias.lower()
        problem = alias_problem(alias)
        if problem is not None:
            raise CniError(
                ERR_INVALID_CONFIG,
                f"--network-alias {problem}",
                "glia answers aliases as single DNS names (docs/dns.md)",
            )
        if alias not in out:
            out.append(alias)
    if len(out) > MAX_ALIASES:
        raise CniError(
            ERR_INVALID_CONFIG,
            f"{len(out)} network aliases; glia keeps at most {MAX_ALIASES} per endpoint",
        )
    return tuple(out)


def requested_ip(args: Any, config: Any) -> str | None:
    """The one IPv4 address the runtime asks for, or None (code 4 or 7 if malformed).

    Podman sends one ``--ip`` as ``CNI_ARGS`` ``IP=A.B.C.D`` (host-local's
    convention) and several as ``runtimeConfig.ips`` (the ``ips`` capability);
    an address may carry a prefix length (``10.1.1.7/24``), which is ignored:
    the prefix is the node's. An endpoint has one IPv4 address, so asking for
    more, or for IPv6, is refused rather than half-honoured.
    """
    wanted: list[tuple[str, str]] = []  # (where, address)
    raw = args.get("IP") if isinstance(args, Mapping) else None
    if raw:
        wanted += [("CNI_ARGS IP", part) for part in str(raw).split(",") if part.strip()]
    rc = config.get("runtimeConfig") if isinstance(config, Mapping) else None
    if isinstance(rc, Mapping) and rc.get("ips") is not None:
        ips = rc["ips"]
        if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
            raise CniError(ERR_INVALID_CONFIG, "runtimeConfig.ips must be a list of strings")
        wanted += [("runtimeConfig.ips", i) for i in ips]
    addrs: dict[str, str] = {}
    for where, text in wanted:
        try:
            addr = ipaddress.ip_interface(text.strip()).ip
        except ValueError:
            code = ERR_INVALID_ENV if where.startswith("CNI_ARGS") else ERR_INVALID_CONFIG
            raise CniError(code, f"{where}: {text[:60]!r} is not an IP address") from None
        if addr.version != 4:
            raise CniError(
                ERR_INVALID_ENV, f"{where}: {addr} is IPv6; glia endpoints have IPv4 addresses only"
            )
        addrs.setdefault(str(addr), where)
    if len(addrs) > 1:
        raise CniError(
            ERR_INVALID_ENV,
            f"{len(addrs)} addresses requested ({', '.join(sorted(addrs))}); "
            "a glia endpoint has exactly one IPv4 address",
        )
    return next(iter(addrs), None)


def parse_check(body: Any) -> CheckRequest:
    """The CHECK request's fields; ``prev_result`` is required and must be well-formed."""
    cid, netns, ifname = _attachment(body)
    prev = body.get("prev_result")
    if prev is None:
        raise CniError(ERR_INVALID_CONFIG, "CHECK needs the prevResult of the ADD")
    check_prev_result(prev)
    return CheckRequest(cid, netns, ifname, prev)


def check_prev_matches(ep: Endpoint, prev: Mapping[str, Any]) -> None:
    """CHECK: the prevResult must list the address glia gave the endpoint (code 7).

    Other addresses may be there (a plugin chained after glia-cni may add its
    own); the endpoint's must not be missing, or the runtime expects another pod.
    """
    listed = set()
    for ip in prev.get("ips") or []:
        listed.add(ipaddress.ip_interface(ip["address"]).ip)  # well-formed: checked before
    if ipaddress.ip_address(ep.ip) not in listed:
        shown = ", ".join(sorted(str(a) for a in listed)) or "no address"
        raise CniError(
            ERR_INVALID_CONFIG,
            f"prevResult does not match container {ep.container_id[:12]}/{ep.ifname}: "
            f"it lists {shown}, the endpoint has {ep.ip}",
        )


def check_one_netns(
    container_id: str,
    netns: str,
    target: NetnsId,
    attached: Iterable[tuple[Endpoint, NetnsId | None]],
) -> None:
    """A container has one network namespace: refuse (code 4) an ADD or CHECK naming another.

    ``attached``: the container's existing endpoints with the identity of their
    namespace now (None if its path is gone). The same path, or another path to
    the same namespace, is the same attachment; anything else is refused,
    rather than answering with (or adding to) an attachment somewhere else.
    """
    for ep, ident in attached:
        if ep.netns != netns and (ident is None or ident != target):
            raise CniError(
                ERR_INVALID_ENV,
                f"CNI_NETNS {netns[:200]} is not the network namespace of CNI_CONTAINERID "
                f"{container_id[:40]}: its {ep.ifname} is in {ep.netns}",
                "DEL the container first to attach it elsewhere",
            )


def in_cidr(ip: str, cidr: str) -> bool:
    """Whether ``ip`` lies in ``cidr`` (False for anything malformed)."""
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def namespace_from_labels(labels: Mapping[str, str], current: str) -> tuple[str, str | None]:
    """The endpoint's namespace from its runtime labels, and why not, if not.

    ``io.kubernetes.pod.namespace`` (``podman run --label
    io.kubernetes.pod.namespace=shop``) names it; without the label the
    endpoint keeps ``current`` (CNI_ARGS ``K8S_POD_NAMESPACE``, else
    ``default``). A value that is not a DNS-1123 label (what Kubernetes allows
    as a namespace) is not used: the endpoint keeps ``current`` and the second
    item says why, for the agent's log. Labels arrive after ADD returned, so
    there is no CNI error to give any more.
    """
    value = labels.get(NAMESPACE_LABEL)
    if value is None:
        return current, None
    if len(value) > MAX_POD_NAMESPACE or not _DNS1123_LABEL.fullmatch(value):
        return current, (
            f"label {NAMESPACE_LABEL}={value[:80]!r} is not a namespace name "
            "(at most 63 lowercase letters, digits or '-', starting and ending with a "
            "letter or digit)"
        )
    return value, None


# -- fields -------------------------------------------------------------------------


def _attachment(body: Any) -> tuple[str, str, str]:
    if not isinstance(body, Mapping):
        raise CniError(ERR_INVALID_CONFIG, "request body must be a JSON object")
    cid = body.get("container_id")
    if not isinstance(cid, str) or not cid:
        raise CniError(ERR_INVALID_ENV, "container_id (CNI_CONTAINERID) is required")
    spec.validate_container_id(cid)
    spec.check_container_id_length(cid)
    netns = body.get("netns")
    if not isinstance(netns, str) or not netns:
        raise CniError(ERR_INVALID_ENV, "netns (CNI_NETNS) is required")
    spec.check_netns_path(netns)
    ifname = body.get("ifname") or DEFAULT_IFNAME
    if not isinstance(ifname, str):
        raise CniError(ERR_INVALID_ENV, f"ifname (CNI_IFNAME) must be a string, got {ifname!r:.60}")
    spec.validate_ifname(ifname)
    return cid, netns, ifname


def _pod(args: Any, container_id: str) -> tuple[str, str]:
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise CniError(ERR_INVALID_ENV, "args (CNI_ARGS) must be an object of strings")
    for key, value in args.items():
        if not isinstance(value, str):
            raise CniError(
                ERR_INVALID_ENV, f"CNI_ARGS {str(key)[:60]}: expected a string, got {value!r:.60}"
            )
    name = args.get("K8S_POD_NAME") or container_id[:12]
    namespace = args.get("K8S_POD_NAMESPACE") or DEFAULT_NAMESPACE
    for key, value, limit in (
        ("K8S_POD_NAME", name, MAX_POD_NAME),
        ("K8S_POD_NAMESPACE", namespace, MAX_POD_NAMESPACE),
    ):
        if len(value) > limit or not _POD_NAME.fullmatch(value):
            raise CniError(
                ERR_INVALID_ENV,
                f"CNI_ARGS {key} must be at most {limit} letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
                value[:200],
            )
    return name, namespace


def _cni_version(config: Any) -> str:
    if config is None:
        return DEFAULT_CNI_VERSION
    if not isinstance(config, Mapping):
        raise CniError(ERR_INVALID_CONFIG, "config (the network configuration) must be an object")
    version = config.get("cniVersion", DEFAULT_CNI_VERSION)
    if not isinstance(version, str):
        raise CniError(spec.ERR_DECODE, "config.cniVersion must be a string")
    spec.check_version("ADD", version)
    return version
