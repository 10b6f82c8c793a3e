"""The verdict on one connection and the rule that decided it (``glia policy trace``).

Pure. :func:`verdict` judges a connection from ``src`` to ``dst`` on a
protocol and destination port: egress at the source (if it is an endpoint) and
ingress at the destination (if it is an endpoint); :func:`side_verdict` judges
one side, since each node enforces its own endpoints. Semantics are Cilium's
default enforcement mode (docs/policy.md):

- an endpoint selected by a rule with an ingress (egress) section, allow or
  deny, is default-deny in that direction; otherwise that direction is open;
- a matching deny wins over any allow;
- an endpoint's own policies are those of its own cluster;
- with ``allow_host`` (the default, Cilium's ``allow-localhost``) the local
  host may reach the node's endpoints unless a deny says otherwise.

The datapath gets the same answers from :mod:`glia.policy.engine`'s entries;
the property test in tests/unit/test_policy_properties.py holds both to a
plain reading of the rules.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from glia.model.identity import ReservedIdentity
from glia.policy.compiled import HOST_RULE, PolicySet, proto_name
from glia.policy.model import Direction, Policy, RuleRef
from glia.policy.peers import Peer, PeerKind


class Reason(enum.StrEnum):
    NOT_ENDPOINT = "not-an-endpoint"  # this end is no glia endpoint: nothing enforced here
    NOT_ENFORCED = "not-enforced"  # no rule selecting the endpoint has this direction
    ALLOWED = "allowed"  # an allow rule names the peer and port
    DENIED = "denied"  # a deny rule names the peer and port
    HOST = "host"  # the local host reaching its endpoint (implicit)
    DEFAULT_DENY = "default-deny"  # enforced, and no rule allows it


@dataclass(frozen=True, slots=True)
class SideVerdict:
    direction: Direction
    allowed: bool
    reason: Reason
    rule: RuleRef | None = None  # the rule that decided (first deny, else first allow)
    selected_by: tuple[str, ...] = ()  # "<ns>/<name>: <spec>" of every rule selecting the endpoint
    denies: tuple[RuleRef, ...] = ()  # every deny rule that matched
    allows: tuple[RuleRef, ...] = ()  # every allow rule that matched

    def to_dict(self) -> dict[str, Any]:
        def ref(r: RuleRef | None) -> dict[str, str] | None:
            if r is None:
                return None
            return {"cluster": r.cluster, "id": str(r)}

        return {
            "direction": self.direction.value,
            "allowed": self.allowed,
            "reason": self.reason.value,
            "rule": ref(self.rule),
            "selected_by": list(self.selected_by),
            "denies": [ref(r) for r in self.denies],
            "allows": [ref(r) for r in self.allows],
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    src: Peer
    dst: Peer
    proto: int
    dport: int
    egress: SideVerdict  # judged at the source
    ingress: SideVerdict  # judged at the destination

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def decided_by(self) -> SideVerdict:
        """The side that dropped it (egress first, as the packet goes); when allowed, the
        side a rule allowed it on (ingress first), else a side that is an endpoint."""
        for side in (self.egress, self.ingress):
            if not side.allowed:
                return side
        for side in (self.ingress, self.egress):
            if side.reason in (Reason.ALLOWED, Reason.HOST):
                return side
        return self.ingress if self.ingress.reason is not Reason.NOT_ENDPOINT else self.egress

    def to_dict(self) -> dict[str, Any]:
        """For ``glia policy trace -o json``."""
        return {
            "src": str(self.src),
            "dst": str(self.dst),
            "proto": proto_name(self.proto),
            "dport": self.dport,
            "allowed": self.allowed,
            "decided_by": self.decided_by.direction.value,
            "egress": self.egress.to_dict(),
            "ingress": self.ingress.to_dict(),
        }

    def __str__(self) -> str:
        what = f"{self.src} -> {self.dst} {self.dport}/{proto_name(self.proto)}"
        return f"{what}: {'ALLOWED' if self.allowed else 'DENIED'}"


def _policy_set(policies: PolicySet | Iterable[Policy]) -> PolicySet:
    return policies if isinstance(policies, PolicySet) else PolicySet(policies)


def side_verdict(
    policies: PolicySet | Iterable[Policy],
    subject: Peer,
    peer: Peer,
    direction: Direction,
    proto: int,
    dport: int,
    *,
    allow_host: bool = True,
) -> SideVerdict:
    """Whether ``subject`` (the endpoint enforcing) lets ``peer`` through in ``direction``."""
    if subject.kind is not PeerKind.ENDPOINT:
        return SideVerdict(direction, True, Reason.NOT_ENDPOINT)
    rules = _policy_set(policies).selecting(subject)
    selected = tuple(
        dict.fromkeys(f"{r.namespace}/{r.name}" for r in rules if direction in r.enforces)
    )
    if not selected:
        return SideVerdict(direction, True, Reason.NOT_ENFORCED)
    denies: list[RuleRef] = []
    allows: list[RuleRef] = []
    for r in rules:
        for item in r.items:
            if item.direction is not direction:
                continue
            if item.matches_port(proto, dport) and item.matches_peer(peer):
                (denies if item.deny else allows).append(item.ref)
    host = (
        allow_host
        and direction is Direction.INGRESS
        and peer.kind is PeerKind.RESERVED
        and peer.identity == ReservedIdentity.HOST
    )

    def done(allowed: bool, reason: Reason, rule: RuleRef | None) -> SideVerdict:
        return SideVerdict(direction, allowed, reason, rule, selected, tuple(denies), tuple(allows))

    if denies:
        return done(False, Reason.DENIED, denies[0])
    if allows:
        return done(True, Reason.ALLOWED, allows[0])
    if host:
        return done(True, Reason.HOST, HOST_RULE)
    return done(False, Reason.DEFAULT_DENY, None)


def verdict(
    policies: PolicySet | Iterable[Policy],
    src: Peer,
    dst: Peer,
    proto: int,
    dport: int,
    *,
    allow_host: bool = True,
) -> Verdict:
    """Egress at ``src`` and ingress at ``dst`` (each against its own cluster's policies)."""
    ps = _policy_set(policies)
    return Verdict(
        src=src,
        dst=dst,
        proto=proto,
        dport=dport,
        egress=side_verdict(ps, src, dst, Direction.EGRESS, proto, dport, allow_host=allow_host),
        ingress=side_verdict(ps, dst, src, Direction.INGRESS, proto, dport, allow_host=allow_host),
    )
