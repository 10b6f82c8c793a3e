"""Policies compiled for evaluation: scoped selectors, peer terms, port ranges.

Pure. :func:`compile_policy` turns a :class:`~glia.policy.model.Policy` into
:class:`CompiledRule` s, each with its subject selector and its peer rules as
:class:`CompiledItem` s; :class:`PolicySet` holds the compiled rules of many
policies (of any clusters) in a stable order. Called by
:mod:`glia.policy.evaluate` (trace) and :mod:`glia.policy.engine` (entries).

Protocols are IP protocol numbers; ``ANY`` in ``toPorts`` becomes TCP and UDP,
the protocols with ports (Cilium also adds SCTP, which glia does not support);
a peer rule without ``toPorts`` covers every protocol (ICMP too).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from glia.policy.model import (
    Direction,
    Entity,
    L4Proto,
    PeerRule,
    Policy,
    PortProtocol,
    RuleRef,
    Section,
)
from glia.policy.peers import (
    PEER_RESERVED,
    CidrPeer,
    EntityPeer,
    LabelPeer,
    Peer,
    PeerKind,
    PeerTerm,
)
from glia.policy.selector import Selector, peer_selector, subject_selector

PROTO_ANY = 0  # in a key: every protocol, every port
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_NAMES = {PROTO_ANY: "ANY", PROTO_TCP: "TCP", PROTO_UDP: "UDP", 1: "ICMP"}
PORT_MAX = 0xFFFF

# ``fromEntities: [host]`` on this node's own endpoints: Cilium (allow-localhost
# auto) always lets the node reach its endpoints, for health probes.
HOST_RULE = RuleRef("", "", "", "implicit: the local host may reach its endpoints")

_uids = itertools.count(1)


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


@dataclass(frozen=True, slots=True)
class PortRange:
    proto: int  # PROTO_TCP or PROTO_UDP
    lo: int
    hi: int

    def __str__(self) -> str:
        ports = (
            "*"
            if (self.lo, self.hi) == (0, PORT_MAX)
            else (str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}")
        )
        return f"{ports}/{proto_name(self.proto)}"


def port_ranges(p: PortProtocol) -> list[PortRange]:
    protos = (
        [PROTO_TCP, PROTO_UDP]
        if p.protocol is L4Proto.ANY
        else ([PROTO_TCP] if p.protocol is L4Proto.TCP else [PROTO_UDP])
    )
    return [PortRange(proto, p.first, p.last) for proto in protos]


@dataclass(frozen=True, slots=True, eq=False)
class CompiledItem:
    """One peer rule: it matches a (peer, protocol, port) when it names both."""

    ref: RuleRef
    direction: Direction
    deny: bool
    peers: tuple[PeerTerm, ...] | None  # None: every peer
    ports: tuple[PortRange, ...] | None  # None: every protocol and port

    def matches_peer(self, peer: Peer) -> bool:
        return self.peers is None or any(t.matches(peer) for t in self.peers)

    def matches_port(self, proto: int, port: int) -> bool:
        if self.ports is None:
            return True
        return any(r.proto == proto and r.lo <= port <= r.hi for r in self.ports)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """One ``spec``/``specs[i]``: whom it selects, which directions it enforces, its items."""

    uid: int  # unique per compilation: a changed policy never reuses a rule's uid
    cluster: str
    namespace: str
    name: str
    subject: Selector
    enforces: frozenset[Direction]
    items: tuple[CompiledItem, ...]  # items naming no peer at all are left out

    def selects(self, subject: Peer) -> bool:
        return (
            subject.kind is PeerKind.ENDPOINT
            and subject.cluster == self.cluster
            and self.subject.matches(subject.labels)
        )


def _peer_terms(item: PeerRule, namespace: str, cluster: str) -> tuple[PeerTerm, ...] | None:
    if Entity.ALL in item.entities:
        return None
    terms: list[PeerTerm] = [
        LabelPeer(peer_selector(s, namespace, cluster)) for s in item.endpoints
    ]
    terms += [EntityPeer(e, cluster) for e in item.entities]
    for c in item.cidr_rules():
        terms.append(
            CidrPeer(
                ipaddress.IPv4Network(c.cidr),
                tuple(ipaddress.IPv4Network(e) for e in c.excepts),
            )
        )
    return tuple(dict.fromkeys(terms))  # de-duplicated, in order


def compile_policy(policy: Policy) -> list[CompiledRule]:
    rules: list[CompiledRule] = []
    ns, cluster = policy.namespace, policy.cluster
    for prefix, rule in policy.rules():
        items: list[CompiledItem] = []
        for section in Section:
            for i, item in enumerate(rule.section(section)):
                ref = policy.ref(prefix, section, i)
                ports = [r for p in item.port_protocols() for r in port_ranges(p)]
                if item.has_peers:
                    peers = _peer_terms(item, ns, cluster)
                elif ports:
                    peers = None  # toPorts only: every peer, on those ports
                else:
                    continue  # `{}`: names nobody (the section still enforces)
                items.append(
                    CompiledItem(
                        ref=ref,
                        direction=section.direction,
                        deny=section.deny,
                        peers=peers,
                        ports=tuple(dict.fromkeys(ports)) or None,
                    )
                )
        rules.append(
            CompiledRule(
                uid=next(_uids),
                cluster=cluster,
                namespace=ns,
                name=policy.name,
                subject=subject_selector(rule.endpoint_selector, ns, cluster),
                enforces=frozenset(d for d in Direction if rule.enforces(d)),
                items=tuple(items),
            )
        )
    return rules


class PolicySet:
    """Compiled policies of any clusters, ordered by (cluster, namespace, name)."""

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self._rules: dict[tuple[str, str, str], list[CompiledRule]] = {}
        for p in policies:
            self.upsert(p)

    def upsert(self, policy: Policy) -> list[CompiledRule]:
        compiled = compile_policy(policy)
        self._rules[(policy.cluster, policy.namespace, policy.name)] = compiled
        return compiled

    def delete(self, cluster: str, namespace: str, name: str) -> list[CompiledRule]:
        return self._rules.pop((cluster, namespace, name), [])

    def rules(self) -> Iterator[CompiledRule]:
        for key in sorted(self._rules):
            yield from self._rules[key]

    def selecting(self, subject: Peer) -> list[CompiledRule]:
        return [r for r in self.rules() if r.selects(subject)]


def reserved_peers() -> list[Peer]:
    """The reserved identities every cluster has, as peers."""
    return [Peer.reserved(int(r)) for r in PEER_RESERVED]
