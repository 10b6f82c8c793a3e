"""The two ends of a connection as policy sees them, and the peer terms of a rule.

Pure. A :class:`Peer` is an endpoint identity (labels, minted by a cluster), a
reserved identity (host, remote-node, world, ...; a world peer may carry its
address for a trace), or a CIDR identity (a prefix named by some policy, which
the datapath gives the world addresses inside it; :mod:`glia.policy.cidr`).
A rule names peers with :class:`LabelPeer`, :class:`EntityPeer` and
:class:`CidrPeer` terms (built by :mod:`glia.policy.compiled`); ``matches`` is
the one definition of which peer a term names, used by the trace evaluator
(:mod:`glia.policy.evaluate`) and the entry computation
(:mod:`glia.policy.engine`) alike.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from glia.model.identity import MIN_LOCAL, ReservedIdentity
from glia.policy.model import Entity
from glia.policy.selector import Selector, endpoint_labels

# Reserved identities inside a cluster: what the ``cluster`` entity names besides
# the cluster's endpoints (Cilium: host, remote-node, init, health, unmanaged).
RESERVED_IN_CLUSTER = frozenset(
    {
        ReservedIdentity.HOST,
        ReservedIdentity.REMOTE_NODE,
        ReservedIdentity.HEALTH,
        ReservedIdentity.INIT,
        ReservedIdentity.UNMANAGED,
    }
)
# The reserved identities a policy can meet as a peer (UNKNOWN is nobody).
PEER_RESERVED = (*sorted(RESERVED_IN_CLUSTER), ReservedIdentity.WORLD)


class PeerKind(enum.StrEnum):
    ENDPOINT = "endpoint"  # an allocated identity with labels, of one cluster
    RESERVED = "reserved"  # host, remote-node, world, health, init, unmanaged
    CIDR = "cidr"  # a node-local identity for a prefix of world addresses


@dataclass(frozen=True, slots=True)
class Peer:
    kind: PeerKind
    identity: int  # 0 when unknown (a trace by labels)
    labels: Mapping[str, str] = field(default_factory=dict)  # endpoints: cluster label set
    cluster: str = ""  # endpoints: the cluster that minted the identity
    address: ipaddress.IPv4Address | None = None  # world peers of a trace
    prefix: ipaddress.IPv4Network | None = None  # CIDR identities

    @staticmethod
    def endpoint(labels: Mapping[str, str], cluster: str, identity: int = 0) -> Peer:
        """An endpoint of ``cluster``; its cluster label is set to ``cluster``."""
        if identity and identity < MIN_LOCAL:
            raise ValueError(f"identity {identity} is reserved, not an endpoint's")
        return Peer(PeerKind.ENDPOINT, identity, endpoint_labels(labels, cluster), cluster)

    @staticmethod
    def reserved(identity: int, address: str | None = None) -> Peer:
        rid = ReservedIdentity(identity)
        if address is not None and rid is not ReservedIdentity.WORLD:
            raise ValueError("only a world peer has an address")
        addr = ipaddress.IPv4Address(address) if address is not None else None
        return Peer(PeerKind.RESERVED, int(rid), address=addr)

    @staticmethod
    def world(address: str | None = None) -> Peer:
        return Peer.reserved(ReservedIdentity.WORLD, address)

    @staticmethod
    def cidr(identity: int, prefix: str) -> Peer:
        return Peer(PeerKind.CIDR, identity, prefix=ipaddress.IPv4Network(prefix))

    def __str__(self) -> str:
        if self.kind is PeerKind.ENDPOINT:
            labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
            return f"endpoint {self.identity or '?'} ({labels})"
        if self.kind is PeerKind.CIDR:
            return f"cidr {self.identity} ({self.prefix})"
        name = ReservedIdentity(self.identity).name.lower().replace("_", "-")
        return name + (f" ({self.address})" if self.address is not None else "")


@dataclass(frozen=True, slots=True)
class LabelPeer:
    """A ``fromEndpoints``/``toEndpoints`` selector, already scoped: endpoints only."""

    selector: Selector

    def matches(self, peer: Peer) -> bool:
        return peer.kind is PeerKind.ENDPOINT and self.selector.matches(peer.labels)

    def __str__(self) -> str:
        return f"endpoints({self.selector})"


@dataclass(frozen=True, slots=True)
class EntityPeer:
    """An entity other than ``all`` (which names every peer and compiles to "any")."""

    entity: Entity
    cluster: str  # the policy's cluster: what ``cluster`` means

    def matches(self, peer: Peer) -> bool:
        e = self.entity
        if e is Entity.ALL:
            return True
        if e is Entity.WORLD:
            return peer.kind is PeerKind.CIDR or (
                peer.kind is PeerKind.RESERVED and peer.identity == ReservedIdentity.WORLD
            )
        if e is Entity.CLUSTER:
            if peer.kind is PeerKind.ENDPOINT:
                return peer.cluster == self.cluster
            return peer.kind is PeerKind.RESERVED and peer.identity in RESERVED_IN_CLUSTER
        want = ReservedIdentity.HOST if e is Entity.HOST else ReservedIdentity.REMOTE_NODE
        return peer.kind is PeerKind.RESERVED and peer.identity == want

    def __str__(self) -> str:
        return f"entity({self.entity})"


@dataclass(frozen=True, slots=True)
class CidrPeer:
    """World addresses in ``network`` and in none of ``excepts`` (never endpoints or nodes)."""

    network: ipaddress.IPv4Network
    excepts: tuple[ipaddress.IPv4Network, ...] = ()

    def matches(self, peer: Peer) -> bool:
        if peer.kind is PeerKind.CIDR and peer.prefix is not None:
            p = peer.prefix
            return _inside(p, self.network) and not any(_inside(p, e) for e in self.excepts)
        if peer.kind is PeerKind.RESERVED and peer.address is not None:
            a = peer.address
            return a in self.network and not any(a in e for e in self.excepts)
        return False

    def __str__(self) -> str:
        ex = "".join(f" except {e}" for e in self.excepts)
        return f"cidr({self.network}{ex})"


PeerTerm = LabelPeer | EntityPeer | CidrPeer


def _inside(p: ipaddress.IPv4Network, n: ipaddress.IPv4Network) -> bool:
    """``p`` is a subnet of ``n`` (IPv4Network.subnet_of without its generality)."""
    if p.prefixlen < n.prefixlen:
        return False
    shift = 32 - n.prefixlen
    return int(p.network_address) >> shift == int(n.network_address) >> shift
