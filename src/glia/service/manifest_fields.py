"""The fields of a Kubernetes Service's ``spec`` (and its name rules), checked one by one.

Pure; called by :mod:`glia.service.manifest` for each Service document. Each
``parse_*`` function checks one field, adds every problem to the document's
:class:`~glia.manifestcheck.DocProblems` (naming the field) and returns the
model value, or a default when the field is invalid (the caller looks at
``doc.ok``). ``SPEC_UNSUPPORTED`` lists the ServiceSpec fields Kubernetes
defines but glia does not implement.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from glia.manifestcheck import DocProblems, empty, is_int, show
from glia.model.service import Protocol, ServicePort
from glia.service import clusterip

DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for ClientIP affinity, seconds
MAX_AFFINITY_TIMEOUT = 86400

# Kubernetes name rules: Service names are DNS-1035 labels, namespaces and port
# names DNS-1123 labels, a named targetPort an IANA service name.
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def dns_label(value: str, rule: re.Pattern[str], what: str) -> str | None:
    if len(value) > 63 or not rule.match(value):
        first = "a lowercase letter" if rule is DNS1035 else "a lowercase letter or digit"
        return (
            f"expected {what}: at most 63 lowercase letters, digits or '-', "
            f"starting with {first} and ending with a letter or digit, got {show(value)}"
        )
    return None


def _iana_name(value: str) -> str | None:
    if (
        len(value) > 15
        or not _IANA_SVC.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        return (
            "expected a port number 1..65535 or a port name (at most 15 lowercase letters, "
            f"digits or single '-', with at least one letter), got {show(value)}"
        )
    return None


PORT_FIELDS = ("name", "port", "targetPort", "protocol", "nodePort", "appProtocol")


def _unsupported(what: str) -> Callable[[Any], str | None]:
    return lambda v: None if empty(v) else f"not supported ({what}), got {show(v)}"


def _allowed(*values: str, why: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None or v in values:
            return None
        return f"expected {' or '.join(values)} ({why}), got {show(v)}"

    return check


def _ip_families(v: Any) -> str | None:
    if v is None or v == [] or v == ["IPv4"]:
        return None
    return f'only ["IPv4"] is supported (glia services are IPv4), got {show(v)}'


_LB_ONLY = "only for NodePort/LoadBalancer/ExternalName Services, which glia does not have"
# Kubernetes ServiceSpec fields glia does not implement: fine when unset (or
# set to what glia does anyway), an error otherwise.
SPEC_UNSUPPORTED: dict[str, Callable[[Any], str | None]] = {
    "externalIPs": _unsupported("glia does not route external IPs"),
    "externalName": _unsupported(_LB_ONLY),
    "externalTrafficPolicy": _unsupported(_LB_ONLY),
    "healthCheckNodePort": _unsupported(_LB_ONLY),
    "loadBalancerIP": _unsupported(_LB_ONLY),
    "loadBalancerSourceRanges": _unsupported(_LB_ONLY),
    "loadBalancerClass": _unsupported(_LB_ONLY),
    "allocateLoadBalancerNodePorts": _unsupported(_LB_ONLY),
    "publishNotReadyAddresses": _unsupported("glia only sends traffic to ready backends"),
    "internalTrafficPolicy": _allowed("Cluster", why="node-local-only backends are not supported"),
    "ipFamilies": _ip_families,
    "ipFamilyPolicy": _allowed("SingleStack", "PreferDualStack", why="glia services are IPv4 only"),
    "trafficDistribution": lambda v: None,  # a hint; ignoring it is allowed by Kubernetes
}


def parse_selector(doc: DocProblems, value: Any) -> dict[str, str]:
    if value is None:
        doc.add("spec.selector", "required: a non-empty mapping of label keys to values")
        return {}
    if isinstance(value, Mapping) and not value:
        doc.add(
            "spec.selector",
            "must not be empty (Services without a selector are not supported)",
        )
        return {}
    return doc.string_map(value, "spec.selector")


def parse_ports(doc: DocProblems, value: Any) -> list[ServicePort]:
    if value is None or value == []:
        doc.add("spec.ports", "required: a non-empty list of ports")
        return []
    if not isinstance(value, list):
        doc.add("spec.ports", f"expected a list of ports, got {show(value)}")
        return []
    ports: list[ServicePort] = []
    names: dict[str, int] = {}
    keys: dict[tuple[int, Protocol], int] = {}
    for i, raw in enumerate(value):
        path = f"spec.ports[{i}]"
        p = doc.mapping(raw, path)
        if p is None:
            if raw is None:
                doc.add(path, "expected a mapping, got null")
            continue
        doc.fields(p, path, PORT_FIELDS)
        name = _port_name(doc, p.get("name"), f"{path}.name", len(value))
        port = p.get("port")
        if not (is_int(port) and 1 <= port <= 65535):
            doc.add(f"{path}.port", f"expected an integer 1..65535, got {show(port)}")
            port = None
        target = p.get("targetPort")
        if target is None or target == 0 or target == "":
            target = port  # Kubernetes' default: the same as port
        elif isinstance(target, str):
            if err := _iana_name(target):
                doc.add(f"{path}.targetPort", err)
                target = None
        elif not (is_int(target) and 1 <= target <= 65535):
            doc.add(
                f"{path}.targetPort",
                f"expected a port number 1..65535 or a port name, got {show(target)}",
            )
            target = None
        proto_raw = p.get("protocol", "TCP")
        proto: Protocol | None = None
        if proto_raw in ("TCP", "UDP", None):
            proto = Protocol(proto_raw or "TCP")
        else:
            hint = " (SCTP is not supported)" if proto_raw == "SCTP" else ""
            doc.add(f"{path}.protocol", f"expected TCP or UDP{hint}, got {show(proto_raw)}")
        if not empty(p.get("nodePort")):
            doc.add(f"{path}.nodePort", f"not supported ({_LB_ONLY}), got {show(p['nodePort'])}")
        if p.get("appProtocol") is not None:
            doc.string(p["appProtocol"], f"{path}.appProtocol")
        if name is not None:
            if name and name in names:
                doc.add(
                    f"{path}.name",
                    f"duplicate port name {show(name)} (also spec.ports[{names[name]}])",
                )
            names.setdefault(name, i)
        if port is not None and proto is not None:
            if (port, proto) in keys:
                doc.add(
                    f"{path}.port",
                    f"duplicate port {port}/{proto} (also spec.ports[{keys[(port, proto)]}])",
                )
            keys.setdefault((port, proto), i)
        if name is not None and port is not None and target is not None and proto is not None:
            ports.append(ServicePort(port=port, target_port=target, protocol=proto, name=name))
    return ports


def _port_name(doc: DocProblems, value: Any, path: str, count: int) -> str | None:
    if value is None or value == "":
        if count > 1:
            doc.add(path, "required when a Service has more than one port")
            return None
        return ""
    name = doc.string(value, path)
    if name is None:
        return None
    if err := dns_label(name, DNS1123, "a port name (DNS-1123 label)"):
        doc.add(path, err)
        return None
    return name


def parse_cluster_ip(doc: DocProblems, spec: Mapping[str, Any], service_cidr: str | None) -> str:
    ip_raw = spec.get("clusterIP")
    ips_raw = spec.get("clusterIPs")
    path = "spec.clusterIP"
    if ips_raw is not None:
        if not isinstance(ips_raw, list) or not all(isinstance(x, str) for x in ips_raw):
            doc.add("spec.clusterIPs", f"expected a list of addresses, got {show(ips_raw)}")
            return ""
        if len(ips_raw) > 1:
            doc.add("spec.clusterIPs", "dual-stack Services are not supported: give one address")
            return ""
        if ips_raw and ip_raw not in (None, "") and ip_raw != ips_raw[0]:
            doc.add(
                "spec.clusterIPs",
                f"must start with spec.clusterIP {show(ip_raw)}, got {show(ips_raw[0])}",
            )
            return ""
        if ips_raw and ip_raw in (None, ""):
            ip_raw, path = ips_raw[0], "spec.clusterIPs[0]"
    if ip_raw is None or ip_raw == "":
        return ""
    ip = doc.string(ip_raw, path)
    if ip is None:
        return ""
    if ip == "None":
        doc.add(path, 'headless Services (clusterIP: "None") are not supported')
        return ""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        doc.add(path, f"expected an IPv4 address, got {show(ip)}")
        return ""
    if addr.version != 4:
        doc.add(path, f"expected an IPv4 address (IPv6 Services are not supported), got {show(ip)}")
        return ""
    if service_cidr and (err := clusterip.check(str(addr), service_cidr)):
        doc.add(path, err)
        return ""
    return str(addr)


def parse_session_affinity(doc: DocProblems, spec: Mapping[str, Any]) -> tuple[bool, int]:
    value = spec.get("sessionAffinity", "None")
    affinity = value == "ClientIP"
    if value not in ("ClientIP", "None", None):
        doc.add("spec.sessionAffinity", f"expected ClientIP or None, got {show(value)}")
    cfg = doc.mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    if cfg is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    if not affinity:
        doc.add("spec.sessionAffinityConfig", "only allowed with sessionAffinity: ClientIP")
    doc.fields(cfg, "spec.sessionAffinityConfig", ("clientIP",))
    client = doc.mapping(cfg.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
    if client is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    doc.fields(client, "spec.sessionAffinityConfig.clientIP", ("timeoutSeconds",))
    timeout = client.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
    if timeout is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    if not (is_int(timeout) and 1 <= timeout <= MAX_AFFINITY_TIMEOUT):
        doc.add(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            f"expected an integer 1..{MAX_AFFINITY_TIMEOUT}, got {show(timeout)}",
        )
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    return affinity, int(timeout)
