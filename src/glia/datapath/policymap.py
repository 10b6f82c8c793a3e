"""The policy maps (glia_policy_v1, glia_polsub_v1; bpf/include/policy.h): programming
and listing.

Called by the agent's policy subsystem (on its datapath thread), ``glia bpf
policy list`` and bench/policy.py. A subject is the identity of a local
endpoint: endpoints with one identity share its entries.

An :class:`~glia.policy.entries.EndpointPolicy` entry covers a port range; the
LPM trie holds it as the range's aligned blocks
(:func:`~glia.policy.entries.port_prefixes`). Two different ranges can share a
block (64..80 and 64..79 both hold 64/12), so changes are worked out per
block: the blocks of the keys a diff touches, old against new (the blocks of
one EndpointPolicy's keys never overlap, so untouched keys cannot share them).

Order of writes, so no packet sees less policy than either the old or the new
state allows: new blocks, then the enforced flags, then removals; a subject
that stops being enforced has its flags cleared first.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Mapping
from ctypes import c_uint32
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glia.datapath.maps import BPFMap
from glia.datapath.mapspecs import POLICY, POLICY_SUBJECTS
from glia.datapath.structs import (
    GLIA_POLICY_F_DENY,
    GLIA_POLICY_F_L4,
    POLICY_FULL_PREFIX,
    POLICY_L3_PREFIX,
    glia_policy_entry,
    glia_policy_key,
    glia_policy_subject,
)
from glia.policy.compiled import PORT_MAX, PROTO_ANY, proto_name
from glia.policy.entries import Action, EndpointPolicy, PolicyKey, PolicyValue, port_prefixes
from glia.policy.model import Direction

# enum glia_direction (bpf/include/drop.h)
_DIR_CODE = {Direction.INGRESS: 0, Direction.EGRESS: 1}
_DIR_OF_CODE = {v: k for k, v in _DIR_CODE.items()}

_KEY = struct.Struct("=IIIBB2s")  # prefixlen, subject, peer, direction, proto, dport (network)
_VALUE = struct.Struct("=BBHI")  # flags, pad1, pad2, cookie
_SUBJECT = struct.Struct("=I")
_SUBJECT_VALUE = struct.Struct("=II")
if _KEY.size != POLICY.key_size or _VALUE.size != POLICY.value_size:
    raise ImportError("the policy map packers do not match glia_policy_key / glia_policy_entry")

Cookie = Callable[[tuple[str, ...]], int]


def _no_cookie(_rules: tuple[str, ...]) -> int:
    return 0


@functools.lru_cache(maxsize=8192)
def _port_blocks(proto: int, lo: int, hi: int) -> tuple[tuple[int, int, bytes], ...]:
    """(prefix length, proto, port in network order) of each LPM block of a range;
    cached: a cluster's policies use a handful of port ranges, its entries many times."""
    if proto == PROTO_ANY:
        return ((POLICY_L3_PREFIX, 0, b"\0\0"),)
    return tuple(
        (POLICY_L3_PREFIX + 8 + bits, proto, port.to_bytes(2, "big"))
        for port, bits in port_prefixes(lo, hi)
    )


def key_blocks(subject: int, key: PolicyKey) -> list[bytes]:
    """The packed LPM keys of one entry (a protocol-ANY entry is one 72-bit prefix)."""
    direction = _DIR_CODE[key.direction]
    peer = key.identity
    pack = _KEY.pack
    return [
        pack(plen, subject, peer, direction, proto, port)
        for plen, proto, port in _port_blocks(key.proto, key.lo, key.hi)
    ]


def pack_value(key: PolicyKey, value: PolicyValue, cookie: Cookie = _no_cookie) -> bytes:
    flags = (GLIA_POLICY_F_DENY if value.action is Action.DENY else 0) | (
        GLIA_POLICY_F_L4 if key.proto != PROTO_ANY else 0
    )
    return _VALUE.pack(flags, 0, 0, cookie(value.rules))


def blocks(
    subject: int,
    entries: Mapping[PolicyKey, PolicyValue],
    keys: Iterable[PolicyKey] | None = None,
    cookie: Cookie = _no_cookie,
) -> dict[bytes, bytes]:
    """Packed key -> packed value of ``keys`` (default: every entry)."""
    out: dict[bytes, bytes] = {}
    pack = _KEY.pack
    values: dict[tuple[bool, PolicyValue], bytes] = {}  # few distinct values: pack each once
    for k in entries if keys is None else keys:
        v = entries.get(k)
        if v is None:
            continue
        l4 = k.proto != PROTO_ANY
        packed = values.get((l4, v))
        if packed is None:
            packed = values[(l4, v)] = pack_value(k, v, cookie)
        direction, peer = _DIR_CODE[k.direction], k.identity
        for plen, proto, port in _port_blocks(k.proto, k.lo, k.hi):
            out[pack(plen, subject, peer, direction, proto, port)] = packed
    return out


def _enforced_bits(policy: EndpointPolicy | None) -> int:
    if policy is None:
        return 0
    return (1 << _DIR_CODE[Direction.INGRESS] if policy.ingress_enforced else 0) | (
        1 << _DIR_CODE[Direction.EGRESS] if policy.egress_enforced else 0
    )


@dataclass(frozen=True, slots=True)
class PolicyMapRow:
    """One entry of the map, decoded (a port block, not a range)."""

    subject: int
    direction: Direction
    peer: int  # 0: any
    proto: int  # 0: every protocol
    lo: int
    hi: int
    deny: bool
    cookie: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "direction": self.direction.value,
            "peer": self.peer,
            "proto": proto_name(self.proto),
            "ports": [self.lo, self.hi],
            "action": "deny" if self.deny else "allow",
            "cookie": self.cookie,
        }


def _row(raw_key: bytes, raw_value: bytes) -> PolicyMapRow | None:
    prefixlen, subject, peer, direction, proto, port = _KEY.unpack(raw_key)
    flags, _, _, cookie = _VALUE.unpack(raw_value)
    if direction not in _DIR_OF_CODE or not POLICY_L3_PREFIX <= prefixlen <= POLICY_FULL_PREFIX:
        return None  # not written by this code: shown by nobody, removed by sync_all
    if prefixlen == POLICY_L3_PREFIX:
        lo, hi = 0, PORT_MAX
    else:
        bits = prefixlen - POLICY_L3_PREFIX - 8
        lo = int.from_bytes(port, "big")
        hi = lo + (1 << (16 - bits)) - 1
    return PolicyMapRow(
        subject,
        _DIR_OF_CODE[direction],
        peer,
        proto,
        lo,
        hi,
        bool(flags & GLIA_POLICY_F_DENY),
        cookie,
    )


_Plan = tuple[dict[bytes, bytes], list[bytes], int]  # upserts, removals, enforced bits


def _plan(
    subject: int, old: EndpointPolicy | None, new: EndpointPolicy | None, cookie: Cookie
) -> _Plan | None:
    """What going from ``old`` to ``new`` writes for ``subject``; None: nothing."""
    before = old.entries if old is not None else {}
    after = new.entries if new is not None else {}
    bits = _enforced_bits(new)
    if not before:  # a new subject: every block is an upsert (the common, bulk case)
        upserts = blocks(subject, after, None, cookie)
        removals: list[bytes] = []
    else:
        touched = [k for k in before if after.get(k) != before[k]]
        touched += [k for k in after if k not in before]
        old_blocks = blocks(subject, before, touched, cookie)
        new_blocks = blocks(subject, after, touched, cookie)
        upserts = {b: v for b, v in new_blocks.items() if old_blocks.get(b) != v}
        removals = [b for b in old_blocks if b not in new_blocks]
    if not upserts and not removals and bits == _enforced_bits(old):
        return None
    return upserts, removals, bits


class PolicyMap:
    """Handles on both policy maps of one node."""

    def __init__(
        self,
        entries: BPFMap[glia_policy_key, glia_policy_entry],
        subjects: BPFMap[c_uint32, glia_policy_subject],
    ) -> None:
        self._entries = entries
        self._subjects = subjects

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> PolicyMap:
        return cls(
            BPFMap.open_pinned(pin_dir, POLICY, glia_policy_key, glia_policy_entry),
            BPFMap.open_pinned(pin_dir, POLICY_SUBJECTS, c_uint32, glia_policy_subject),
        )

    def close(self) -> None:
        self._entries.close()
        self._subjects.close()

    # --- writing ------------------------------------------------------------

    def _set_enforced(self, subject: int, bits: int) -> None:
        if bits:
            self._subjects.update(c_uint32(subject), glia_policy_subject(enforced=bits))
        else:
            self._subjects.delete(c_uint32(subject))

    def _write(
        self, subject: int, upserts: dict[bytes, bytes], removals: Iterable[bytes], bits: int
    ) -> None:
        off = bits == 0
        if off:
            self._set_enforced(subject, 0)
        if upserts:
            self._entries.update_raw(b"".join(upserts), b"".join(upserts.values()))
        if not off:
            self._set_enforced(subject, bits)
        gone = b"".join(removals)
        if gone:
            self._entries.delete_raw(gone)

    def apply(
        self,
        subject: int,
        old: EndpointPolicy | None,
        new: EndpointPolicy | None,
        cookie: Cookie = _no_cookie,
    ) -> int:
        """Go from ``old`` (what the map holds for ``subject``, None: nothing) to
        ``new`` (None: remove the subject). Returns the blocks written or removed."""
        plan = _plan(subject, old, new, cookie)
        if plan is None:
            return 0
        upserts, removals, bits = plan
        self._write(subject, upserts, removals, bits)
        return len(upserts) + len(removals)

    def apply_many(
        self,
        changes: Iterable[tuple[int, EndpointPolicy | None, EndpointPolicy | None]],
        cookie: Cookie = _no_cookie,
    ) -> int:
        """:meth:`apply` for many subjects (subject, old, new) at once, with one
        syscall per phase and chunk instead of a few per subject (an agent
        starting, a policy that selects many identities). The order of writes
        holds for every subject: flags of subjects turned off, every new block,
        flags of the others, every removal. Returns the blocks written or removed."""
        plans = [
            (subject, plan)
            for subject, old, new in changes
            if (plan := _plan(subject, old, new, cookie)) is not None
        ]
        off = b"".join(_SUBJECT.pack(s) for s, (_, _, bits) in plans if not bits)
        if off:
            self._subjects.delete_raw(off)
        upserts = [p[0] for _, p in plans if p[0]]
        if upserts:
            self._entries.update_raw(
                b"".join(b"".join(u) for u in upserts),
                b"".join(b"".join(u.values()) for u in upserts),
            )
        on = [(s, bits) for s, (_, _, bits) in plans if bits]
        if on:
            self._subjects.update_raw(
                b"".join(_SUBJECT.pack(s) for s, _ in on),
                b"".join(_SUBJECT_VALUE.pack(bits, 0) for _, bits in on),
            )
        gone = b"".join(b"".join(p[1]) for _, p in plans)
        if gone:
            self._entries.delete_raw(gone)
        return sum(len(p[0]) + len(p[1]) for _, p in plans)

    def sync_all(self, desired: Mapping[int, EndpointPolicy], cookie: Cookie = _no_cookie) -> int:
        """Make the maps hold exactly ``desired`` (subject -> policy), reading what
        they hold (after an agent restart): nothing in between is lost or
        briefly opened. Returns the blocks written or removed."""
        held: dict[int, dict[bytes, bytes]] = {}
        raw_keys, raw_values = self._entries.items_raw()
        ks, vs = _KEY.size, _VALUE.size
        for i in range(len(raw_keys) // ks):
            k = raw_keys[i * ks : (i + 1) * ks]
            subject = _KEY.unpack(k)[1]
            held.setdefault(subject, {})[k] = raw_values[i * vs : (i + 1) * vs]
        flagged = {int(k.value): int(v.enforced) for k, v in self._subjects.items()}
        changed = 0
        for subject in sorted(set(held) | set(flagged) | set(desired)):
            policy = desired.get(subject)
            want = blocks(subject, policy.entries, None, cookie) if policy is not None else {}
            have = held.get(subject, {})
            upserts = {b: v for b, v in want.items() if have.get(b) != v}
            removals = [b for b in have if b not in want]
            bits = _enforced_bits(policy)
            if upserts or removals or bits != flagged.get(subject, 0):
                self._write(subject, upserts, removals, bits)
                changed += len(upserts) + len(removals)
        return changed

    # --- reading ------------------------------------------------------------

    def enforced(self) -> dict[int, tuple[bool, bool]]:
        """subject -> (ingress enforced, egress enforced)."""
        out = {}
        for k, v in self._subjects.items():
            bits = int(v.enforced)
            out[int(k.value)] = (
                bool(bits & 1 << _DIR_CODE[Direction.INGRESS]),
                bool(bits & 1 << _DIR_CODE[Direction.EGRESS]),
            )
        return out

    def rows(self, subject: int | None = None) -> list[PolicyMapRow]:
        """The map's entries (of ``subject``), one per port block, in key order."""
        raw_keys, raw_values = self._entries.items_raw()
        ks, vs = _KEY.size, _VALUE.size
        out = []
        for i in range(len(raw_keys) // ks):
            k = raw_keys[i * ks : (i + 1) * ks]
            if subject is not None and _KEY.unpack(k)[1] != subject:
                continue
            row = _row(k, raw_values[i * vs : (i + 1) * vs])
            if row is not None:
                out.append(row)
        out.sort(key=lambda r: (r.subject, r.direction.value, r.peer, r.proto, r.lo))
        return out

    def __len__(self) -> int:
        return len(self._entries.items_raw()[0]) // _KEY.size


def peer_name(peer: int) -> str:
    return "ANY" if peer == 0 else str(peer)


def row_summary(row: PolicyMapRow) -> str:
    ports = (
        "*"
        if (row.lo, row.hi) == (0, PORT_MAX)
        else (str(row.lo) if row.lo == row.hi else f"{row.lo}-{row.hi}")
    )
    action = "deny" if row.deny else "allow"
    return f"{row.direction.value} {peer_name(row.peer)} {ports}/{proto_name(row.proto)} {action}"


__all__ = [
    "PolicyMap",
    "PolicyMapRow",
    "blocks",
    "key_blocks",
    "pack_value",
    "row_summary",
]
