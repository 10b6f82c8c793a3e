"""Policy entries of one endpoint, in the form the BPF policy map takes, and their lookup.

Pure. :mod:`glia.policy.engine` computes an :class:`EndpointPolicy` per local
endpoint; the agent programs its ``entries`` (``diff`` gives the changes) and
the datapath looks them up exactly as :meth:`EndpointPolicy.lookup` does
(docs/policy.md, "Entry format"; the BPF part mirrors it).

An entry is keyed by (direction, peer identity or ANY (0), protocol or ANY (0),
port range) and says allow or deny. :func:`resolve` builds the entries so that
one rule decides a lookup:

1. If the direction is not enforced, allow.
2. For the peer's identity, then for ANY: the entry of (identity, protocol)
   whose port range holds the port; else the entry of (identity, ANY protocol).
   The first entry found decides.
3. Nothing found: deny (default deny).

For that, port ranges of one (direction, identity, protocol) never overlap, an
ANY-protocol entry always covers every port, and every deny that applies to an
identity's allowed ports is copied into that identity's entries (a deny for ANY
still wins over an allow for one identity). Port ranges map onto an LPM trie's
port prefixes with :func:`port_prefixes`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from glia.policy.compiled import PORT_MAX, PROTO_ANY, PROTO_TCP, PROTO_UDP, PortRange, proto_name
from glia.policy.model import Direction

ANY_IDENTITY = 0  # in a key: every peer


class Action(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True, order=True)
class PolicyKey:
    direction: Direction
    identity: int  # peer identity (source for ingress, destination for egress); 0: any
    proto: int  # 6 TCP, 17 UDP; 0: every protocol and port (then lo, hi = 0, 65535)
    lo: int  # first port
    hi: int  # last port

    def __str__(self) -> str:
        peer = "ANY" if self.identity == ANY_IDENTITY else str(self.identity)
        ports = (
            "*"
            if (self.lo, self.hi) == (0, PORT_MAX)
            else (str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}")
        )
        return f"{self.direction} {peer} {ports}/{proto_name(self.proto)}"


@dataclass(frozen=True, slots=True)
class PolicyValue:
    action: Action
    rules: tuple[str, ...] = ()  # ids of the rules it comes from (for listings and events)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one peer rule gives one peer: a protocol/port range (None: all), allow or deny."""

    ports: PortRange | None
    action: Action
    rule: str


@dataclass(frozen=True, slots=True)
class Hit:
    """A lookup's answer: the entry that decided, or None (not enforced / default deny)."""

    action: Action
    key: PolicyKey | None
    value: PolicyValue | None


class EndpointPolicy:
    """The entries of one endpoint, whether each direction is enforced, and the lookup."""

    __slots__ = ("_index", "egress_enforced", "entries", "ingress_enforced")

    def __init__(
        self,
        ingress_enforced: bool,
        egress_enforced: bool,
        entries: Mapping[PolicyKey, PolicyValue],
    ) -> None:
        self.ingress_enforced = ingress_enforced
        self.egress_enforced = egress_enforced
        self.entries = dict(entries)
        self._index: dict[tuple[Direction, int, int], list[PolicyKey]] | None = None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, EndpointPolicy)
            and self.ingress_enforced == other.ingress_enforced
            and self.egress_enforced == other.egress_enforced
            and self.entries == other.entries
        )

    def __hash__(self) -> int:
        return hash((self.ingress_enforced, self.egress_enforced, len(self.entries)))

    def __repr__(self) -> str:
        return (
            f"EndpointPolicy(ingress_enforced={self.ingress_enforced}, "
            f"egress_enforced={self.egress_enforced}, {len(self.entries)} entries)"
        )

    def enforced(self, direction: Direction) -> bool:
        return self.ingress_enforced if direction == Direction.INGRESS else self.egress_enforced

    def _find(self, direction: Direction, identity: int, proto: int, port: int) -> PolicyKey | None:
        if self._index is None:
            index: dict[tuple[Direction, int, int], list[PolicyKey]] = {}
            for k in sorted(self.entries):
                index.setdefault((k.direction, k.identity, k.proto), []).append(k)
            self._index = index
        if proto != PROTO_ANY:
            for k in self._index.get((direction, identity, proto), ()):
                if k.lo <= port <= k.hi:
                    return k
        root = self._index.get((direction, identity, PROTO_ANY))
        return root[0] if root else None

    def rows(self) -> list[dict[str, Any]]:
        """The entries as plain values, in key order (``glia bpf policy list``, the API)."""
        return [
            {
                "direction": k.direction.value,
                "identity": k.identity,
                "proto": proto_name(k.proto),
                "ports": [k.lo, k.hi],
                "action": v.action.value,
                "rules": list(v.rules),
            }
            for k, v in sorted(self.entries.items())
        ]

    def lookup(self, direction: Direction, identity: int, proto: int, port: int) -> Hit:
        """What the datapath decides for a packet to/from peer ``identity`` (see module doc)."""
        if not self.enforced(direction):
            return Hit(Action.ALLOW, None, None)
        for ident in (identity, ANY_IDENTITY):
            key = self._find(direction, ident, proto, port)
            if key is not None:
                value = self.entries[key]
                return Hit(value.action, key, value)
        return Hit(Action.DENY, None, None)


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """What to write to go from one EndpointPolicy to another."""

    upserts: dict[PolicyKey, PolicyValue] = field(default_factory=dict)
    deletes: list[PolicyKey] = field(default_factory=list)
    enforcement: tuple[bool, bool] | None = None  # new (ingress, egress) flags if they changed

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes or self.enforcement is not None)


def diff(old: EndpointPolicy | None, new: EndpointPolicy) -> PolicyDiff:
    before = old.entries if old is not None else {}
    flags = (new.ingress_enforced, new.egress_enforced)
    old_flags = (old.ingress_enforced, old.egress_enforced) if old is not None else None
    return PolicyDiff(
        upserts={k: v for k, v in new.entries.items() if before.get(k) != v},
        deletes=sorted(k for k in before if k not in new.entries),
        enforcement=flags if flags != old_flags else None,
    )


def port_prefixes(lo: int, hi: int) -> list[tuple[int, int]]:
    """``lo..hi`` as aligned (port, prefix length 0..16) blocks, for an LPM trie."""
    if not 0 <= lo <= hi <= PORT_MAX:
        raise ValueError(f"bad port range {lo}..{hi}")
    out: list[tuple[int, int]] = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 17 - size.bit_length()))
        lo += size
    return out


# -- resolving grants into entries -------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    lo: int
    hi: int
    action: Action
    rule: str
    from_any: bool  # a deny of the ANY identity, copied in


def _cover(spans: list[_Span], lo: int, hi: int) -> tuple[set[str], set[str], set[str]]:
    own_deny: set[str] = set()
    own_allow: set[str] = set()
    any_deny: set[str] = set()
    for s in spans:
        if s.lo <= lo and hi <= s.hi:
            if s.from_any:
                any_deny.add(s.rule)
            elif s.action is Action.DENY:
                own_deny.add(s.rule)
            else:
                own_allow.add(s.rule)
    return own_deny, own_allow, any_deny


def _resolve_group(
    grants: Iterable[Grant], any_denies: Iterable[Grant]
) -> list[tuple[int, int, int, PolicyValue]]:
    """(proto, lo, hi, value) for one identity, from its grants and the ANY identity's denies."""
    grants = list(grants)
    any_denies = list(any_denies)
    allow_o = {g.rule for g in grants if g.ports is None and g.action is Action.ALLOW}
    deny_o = {g.rule for g in grants if g.ports is None and g.action is Action.DENY}
    if allow_o:
        deny_o |= {g.rule for g in any_denies if g.ports is None}
    root: PolicyValue | None = None
    if deny_o:
        root = PolicyValue(Action.DENY, tuple(sorted(deny_o)))
    elif allow_o:
        root = PolicyValue(Action.ALLOW, tuple(sorted(allow_o)))
    out: list[tuple[int, int, int, PolicyValue]] = []
    if root is not None:
        out.append((PROTO_ANY, 0, PORT_MAX, root))
        if root.action is Action.DENY:
            return out  # every protocol and port denied: nothing more specific matters
    for proto in (PROTO_TCP, PROTO_UDP):
        spans = [
            _Span(
                g.ports.lo if g.ports else 0,
                g.ports.hi if g.ports else PORT_MAX,
                g.action,
                g.rule,
                False,
            )
            for g in grants
            if g.ports is None or g.ports.proto == proto
        ]
        if not spans:
            continue  # the ANY identity's entries answer for this protocol
        spans += [
            _Span(
                g.ports.lo if g.ports else 0,
                g.ports.hi if g.ports else PORT_MAX,
                g.action,
                g.rule,
                True,
            )
            for g in any_denies
            if g.ports is None or g.ports.proto == proto
        ]
        cuts = sorted({s.lo for s in spans} | {s.hi + 1 for s in spans})
        prev: tuple[int, int, int, PolicyValue] | None = None
        for lo, nxt in itertools.pairwise(cuts):
            hi = nxt - 1
            own_deny, own_allow, any_deny = _cover(spans, lo, hi)
            value: PolicyValue | None = None
            if own_deny or (any_deny and own_allow):
                denied = own_deny | (any_deny if own_allow else set())
                value = PolicyValue(Action.DENY, tuple(sorted(denied)))
            elif own_allow:
                value = PolicyValue(Action.ALLOW, tuple(sorted(own_allow)))
            if value is None or (root is not None and value.action is root.action):
                if prev is not None:
                    out.append(prev)
                prev = None
                continue
            if prev is not None and prev[2] + 1 == lo and prev[3] == value:
                prev = (proto, prev[1], hi, value)
            else:
                if prev is not None:
                    out.append(prev)
                prev = (proto, lo, hi, value)
        if prev is not None:
            out.append(prev)
    return out


def any_denies(grants: Mapping[int, frozenset[Grant]]) -> list[Grant]:
    """The ANY identity's denies: copied into every identity whose allows they cut."""
    return [g for g in grants.get(ANY_IDENTITY, frozenset()) if g.action is Action.DENY]


def resolve_identity(
    direction: Direction, identity: int, group: frozenset[Grant], denies_of_any: list[Grant]
) -> dict[PolicyKey, PolicyValue]:
    """The entries of one peer identity (not ANY): a function of its grants and ANY's denies
    only, so a change of one identity replaces just its entries."""
    return {
        PolicyKey(direction, identity, proto, lo, hi): value
        for proto, lo, hi, value in _resolve_group(group, denies_of_any)
    }


def resolve(
    direction: Direction, grants: Mapping[int, frozenset[Grant]]
) -> dict[PolicyKey, PolicyValue]:
    """The entries of one direction from what each peer identity (or ANY) is granted.

    Identities with the same grants share one computation.
    """
    denies = any_denies(grants)
    memo: dict[frozenset[Grant], list[tuple[int, int, int, PolicyValue]]] = {}
    out: dict[PolicyKey, PolicyValue] = {}
    for identity, group in grants.items():
        if identity == ANY_IDENTITY:
            resolved = _resolve_group(group, ())
        elif group in memo:
            resolved = memo[group]
        else:
            resolved = memo[group] = _resolve_group(group, denies)
        for proto, lo, hi, value in resolved:
            out[PolicyKey(direction, identity, proto, lo, hi)] = value
    return out
