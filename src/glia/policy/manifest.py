"""``cilium.io/v2 CiliumNetworkPolicy`` documents -> :class:`~glia.policy.model.Policy`, and back.

Pure: no I/O. For ``glia apply/delete -f`` (the CLI validates first, the agent
again, with its cluster) and ``glia get policies`` (:func:`to_manifest`).
docs/policy.md lists what is accepted.

Strict like :mod:`glia.service.manifest`: every problem of a file is
collected, each naming its document and field, and raised together as one
:class:`~glia.service.manifest.ManifestError`; nothing else escapes, whatever
the input. A field Cilium does not define is an error; a field Cilium defines
but glia does not implement (``toFQDNs``, L7 ``toPorts[].rules``,
``fromRequires``, ``toServices``, ``nodeSelector``...) is an error when set,
never silently ignored: a policy must not allow or deny less than it says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from glia.manifestcheck import DocProblems, is_int, show
from glia.model.identity import NAMESPACE_LABEL
from glia.policy.model import (
    CIDRRule,
    Entity,
    L4Proto,
    LabelRequirement,
    LabelSelector,
    Operator,
    PeerRule,
    Policy,
    PortProtocol,
    PortRule,
    Rule,
    Section,
)
from glia.policy.selector import normalize_key
from glia.service.manifest import ManifestError
from glia.validate.identities import MAX_LABEL_KEY, MAX_LABEL_VALUE

API_VERSION = "cilium.io/v2"
KIND = "CiliumNetworkPolicy"
DEFAULT_NAMESPACE = "default"

# Cilium's namespace-label selectors (io.cilium.k8s.namespace.labels.<k>): glia
# endpoints carry no namespace labels, so such a selector would match nothing.
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."

_TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec", "specs", "status")
_RULE_FIELDS = ("endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny", "description")
_RULE_UNSUPPORTED = {
    "nodeSelector": "host policies: glia has no host firewall; use endpointSelector",
    "labels": "rule labels; put labels in metadata.labels",
    "enableDefaultDeny": (
        "glia uses Cilium's default enforcement: a rule with an ingress (egress) "
        "section makes the endpoints it selects default-deny in that direction"
    ),
    "log": "policy logging",
}
_L7 = "L7 rules need a proxy; glia enforces L3/L4 only"
_PEER_UNSUPPORTED = {
    "fromRequires": "fromRequires is deprecated in Cilium and not implemented",
    "toRequires": "toRequires is deprecated in Cilium and not implemented",
    "fromGroups": "cloud provider groups",
    "toGroups": "cloud provider groups",
    "fromNodes": "node selectors; use fromEntities: [host, remote-node]",
    "toNodes": "node selectors; use toEntities: [host, remote-node]",
    "toServices": "Service-based egress; select the backends with toEndpoints",
    "toFQDNs": "DNS-based policy needs a DNS proxy; glia enforces L3/L4 only",
    "icmps": "ICMP type rules; a rule without toPorts allows every protocol, ICMP included",
    "authentication": "mutual authentication",
}
_PORT_RULE_UNSUPPORTED = {
    "rules": _L7,
    "terminatingTLS": _L7,
    "originatingTLS": _L7,
    "serverNames": _L7,
    "listener": _L7,
}
_CIDR_SET_UNSUPPORTED = {
    "cidrGroupRef": "CiliumCIDRGroup references",
    "cidrGroupSelector": "CiliumCIDRGroup selectors",
}
_PEER_FIELDS = {
    Section.INGRESS: ("fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet", "toPorts"),
    Section.EGRESS: ("toEndpoints", "toEntities", "toCIDR", "toCIDRSet", "toPorts"),
}
# Entities Cilium defines that glia does not.
_OTHER_ENTITIES = (
    "world-ipv4",
    "world-ipv6",
    "init",
    "health",
    "unmanaged",
    "ingress",
    "kube-apiserver",
    "none",
)
_OTHER_PROTOCOLS = ("SCTP", "ICMP", "ICMPv6", "VRRP", "IGMP")


class PolicyRef(NamedTuple):
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class PolicyDoc:
    """A parsed policy and where it came from, for messages about it later (the store)."""

    policy: Policy
    source: str = ""
    index: int = 0

    @property
    def where(self) -> str:
        d = DocProblems(self.source, self.index, KIND)
        d.namespace, d.name = self.policy.namespace, self.policy.name
        return d.where


# --- documents -------------------------------------------------------------------


def _header(doc: DocProblems, raw: Any) -> Mapping[str, Any] | None:
    """Checks kind, apiVersion and metadata; None when the document is no CiliumNetworkPolicy."""
    if not isinstance(raw, Mapping):
        doc.add("<document>", f"expected a mapping (a Kubernetes object), got {show(raw)}")
        return None
    kind, version = raw.get("kind"), raw.get("apiVersion")
    if kind != KIND:
        hint = (
            " (clusterwide policies are not supported)"
            if kind == "CiliumClusterwideNetworkPolicy"
            else ""
        )
        doc.add("kind", f"expected {KIND}{hint}, got {show(kind)}")
        return None
    doc.fields(raw, "", _TOP_FIELDS)
    if version != API_VERSION:
        doc.add("apiVersion", f"expected {API_VERSION!r} for a {KIND}, got {show(version)}")
    doc.metadata(raw, DEFAULT_NAMESPACE)
    return raw


def parse_refs(docs: Sequence[Any], source: str) -> list[PolicyRef]:
    """Which policies a file names (``glia delete -f``): only kind and metadata are checked."""
    problems: list[str] = []
    refs: list[PolicyRef] = []
    for i, raw in enumerate(docs, 1):
        doc = DocProblems(source, i, KIND)
        _header(doc, raw)
        if doc.ok and doc.namespace and doc.name:
            ref = PolicyRef(doc.namespace, doc.name)
            if ref not in refs:
                refs.append(ref)
        problems += doc.problems()
    if problems:
        raise ManifestError(problems)
    return refs


def parse_policies(docs: Sequence[Any], source: str, *, cluster: str = "") -> list[PolicyDoc]:
    """Every document as a policy of ``cluster``, or one ManifestError with every problem.

    ``cluster`` is the cluster whose endpoints the policies govern (the agent's);
    the CLI, validating before it asks an agent, may leave it empty.
    """
    problems: list[str] = []
    out: list[PolicyDoc] = []
    names: dict[PolicyRef, int] = {}
    for i, raw in enumerate(docs, 1):
        doc = DocProblems(source, i, KIND)
        policy = _policy(doc, raw, cluster)
        if doc.namespace and doc.name:
            ref = PolicyRef(doc.namespace, doc.name)
            if ref in names:
                doc.add("metadata.name", f"the same policy is also document {names[ref]}")
            names.setdefault(ref, i)
        if doc.ok and policy is not None:
            out.append(PolicyDoc(policy, source, i))
        problems += doc.problems()
    if problems:
        raise ManifestError(problems)
    return out


def parse_policy(raw: Any, source: str = "", *, cluster: str = "") -> Policy:
    """One document as a policy (ManifestError otherwise)."""
    return parse_policies([raw], source, cluster=cluster)[0].policy


def _policy(doc: DocProblems, raw: Any, cluster: str) -> Policy | None:
    obj = _header(doc, raw)
    if obj is None:
        return None
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    labels = doc.string_map(meta.get("labels"), "metadata.labels")
    annotations = doc.string_map(meta.get("annotations"), "metadata.annotations")
    spec: Rule | None = None
    specs: list[Rule] = []
    if obj.get("spec") is not None:
        spec = _rule(doc, obj["spec"], "spec")
    raw_specs = doc.seq(obj.get("specs"), "specs")
    for i, r in enumerate(raw_specs):
        rule = _rule(doc, r, f"specs[{i}]")
        if rule is not None:
            specs.append(rule)
    if obj.get("spec") is None and obj.get("specs") in (None, []):
        doc.add("spec", "required: a rule (spec) or a non-empty list of rules (specs)")
    if not doc.ok or doc.namespace is None or doc.name is None:
        return None
    return Policy(
        namespace=doc.namespace,
        name=doc.name,
        cluster=cluster,
        spec=spec,
        specs=specs,
        labels=labels,
        annotations=annotations,
    )


def _rule(doc: DocProblems, raw: Any, path: str) -> Rule | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, _RULE_FIELDS, _RULE_UNSUPPORTED)
    before = doc.count
    sel_raw = obj.get("endpointSelector")
    selector: LabelSelector | None = None
    if sel_raw is None:
        if "nodeSelector" not in obj:
            doc.add(
                f"{path}.endpointSelector",
                "required: the endpoints the rule applies to ({} selects every endpoint "
                "of the policy's namespace)",
            )
    else:
        selector = _selector(doc, sel_raw, f"{path}.endpointSelector", subject=True)
    sections = {s: _section(doc, obj.get(str(s)), f"{path}.{s}", s) for s in Section}
    description = obj.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        doc.add(f"{path}.description", f"expected a string, got {show(description)}")
        description = ""
    if selector is None or doc.count > before:
        return None
    return Rule(
        endpoint_selector=selector,
        ingress=sections[Section.INGRESS],
        egress=sections[Section.EGRESS],
        ingress_deny=sections[Section.INGRESS_DENY],
        egress_deny=sections[Section.EGRESS_DENY],
        description=description,
    )


def _section(doc: DocProblems, raw: Any, path: str, section: Section) -> list[PeerRule]:
    items: list[PeerRule] = []
    for i, r in enumerate(doc.seq(raw, path)):
        item = _peer_rule(doc, r, f"{path}[{i}]", section)
        if item is not None:
            items.append(item)
    return items


def _peer_rule(doc: DocProblems, raw: Any, path: str, section: Section) -> PeerRule | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    egress = section.direction.value == "egress"
    known = _PEER_FIELDS[Section.EGRESS if egress else Section.INGRESS]
    pre = "to" if egress else "from"
    doc.fields(obj, path, known, _PEER_UNSUPPORTED)
    before = doc.count
    endpoints = [
        s
        for j, r in enumerate(doc.seq(obj.get(f"{pre}Endpoints"), f"{path}.{pre}Endpoints"))
        if (s := _selector(doc, r, f"{path}.{pre}Endpoints[{j}]", subject=False)) is not None
    ]
    entities = _entities(doc, obj.get(f"{pre}Entities"), f"{path}.{pre}Entities")
    cidr = [
        c
        for j, r in enumerate(doc.seq(obj.get(f"{pre}CIDR"), f"{path}.{pre}CIDR"))
        if (c := _cidr(doc, r, f"{path}.{pre}CIDR[{j}]")) is not None
    ]
    cidr_set = [
        cr
        for j, r in enumerate(doc.seq(obj.get(f"{pre}CIDRSet"), f"{path}.{pre}CIDRSet"))
        if (cr := _cidr_rule(doc, r, f"{path}.{pre}CIDRSet[{j}]")) is not None
    ]
    to_ports = [
        p
        for j, r in enumerate(doc.seq(obj.get("toPorts"), f"{path}.toPorts"))
        if (p := _port_rule(doc, r, f"{path}.toPorts[{j}]")) is not None
    ]
    if doc.count > before:
        return None
    return PeerRule(
        endpoints=endpoints, entities=entities, cidr=cidr, cidr_set=cidr_set, to_ports=to_ports
    )


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


def _selector(doc: DocProblems, raw: Any, path: str, *, subject: bool) -> LabelSelector | None:
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


def _entities(doc: DocProblems, raw: Any, path: str) -> list[Entity]:
    out: list[Entity] = []
    accepted = ", ".join(e.value for e in Entity)
    for i, v in enumerate(doc.seq(raw, path)):
        if v in tuple(e.value for e in Entity):
            if Entity(v) not in out:
                out.append(Entity(v))
        elif v in _OTHER_ENTITIES:
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


def _cidr(doc: DocProblems, raw: Any, path: str) -> str | None:
    net = _network(doc, raw, path)
    return None if net is None else str(net)


def _cidr_rule(doc: DocProblems, raw: Any, path: str) -> CIDRRule | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, ("cidr", "except"), _CIDR_SET_UNSUPPORTED)
    before = doc.count
    net = None
    if obj.get("cidr") is None:
        if not any(k in obj for k in _CIDR_SET_UNSUPPORTED):
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


def _port_rule(doc: DocProblems, raw: Any, path: str) -> PortRule | None:
    obj = doc.mapping(raw, path)
    if obj is None:
        if raw is None:
            doc.add(path, "expected a mapping, got null")
        return None
    doc.fields(obj, path, ("ports",), _PORT_RULE_UNSUPPORTED)
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
    elif proto_raw in _OTHER_PROTOCOLS:
        doc.add(f"{path}.protocol", f"{proto_raw} is not supported (glia implements TCP, UDP, ANY)")
    else:
        doc.add(f"{path}.protocol", f"expected TCP, UDP or ANY, got {show(proto_raw)}")
    if doc.count > before:
        return None
    return PortProtocol(port=port, end_port=end, protocol=proto)


def check_stored(policy: Policy) -> Policy:
    """A policy read back from the store (:func:`glia.model.codec.decode` checks only its
    shape) checked for meaning: it must be exactly what parsing its own manifest gives.

    ManifestError otherwise, so a damaged record never reaches the engine.
    """
    parsed = parse_policy(to_manifest(policy), "stored", cluster=policy.cluster)
    if parsed != policy:
        where = f"stored: {KIND} {policy.namespace}/{policy.name}"
        raise ManifestError([f"{where}: not in the normal form glia stores"])
    return parsed


# --- back to the manifest's shape ------------------------------------------------


def _selector_manifest(sel: LabelSelector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        exprs = []
        for e in sel.match_expressions:
            expr: dict[str, Any] = {"key": e.key, "operator": e.operator.value}
            if e.values:
                expr["values"] = list(e.values)
            exprs.append(expr)
        out["matchExpressions"] = exprs
    return out


def _peer_manifest(item: PeerRule, egress: bool) -> dict[str, Any]:
    pre = "to" if egress else "from"
    out: dict[str, Any] = {}
    if item.endpoints:
        out[f"{pre}Endpoints"] = [_selector_manifest(s) for s in item.endpoints]
    if item.entities:
        out[f"{pre}Entities"] = [e.value for e in item.entities]
    if item.cidr:
        out[f"{pre}CIDR"] = list(item.cidr)
    if item.cidr_set:
        out[f"{pre}CIDRSet"] = [
            {"cidr": c.cidr, **({"except": list(c.excepts)} if c.excepts else {})}
            for c in item.cidr_set
        ]
    if item.to_ports:
        rules = []
        for r in item.to_ports:
            ports = []
            for p in r.ports:
                port: dict[str, Any] = {}
                if p.port:
                    port["port"] = str(p.port)
                if p.end_port:
                    port["endPort"] = p.end_port
                port["protocol"] = p.protocol.value
                ports.append(port)
            rules.append({"ports": ports})
        out["toPorts"] = rules
    return out


def _rule_manifest(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"endpointSelector": _selector_manifest(rule.endpoint_selector)}
    for s in Section:
        items = rule.section(s)
        if items:
            out[str(s)] = [_peer_manifest(i, s.direction.value == "egress") for i in items]
    if rule.description:
        out["description"] = rule.description
    return out


def to_manifest(policy: Policy) -> dict[str, Any]:
    """The policy as a ``cilium.io/v2 CiliumNetworkPolicy`` object (``glia get policies``)."""
    meta: dict[str, Any] = {"name": policy.name, "namespace": policy.namespace}
    if policy.labels:
        meta["labels"] = dict(policy.labels)
    if policy.annotations:
        meta["annotations"] = dict(policy.annotations)
    out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta}
    if policy.spec is not None:
        out["spec"] = _rule_manifest(policy.spec)
    if policy.specs:
        out["specs"] = [_rule_manifest(r) for r in policy.specs]
    return out
