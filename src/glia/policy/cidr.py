"""CIDR identities: node-local numbers for the prefixes policies name (as Cilium allocates them).

Pure. ``fromCIDR``/``toCIDR`` rules name world addresses, which have no
labels. The agent gives every prefix a policy of its cluster names (``cidr``
and ``except`` alike: :func:`policy_prefixes`) a node-local identity from
:class:`CidrIdentities`, writes ``prefix -> identity`` into its ipcache (an LPM
trie, where endpoints' /32 entries and nodes' addresses are more specific and
win), and hands the identity to :meth:`glia.policy.engine.PolicyEngine.upsert_cidr_identity`.
A world address then looks up to the identity of the longest prefix holding it
(:meth:`CidrIdentities.identity_of`), or to ``world`` (2) when none does, and
the policy entries name those identities: a rule ``cidr C except E`` names the
prefixes inside C and inside no E, which is exactly the addresses of C outside
E, because every C and E is itself a prefix with an identity.

Numbers are ``LOCAL_SCOPE | n``: above every cluster's range, never on the wire
(the VNI carries only endpoint identities), 32-bit in the maps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from glia.model.identity import ReservedIdentity
from glia.policy.model import Policy

LOCAL_SCOPE = 1 << 24
FIRST = LOCAL_SCOPE | 1
LAST = LOCAL_SCOPE | 0xFFFFFF


def is_cidr_identity(identity: int) -> bool:
    return FIRST <= identity <= LAST


def policy_prefixes(policies: Iterable[Policy]) -> set[str]:
    """Every prefix the policies' CIDR rules name, ``except`` prefixes included."""
    out: set[str] = set()
    for p in policies:
        for _ref, _rule, _section, item in p.sections():
            for c in item.cidr_rules():
                out.add(c.cidr)
                out.update(c.excepts)
    return out


@dataclass(frozen=True, slots=True)
class CidrChanges:
    added: dict[str, int] = field(default_factory=dict)  # prefix -> new identity
    removed: dict[str, int] = field(default_factory=dict)  # prefix -> identity released


class CidrIdentities:
    """Which prefix has which local identity; numbers stay as long as the prefix is named."""

    def __init__(self, first: int = FIRST, last: int = LAST) -> None:
        self._first = first
        self._last = last
        self.by_prefix: dict[str, int] = {}
        self._nets: dict[int, ipaddress.IPv4Network] = {}
        self._next = first

    def adopt(self, existing: Mapping[str, int]) -> None:
        """Keep the numbers the ipcache already holds (agent restart), so entries stay valid."""
        for prefix, identity in existing.items():
            net = ipaddress.IPv4Network(prefix)
            if not self._first <= identity <= self._last or identity in self._nets:
                raise ValueError(f"cannot adopt identity {identity} for {prefix}")
            self.by_prefix[str(net)] = identity
            self._nets[identity] = net

    def _allocate(self) -> int:
        n = self._next
        while n in self._nets:
            n = self._first if n >= self._last else n + 1
        self._next = self._first if n >= self._last else n + 1
        return n

    def sync(self, prefixes: Iterable[str]) -> CidrChanges:
        """Exactly these prefixes: new ones get a number, gone ones release theirs."""
        held = self.by_prefix
        wanted = {p if p in held else str(ipaddress.IPv4Network(p)) for p in prefixes}
        removed = {p: i for p, i in self.by_prefix.items() if p not in wanted}
        new = sorted(wanted - set(self.by_prefix))
        if len(self._nets) - len(removed) + len(new) > self._last - self._first + 1:
            raise RuntimeError(f"no CIDR identity left for {len(new)} new prefixes")
        for p, i in removed.items():
            del self.by_prefix[p]
            del self._nets[i]
        added: dict[str, int] = {}
        for p in new:
            i = self._allocate()
            self.by_prefix[p] = i
            self._nets[i] = ipaddress.IPv4Network(p)
            added[p] = i
        return CidrChanges(added, removed)

    def identity_of(self, address: str) -> int:
        """What the ipcache gives a world address: the longest prefix's identity, else world."""
        addr = ipaddress.IPv4Address(address)
        best: tuple[int, int] | None = None
        for i, net in self._nets.items():
            if addr in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, i)
        return int(ReservedIdentity.WORLD) if best is None else best[1]
