"""Properties of the policy core (hypothesis): verdicts and datapath entries equal a plain reading.

The reference below reads the rules straight from the model, the way
docs/policy.md states them, without the compiled selectors, the peer terms or
the entry resolution. On random label sets, identities and policies of two
clusters, for random connections:

- ``glia.policy.evaluate.verdict`` agrees with it (both sides, and the deciding rule kind);
- the entries ``glia.policy.engine`` computes, looked up as the datapath does
  (world addresses through the CIDR identities' longest prefix), agree with it;
- an engine fed incrementally, in any order, reports every subject whose
  entries changed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, ReservedIdentity
from glia.policy.cidr import CidrIdentities, policy_prefixes
from glia.policy.compiled import PolicySet
from glia.policy.engine import PolicyEngine, subject_key
from glia.policy.entries import Action
from glia.policy.evaluate import Reason, verdict
from glia.policy.model import (
    CIDRRule,
    Direction,
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
from glia.policy.peers import Peer

CLUSTERS = {"c1": 1, "c2": 2}
NAMESPACES = ["default", "shop"]
# Few keys and values: endpoints share labels, so scoping decides often.
KEYS = ["app", "tier"]
VALUES = ["a", "b"]
PREFIXES = [
    "0.0.0.0/0",
    "192.0.2.0/24",
    "192.0.2.0/25",
    "192.0.2.128/26",
    "192.0.2.7/32",
    "198.51.100.0/24",
]
ADDRESSES = ["192.0.2.7", "192.0.2.8", "192.0.2.130", "192.0.2.200", "198.51.100.1", "203.0.113.9"]
PORTS = [0, 53, 80, 81, 443]
DPORTS = [53, 80, 85, 443, 8080]
TCP, UDP, ICMP = 6, 17, 1
IN_CLUSTER = {"host", "remote-node", "health", "init", "unmanaged"}
RESERVED = {
    "host": ReservedIdentity.HOST,
    "remote-node": ReservedIdentity.REMOTE_NODE,
    "health": ReservedIdentity.HEALTH,
    "init": ReservedIdentity.INIT,
    "unmanaged": ReservedIdentity.UNMANAGED,
    "world": ReservedIdentity.WORLD,
}


# -- the world: endpoints and reserved peers --------------------------------------


@dataclass(frozen=True)
class Who:
    """One end of a connection, in the reference's own terms."""

    kind: str  # "endpoint" or a RESERVED name
    labels: dict[str, str] = field(default_factory=dict)
    cluster: str = ""
    address: str | None = None  # world
    number: int = 0  # endpoints' identity

    def peer(self) -> Peer:
        if self.kind == "endpoint":
            return Peer.endpoint(self.labels, self.cluster, self.number)
        return Peer.reserved(RESERVED[self.kind], self.address)


@st.composite
def endpoints(draw: st.DrawFn) -> list[Who]:
    n = draw(st.integers(1, 8))
    out: list[Who] = []
    seen: set[frozenset[tuple[str, str]]] = set()
    for _ in range(n):
        cluster = draw(st.sampled_from(sorted(CLUSTERS)))
        labels = draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3))
        labels[NAMESPACE_LABEL] = draw(st.sampled_from(NAMESPACES))
        labels[CLUSTER_LABEL] = cluster
        key = frozenset(labels.items())
        if key in seen:
            continue
        seen.add(key)
        number = CLUSTERS[cluster] << 16 | (256 + len(out))
        out.append(Who("endpoint", labels, cluster, number=number))
    return out


# -- random policies ---------------------------------------------------------------

requirements = st.builds(
    LabelRequirement,
    key=st.sampled_from([*KEYS, NAMESPACE_LABEL, CLUSTER_LABEL]),
    operator=st.sampled_from(Operator),
    values=st.lists(st.sampled_from([*VALUES, *NAMESPACES, *CLUSTERS]), min_size=1, max_size=2),
).map(
    lambda r: (
        LabelRequirement(r.key, r.operator, [])
        if r.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST)
        else LabelRequirement(r.key, r.operator, sorted(set(r.values)))
    )
)


@st.composite
def selectors(draw: st.DrawFn, pool: list[Who], *, subject: bool) -> LabelSelector:
    """Mostly built from a real endpoint's labels (so rules select someone), else random."""
    keys = KEYS + ([] if subject else [NAMESPACE_LABEL]) + [CLUSTER_LABEL]
    if pool and draw(st.integers(0, 9)) < 7:
        who = draw(st.sampled_from(pool))
        labels = {k: who.labels[k] for k in draw(st.sets(st.sampled_from(keys))) if k in who.labels}
        if draw(st.booleans()) and labels:
            k = draw(st.sampled_from(sorted(labels)))
            op = draw(st.sampled_from(Operator))
            labels.pop(k)
            values = (
                []
                if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST)
                else sorted({who.labels[k], draw(st.sampled_from([*VALUES, *NAMESPACES]))})
            )
            return LabelSelector(labels, [LabelRequirement(k, op, values)])
        return LabelSelector(match_labels=labels)
    labels = draw(st.dictionaries(st.sampled_from(keys), st.sampled_from(VALUES), max_size=2))
    for k in (NAMESPACE_LABEL, CLUSTER_LABEL):
        if k in labels:
            labels[k] = draw(
                st.sampled_from(NAMESPACES if k == NAMESPACE_LABEL else sorted(CLUSTERS))
            )
    exprs = draw(st.lists(requirements, max_size=2))
    if subject:
        exprs = [e for e in exprs if e.key != NAMESPACE_LABEL]
    return LabelSelector(match_labels=labels, match_expressions=exprs)


@st.composite
def cidr_rules(draw: st.DrawFn) -> CIDRRule:
    cidr = draw(st.sampled_from(PREFIXES))
    net = ipaddress.IPv4Network(cidr)
    inside = [p for p in PREFIXES if ipaddress.IPv4Network(p).subnet_of(net)]
    return CIDRRule(cidr, draw(st.lists(st.sampled_from(inside), max_size=2, unique=True)))


@st.composite
def port_protocols(draw: st.DrawFn) -> PortProtocol:
    port = draw(st.sampled_from(PORTS))
    end = draw(st.sampled_from([0, 0, 90, 500])) if port else 0
    if end and end < port:
        end = 0
    return PortProtocol(port, end, draw(st.sampled_from(L4Proto)))


@st.composite
def peer_rules(draw: st.DrawFn, pool: list[Who]) -> PeerRule:
    return PeerRule(
        endpoints=draw(st.lists(selectors(pool, subject=False), max_size=2)),
        entities=draw(st.lists(st.sampled_from(Entity), max_size=2, unique=True)),
        cidr=draw(st.lists(st.sampled_from(PREFIXES), max_size=1)),
        cidr_set=draw(st.lists(cidr_rules(), max_size=1)),
        to_ports=draw(
            st.lists(
                st.builds(PortRule, st.lists(port_protocols(), min_size=1, max_size=2)), max_size=1
            )
        ),
    )


@st.composite
def rules(draw: st.DrawFn, pool: list[Who]) -> Rule:
    sections = {s: draw(st.lists(peer_rules(pool), max_size=2)) for s in Section}
    return Rule(
        endpoint_selector=draw(selectors(pool, subject=True)),
        ingress=sections[Section.INGRESS],
        egress=sections[Section.EGRESS],
        ingress_deny=sections[Section.INGRESS_DENY],
        egress_deny=sections[Section.EGRESS_DENY],
    )


@st.composite
def policies(draw: st.DrawFn, pool: list[Who]) -> list[Policy]:
    out = []
    for i in range(draw(st.integers(0, 4))):
        specs = draw(st.lists(rules(pool), min_size=1, max_size=2))
        single = draw(st.booleans())
        # mostly where an endpoint is, so that the policy selects someone
        home = draw(st.sampled_from(pool)) if pool and draw(st.booleans()) else None
        out.append(
            Policy(
                namespace=home.labels[NAMESPACE_LABEL]
                if home
                else draw(st.sampled_from(NAMESPACES)),
                name=f"p{i}",
                cluster=home.cluster if home else draw(st.sampled_from(sorted(CLUSTERS))),
                spec=specs[0] if single else None,
                specs=specs[1:] if single else specs,
            )
        )
    return out


# -- the reference reading ----------------------------------------------------------


def ref_requirement(key: str, op: Operator, values: list[str], labels: dict[str, str]) -> bool:
    if op is Operator.IN:
        return key in labels and labels[key] in values
    if op is Operator.NOT_IN:
        return key not in labels or labels[key] not in values
    if op is Operator.EXISTS:
        return key in labels
    return key not in labels


def ref_selects(sel: LabelSelector, who: Who, pol: Policy, *, subject: bool) -> bool:
    if who.kind != "endpoint":
        return False  # selectors name endpoints only
    labels = who.labels
    if not all(labels.get(k) == v for k, v in sel.match_labels.items()):
        return False
    if not all(ref_requirement(e.key, e.operator, e.values, labels) for e in sel.match_expressions):
        return False
    named = set(sel.match_labels) | {e.key for e in sel.match_expressions}
    if (subject or NAMESPACE_LABEL not in named) and labels[NAMESPACE_LABEL] != pol.namespace:
        return False
    # The cluster label is the minting cluster's (Who.cluster), whatever the labels say.
    return not ((subject or CLUSTER_LABEL not in named) and who.cluster != pol.cluster)


def ref_entity(e: Entity, who: Who, pol: Policy) -> bool:
    if e is Entity.ALL:
        return True
    if e is Entity.CLUSTER:
        return who.kind in IN_CLUSTER or (who.kind == "endpoint" and who.cluster == pol.cluster)
    return who.kind == e.value


def ref_cidr(c: CIDRRule, who: Who) -> bool:
    if who.kind != "world" or who.address is None:
        return False
    a = ipaddress.IPv4Address(who.address)
    return a in ipaddress.IPv4Network(c.cidr) and not any(
        a in ipaddress.IPv4Network(e) for e in c.excepts
    )


def ref_item(item: PeerRule, pol: Policy, peer: Who, proto: int, dport: int) -> bool:
    ports = [p for r in item.to_ports for p in r.ports]
    has_l3 = bool(item.endpoints or item.entities or item.cidr or item.cidr_set)
    if not has_l3 and not ports:
        return False
    peer_ok = not has_l3 or (
        any(ref_selects(s, peer, pol, subject=False) for s in item.endpoints)
        or any(ref_entity(e, peer, pol) for e in item.entities)
        or any(ref_cidr(CIDRRule(c), peer) for c in item.cidr)
        or any(ref_cidr(c, peer) for c in item.cidr_set)
    )
    if not ports:
        return peer_ok
    port_ok = False
    for p in ports:
        protos = (
            {TCP, UDP} if p.protocol is L4Proto.ANY else {TCP if p.protocol is L4Proto.TCP else UDP}
        )
        hi = 65535 if p.port == 0 else (p.end_port or p.port)
        port_ok = port_ok or (proto in protos and p.port <= dport <= hi)
    return peer_ok and port_ok


def ref_side(
    pols: list[Policy], subject: Who, peer: Who, direction: Direction, proto: int, dport: int
) -> tuple[bool, str]:
    """(allowed, why): why is one of the Reason values."""
    if subject.kind != "endpoint":
        return True, Reason.NOT_ENDPOINT
    mine = [
        (pol, rule)
        for pol in pols
        if pol.cluster == subject.cluster
        for _, rule in pol.rules()
        if ref_selects(rule.endpoint_selector, subject, pol, subject=True)
    ]
    allow_s, deny_s = (
        (Section.INGRESS, Section.INGRESS_DENY)
        if direction is Direction.INGRESS
        else (Section.EGRESS, Section.EGRESS_DENY)
    )
    if not any(rule.section(allow_s) or rule.section(deny_s) for _, rule in mine):
        return True, Reason.NOT_ENFORCED
    if any(
        ref_item(i, pol, peer, proto, dport) for pol, rule in mine for i in rule.section(deny_s)
    ):
        return False, Reason.DENIED
    if any(
        ref_item(i, pol, peer, proto, dport) for pol, rule in mine for i in rule.section(allow_s)
    ):
        return True, Reason.ALLOWED
    if direction is Direction.INGRESS and peer.kind == "host":
        return True, Reason.HOST
    return False, Reason.DEFAULT_DENY


# -- the checks ---------------------------------------------------------------------


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Who], list[Who], list[Policy]]:
    eps = draw(endpoints())
    others = [Who(k) for k in sorted(IN_CLUSTER)]
    others += [Who("world", address=a) for a in ADDRESSES]
    return eps, others, draw(policies(eps))


def build_engine(
    cluster: str, eps: list[Who], pols: list[Policy]
) -> tuple[PolicyEngine, CidrIdentities]:
    engine = PolicyEngine(cluster)
    for e in eps:
        engine.upsert_identity(e.number, e.labels, e.cluster)
    mine = [p for p in pols if p.cluster == cluster]
    cidrs = CidrIdentities()
    for prefix, number in cidrs.sync(policy_prefixes(mine)).added.items():
        engine.upsert_cidr_identity(number, prefix)
    engine.set_policies(mine)
    return engine, cidrs


def number_of(who: Who, cidrs: CidrIdentities) -> int:
    if who.kind == "endpoint":
        return who.number
    if who.kind == "world" and who.address is not None:
        return cidrs.identity_of(who.address)
    return int(RESERVED[who.kind])


# (source, destination, protocol, port); an end is an endpoint index (>= 0) or,
# one time in four, a reserved peer (-1 - index).
ENDS = st.one_of(
    st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), st.integers(-100, -1)
)
CONNECTIONS = st.tuples(ENDS, ENDS, st.sampled_from([TCP, UDP, ICMP]), st.sampled_from(DPORTS))


def pick(eps: list[Who], others: list[Who], i: int) -> Who:
    return eps[i % len(eps)] if i >= 0 else others[(-1 - i) % len(others)]


@given(worlds(), st.lists(CONNECTIONS, min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_verdict_and_entries_equal_the_reference(
    world: tuple[list[Who], list[Who], list[Policy]], conns: list[tuple[int, int, int, int]]
) -> None:
    eps, others, pols = world
    compiled = PolicySet(pols)
    engines: dict[str, tuple[PolicyEngine, CidrIdentities]] = {}
    for i, j, proto, dport in conns:
        src, dst = pick(eps, others, i), pick(eps, others, j)
        port = 0 if proto == ICMP else dport
        want_e = ref_side(pols, src, dst, Direction.EGRESS, proto, port)
        want_i = ref_side(pols, dst, src, Direction.INGRESS, proto, port)
        got = verdict(compiled, src.peer(), dst.peer(), proto, port)
        event(f"egress {want_e[1]}, ingress {want_i[1]}")
        assert (got.egress.allowed, got.egress.reason) == want_e, (
            src,
            dst,
            proto,
            port,
            got.egress,
        )
        assert (got.ingress.allowed, got.ingress.reason) == want_i, (
            src,
            dst,
            proto,
            port,
            got.ingress,
        )
        assert got.allowed == (want_e[0] and want_i[0])
        # what the datapath decides from the entries, on each side that is an endpoint
        for subject, peer, direction, want in (
            (src, dst, Direction.EGRESS, want_e),
            (dst, src, Direction.INGRESS, want_i),
        ):
            if subject.kind != "endpoint":
                continue
            if subject.cluster not in engines:
                engines[subject.cluster] = build_engine(subject.cluster, eps, pols)
            engine, cidrs = engines[subject.cluster]
            entries = engine.compute(subject.labels)
            hit = entries.lookup(direction, number_of(peer, cidrs), proto, port)
            assert (hit.action is Action.ALLOW) == want[0], (
                subject,
                peer,
                direction,
                proto,
                port,
                hit,
                sorted(entries.entries.items()),
            )


@given(worlds(), st.randoms(use_true_random=False), st.integers(0, 20), st.data())
@settings(max_examples=200, deadline=None)
def test_an_incremental_engine_reports_every_changed_subject(
    world: tuple[list[Who], list[Who], list[Policy]], rnd: Any, split: int, data: st.DataObject
) -> None:
    """Feed the engine in a random order, computing subjects between steps: after each
    step, every subject whose entries differ from before was reported."""
    eps, _, pols = world
    cluster = "c1"
    mine = [p for p in pols if p.cluster == cluster]
    cidrs = CidrIdentities()
    cidr_ids = cidrs.sync(policy_prefixes(mine)).added
    steps: list[tuple[str, Any]] = [("id", e) for e in eps]
    steps += [("cidr", item) for item in cidr_ids.items()]
    steps += [("policy", p) for p in mine]
    rnd.shuffle(steps)
    # then take some away again, and replace some policies by others of the same name
    steps += [("del-" + kind, obj) for kind, obj in rnd.sample(steps, min(split, len(steps)) // 3)]
    for q in data.draw(policies(eps)):
        a = rnd.choice(mine) if mine else q
        steps.append(("policy", replace(q, cluster=cluster, namespace=a.namespace, name=a.name)))
    engine = PolicyEngine(cluster)
    subjects = [e.labels for e in eps if e.cluster == cluster]
    before = {subject_key(s): engine.compute(s) for s in subjects}
    for kind, obj in steps:
        if kind == "id":
            reported = engine.upsert_identity(obj.number, obj.labels, obj.cluster)
        elif kind == "cidr":
            reported = engine.upsert_cidr_identity(obj[1], obj[0])
        elif kind == "policy":
            reported = engine.upsert_policy(obj)
        elif kind == "del-id":
            reported = engine.delete_identity(obj.number)
        elif kind == "del-cidr":
            reported = engine.delete_identity(obj[1])
        else:
            reported = engine.delete_policy(obj.namespace, obj.name)
        for s in subjects:
            key = subject_key({**s, CLUSTER_LABEL: cluster})
            now = engine.compute(s)
            if now != before[subject_key(s)]:
                assert key in reported, (kind, obj, s)
            before[subject_key(s)] = now
    # and the end state equals an engine built in one go from what is left
    left_eps = {e.number: e for e in eps}
    left_pols: dict[tuple[str, str], Policy] = {}
    left_cidrs = dict(cidr_ids)
    for kind, obj in steps:
        if kind == "del-id":
            left_eps.pop(obj.number, None)
        elif kind == "policy":
            left_pols[(obj.namespace, obj.name)] = obj
        elif kind == "del-policy":
            left_pols.pop((obj.namespace, obj.name), None)
        elif kind == "del-cidr":
            left_cidrs.pop(obj[0], None)
    fresh = PolicyEngine(cluster)
    for e in left_eps.values():
        fresh.upsert_identity(e.number, e.labels, e.cluster)
    for prefix, number in left_cidrs.items():
        fresh.upsert_cidr_identity(number, prefix)
    fresh.set_policies(left_pols.values())
    for s in subjects:
        assert engine.compute(s) == fresh.compute(s)
