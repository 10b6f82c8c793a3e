"""The leaf fields of a CiliumNetworkPolicy: label selectors, entities, CIDRs and ports.

Pure; called by :mod:`glia.policy.manifest` for each rule. Each function checks
one field, adds every problem to the document's
:class:`~glia.manifestcheck.DocProblems` (naming the field) and returns the
model value, or None when the field is invalid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from glia.manifestcheck import DocProblems, is_int, show
from glia.model.identity import NAMESPACE_LABEL
from glia.policy.model import (
    CIDRRule,
    Entity,
    L4Proto,
    LabelRequirement,
    LabelSelector,
    Operator,
    PortProtocol,
    PortRule,
)
from glia.policy.selector import normalize_key
from glia.validate.identities import MAX_LABEL_KEY, MAX_LABEL_VALUE

# Cilium's namespace-label selectors (io.cilium.k8s.namespace.labels.<k>): glia
# endpoints carry no namespace labels, so such a selector would match nothing.
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."

L7 = "L7 rules need a proxy; glia enforces L3/L4 only"
PORT_RULE_UNSUPPORTED = {
    "rules": L7,
    "terminatingTLS": L7,
    "originatingTLS": L7,
    "serverNames": L7,
    "listener": L7,
}
CIDR_SET_UNSUPPORTED = {
    "cidrGroupRef": "CiliumCIDRGroup references",
    "cidrGroupSelector": "CiliumCIDRGroup selectors",
}
# Entities and protocols Cilium defines that glia does not.
OTHER_ENTITIES = (
    "world-ipv4",
    "world-ipv6",
    "init",
    "health",
    "unmanaged",
    "ingress",
    "kube-apiserver",
    "none",
)
OTHER_PROTOCOLS = ("SCTP", "ICMP", "ICMPv6", "VRRP", "IGMP")


# --- selectors -------------------------------------------------------------------


def _label_key(doc: DocProblems, key: Any, path: str) -> str | None:
    if not isinstance(key, str) or not key:
        doc.add(path, f"label keys must be non-empty strings, got {show(key)}")
        return None
    if key.startswith("reserved:"):
        doc.add(path, f"reserved labels are not selectable ({key}): use fromEntities/toEntities")
        return None
    if key.startswith(("cidr:", "fqdn:")):
        doc.add(path, f"{key.split(':')[0]} labels are not selectable ({key}): use fromCIDR/toCIDR")
        return None
    norm = normalize_key(key)
    if not norm or len(norm) > MAX_LABEL_KEY:
        doc.add(path, f"label keys must have 1..{MAX_LABEL_KEY} characters, got {len(norm)}")
        return None
    if norm.startswith(NAMESPACE_LABELS_PREFIX):
        doc.add(path, "namespace labels are not supported (glia endpoints carry none)")
        return None
    return norm


def _label_value(doc: DocProblems, value: Any, path: str) -> str | None:
    if not isinstance(value, str):
        hint = f' (quote it: "{show(value)}")' if isinstance(value, bool | int | float) else ""
        doc.add(path, f"expected a string, got {show(value)}{hint}")
        return None
    if len(value) > MAX_LABEL_VALUE:
        doc.add(path, f"label values have at most {MAX_LABEL_VALUE} characters, got {len(value)}")
        return None
    return value


def selector(doc: DocProblems, raw: Any, path: str, *, subject: bool) -> LabelSelector | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a label selector (a mapping; {} selects all), got null")
        return None
    doc.fields(obj, path, ("matchLabels", "matchExpressions"))
    before = doc.count
    labels: dict[str, str] = {}
    seen: dict[str, str] = {}  # normalised key -> how it was written
    ml = doc.mapping(obj.get("matchLabels"), f"{path}.matchLabels") or {}
    for k, v in ml.items():
        at = f"{path}.matchLabels[{k}]" if isinstance(k, str) else f"{path}.matchLabels"
        key = _label_key(doc, k, at)
        value = _label_value(doc, v, at)
        if key is None or value is None:
            continue
        if key in seen:
            doc.add(at, f"the same label as {seen[key]!r}")
            continue
        seen[key] = str(k)
        labels[key] = value
    exprs: list[LabelRequirement] = []
    for i, e in enumerate(doc.seq(obj.get("matchExpressions"), f"{path}.matchExpressions")):
        req = _requirement(doc, e, f"{path}.matchExpressions[{i}]")
        if req is not None:
            exprs.append(req)
    if subject:
        _subject_scope(doc, path, labels, exprs)
    if doc.count > before:
        return None
    return LabelSelector(match_labels=labels, match_expressions=exprs)


def _subject_scope(
    doc: DocProblems, path: str, labels: Mapping[str, str], exprs: list[LabelRequirement]
) -> None:
    """An endpointSelector always selects in the policy's namespace: it may only repeat it."""
    ns = labels.get(NAMESPACE_LABEL)
    if ns is not None and doc.namespace is not None and ns != doc.namespace:
        doc.add(
            f"{path}.matchLabels[{NAMESPACE_LABEL}]",
            f"an endpointSelector selects in the policy's namespace {doc.namespace!r} only, "
            f"got {show(ns)}",
        )
    for i, e in enumerate(exprs):
        if e.key == NAMESPACE_LABEL:
            doc.add(
                f"{path}.matchExpressions[{i}]",
                f"an endpointSelector selects in the policy's namespace only: "
                f"no expression on {NAMESPACE_LABEL}",
            )


def _requirement(doc: DocProblems, raw: Any, path: str) -> LabelRequirement | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, ("key", "operator", "values"))
    before = doc.count
    key = None
    if "key" not in obj:
        doc.add(f"{path}.key", "required")
    else:
        key = _label_key(doc, obj["key"], f"{path}.key")
    op_raw = obj.get("operator")
    op: Operator | None = None
    if op_raw in tuple(o.value for o in Operator):
        op = Operator(op_raw)
    else:
        doc.add(
            f"{path}.operator",
            f"expected {', '.join(o.value for o in Operator)}, got {show(op_raw)}",
        )
    values: list[str] = []
    for i, v in enumerate(doc.seq(obj.get("values"), f"{path}.values")):
        if (s := _label_value(doc, v, f"{path}.values[{i}]")) is not None:
            values.append(s)
    if op in (Operator.IN, Operator.NOT_IN) and not values and doc.count == before:
        doc.add(f"{path}.values", f"required: a non-empty list for {op}")
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
        doc.add(f"{path}.values", f"must be empty for {op}")
    if key is None or op is None or doc.count > before:
        return None
    return LabelRequirement(key=key, operator=op, values=sorted(set(values)))


def entities(doc: DocProblems, raw: Any, path: str) -> list[Entity]:
    out: list[Entity] = []
    accepted = ", ".join(e.value for e in Entity)
    for i, v in enumerate(doc.seq(raw, path)):
        if v in tuple(e.value for e in Entity):
            if Entity(v) not in out:
                out.append(Entity(v))
        elif v in OTHER_ENTITIES:
            doc.add(f"{path}[{i}]", f"entity {v!r} is not supported (glia implements {accepted})")
        else:
            doc.add(f"{path}[{i}]", f"expected one of {accepted}, got {show(v)}")
    return out


# --- CIDRs and ports -------------------------------------------------------------


def _network(doc: DocProblems, raw: Any, path: str) -> ipaddress.IPv4Network | None:
    if not isinstance(raw, str):
        doc.add(path, f'expected an IPv4 CIDR like "192.0.2.0/24", got {show(raw)}')
        return None
    if "/" not in raw:
        doc.add(
            path, f'expected an IPv4 CIDR with a prefix length (e.g. "{raw}/32"), got {show(raw)}'
        )
        return None
    try:
        net = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        doc.add(path, f'expected an IPv4 CIDR like "192.0.2.0/24", got {show(raw)}')
        return None
    if net.version != 4:
        doc.add(path, f"IPv6 is not supported, got {show(raw)}")
        return None
    return ipaddress.IPv4Network(net)


def cidr(doc: DocProblems, raw: Any, path: str) -> str | None:
    net = _network(doc, raw, path)
    return None if net is None else str(net)


def cidr_rule(doc: DocProblems, raw: Any, path: str) -> CIDRRule | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, ("cidr", "except"), CIDR_SET_UNSUPPORTED)
    before = doc.count
    net = None
    if obj.get("cidr") is None:
        if not any(k in obj for k in CIDR_SET_UNSUPPORTED):
            doc.add(f"{path}.cidr", "required")
    else:
        net = _network(doc, obj["cidr"], f"{path}.cidr")
    excepts: list[str] = []
    for i, e in enumerate(doc.seq(obj.get("except"), f"{path}.except")):
        ex = _network(doc, e, f"{path}.except[{i}]")
        if ex is None or net is None:
            continue
        if not ex.subnet_of(net):
            doc.add(f"{path}.except[{i}]", f"{ex} is not inside cidr {net}")
            continue
        if str(ex) not in excepts:
            excepts.append(str(ex))
    if net is None or doc.count > before:
        return None
    return CIDRRule(cidr=str(net), excepts=excepts)


def port_rule(doc: DocProblems, raw: Any, path: str) -> PortRule | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, ("ports",), PORT_RULE_UNSUPPORTED)
    before = doc.count
    ports: list[PortProtocol] = []
    raw_ports = doc.seq(obj.get("ports"), f"{path}.ports")
    if not raw_ports and doc.count == before:
        doc.add(f"{path}.ports", "required: a non-empty list of ports")
    for i, p in enumerate(raw_ports):
        pp = _port(doc, p, f"{path}.ports[{i}]")
        if pp is not None and pp not in ports:
            ports.append(pp)
    if doc.count > before:
        return None
    return PortRule(ports=ports)


def _port_number(raw: Any) -> int | None:
    """Cilium writes ports as strings ("80"), YAML gives numbers too; missing, "", 0: every port."""
    if raw is None or raw == "":
        return 0
    if is_int(raw):
        n = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 6:
        n = int(raw)
    else:
        return None
    return n if 0 <= n <= 0xFFFF else None


def _port(doc: DocProblems, raw: Any, path: str) -> PortProtocol | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, ("port", "endPort", "protocol"))
    before = doc.count
    port_raw = obj.get("port")
    port = _port_number(port_raw)
    bad_port = f"expected a port number 0..65535 (0: every port), got {show(port_raw)}"
    if port is None:
        named = isinstance(port_raw, str) and not port_raw.isdigit()
        doc.add(
            f"{path}.port",
            f"named ports are not supported: give a number, got {show(port_raw)}"
            if named
            else bad_port,
        )
        port = 0
    end_raw = obj.get("endPort")
    end = 0
    if end_raw is not None and end_raw != 0:
        if not (is_int(end_raw) and 1 <= end_raw <= 0xFFFF):
            doc.add(f"{path}.endPort", f"expected a port number 1..65535, got {show(end_raw)}")
        elif doc.count == before and port == 0:
            doc.add(f"{path}.endPort", "needs a port: the range is port..endPort")
        elif doc.count == before and end_raw < port:
            doc.add(f"{path}.endPort", f"must be at least port {port}, got {end_raw}")
        else:
            end = end_raw if end_raw != port else 0
    proto_raw = obj.get("protocol")
    proto = L4Proto.ANY
    if proto_raw is None:
        proto = L4Proto.ANY
    elif proto_raw in tuple(p.value for p in L4Proto):
        proto = L4Proto(proto_raw)
    elif proto_raw in OTHER_PROTOCOLS:
        doc.add(f"{path}.protocol", f"{proto_raw} is not supported (glia implements TCP, UDP, ANY)")
    else:
        doc.add(f"{path}.protocol", f"expected TCP, UDP or ANY, got {show(proto_raw)}")
    if doc.count > before:
        return None
    return PortProtocol(port=port, end_port=end, protocol=proto)
