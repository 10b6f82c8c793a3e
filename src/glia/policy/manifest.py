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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from glia.manifestcheck import DocProblems, named_refs, show
from glia.policy import fields
from glia.policy.model import (
    LabelSelector,
    PeerRule,
    Policy,
    Rule,
    Section,
)
from glia.service.manifest import ManifestError

API_VERSION = "cilium.io/v2"
KIND = "CiliumNetworkPolicy"
DEFAULT_NAMESPACE = "default"


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
_PEER_FIELDS = {
    Section.INGRESS: ("fromEndpoints", "fromEntities", "fromCIDR", "fromCIDRSet", "toPorts"),
    Section.EGRESS: ("toEndpoints", "toEntities", "toCIDR", "toCIDRSet", "toPorts"),
}


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


def parse_refs(
    docs: Sequence[Any], source: str, *, numbers: Sequence[int] | None = None
) -> list[PolicyRef]:
    """Which policies a file names (``glia delete -f``): only kind and metadata are checked.

    ``numbers``: each document's number in its file, when ``docs`` are some of them.
    """

    def check(i: int, raw: Any) -> DocProblems:
        doc = DocProblems(source, i, KIND)
        _header(doc, raw)
        return doc

    refs, problems = named_refs(docs, numbers, check)
    if problems:
        raise ManifestError(problems)
    return [PolicyRef(ns, name) for ns, name in refs]


def parse_policies(
    docs: Sequence[Any],
    source: str,
    *,
    cluster: str = "",
    numbers: Sequence[int] | None = None,
) -> list[PolicyDoc]:
    """Every document as a policy of ``cluster``, or one ManifestError with every problem.

    ``cluster`` is the cluster whose endpoints the policies govern (the agent's);
    the CLI, validating before it asks an agent, may leave it empty. ``numbers``:
    each document's number in its file, when ``docs`` are some of its documents
    (``glia apply`` of a file mixing kinds), so that messages name the right one.
    """
    problems: list[str] = []
    out: list[PolicyDoc] = []
    names: dict[PolicyRef, int] = {}
    for i, raw in zip(numbers or range(1, len(docs) + 1), docs, strict=True):
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
        selector = fields.selector(doc, sel_raw, f"{path}.endpointSelector", subject=True)
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
        if (s := fields.selector(doc, r, f"{path}.{pre}Endpoints[{j}]", subject=False)) is not None
    ]
    entities = fields.entities(doc, obj.get(f"{pre}Entities"), f"{path}.{pre}Entities")
    cidr = [
        c
        for j, r in enumerate(doc.seq(obj.get(f"{pre}CIDR"), f"{path}.{pre}CIDR"))
        if (c := fields.cidr(doc, r, f"{path}.{pre}CIDR[{j}]")) is not None
    ]
    cidr_set = [
        cr
        for j, r in enumerate(doc.seq(obj.get(f"{pre}CIDRSet"), f"{path}.{pre}CIDRSet"))
        if (cr := fields.cidr_rule(doc, r, f"{path}.{pre}CIDRSet[{j}]")) is not None
    ]
    to_ports = [
        p
        for j, r in enumerate(doc.seq(obj.get("toPorts"), f"{path}.toPorts"))
        if (p := fields.port_rule(doc, r, f"{path}.toPorts[{j}]")) is not None
    ]
    if doc.count > before:
        return None
    return PeerRule(
        endpoints=endpoints, entities=entities, cidr=cidr, cidr_set=cidr_set, to_ports=to_ports
    )


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
