"""The conntrack map (glia_ct4_v2, bpf/include/ct.h): listing and GC.

Service connections have a service and a reply entry on the client's node;
every connection has a policy entry per side where it was allowed (egress at
the sender's node, ingress at the receiver's).

The datapath creates and refreshes the entries; Python only reads them
(:func:`ct_entries`, behind `glia bpf ct list`) and deletes the expired ones
(:func:`ct_gc`, run periodically by the agent on its datapath thread).
Expiries are ``bpf_ktime_get_ns()`` values, i.e. CLOCK_MONOTONIC, the clock
of :func:`time.monotonic_ns`.
"""

from __future__ import annotations

import socket
import struct
import time
from ctypes import sizeof
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glia.datapath.lbtypes import PROTO_NAMES
from glia.datapath.maps import BPFMap
from glia.datapath.mapspecs import CT4
from glia.datapath.structs import glia_ct4_entry, glia_ct4_key

if TYPE_CHECKING:
    from glia.datapath.loader import Datapath

# enum glia_ct_dir / glia_ct_flags
CT_SERVICE = 1
CT_REPLY = 2
CT_EGRESS = 3  # policy: allowed out of its sender (tuple of the first packet)
CT_INGRESS = 4  # policy: allowed into its receiver
# 5 was a separate via-stack entry; now CT_F_VIA_STACK on the INGRESS entry
CT_F_SEEN_REPLY = 1
CT_F_CLOSING = 2
CT_F_HAIRPIN = 4
CT_F_VIA_STACK = 8  # INGRESS: from a pod through the node's stack (host port): replies too
CT_F_HOSTPORT = 16  # INGRESS: a host port's DNAT by from_netdev: replies reverse-NATed out
HAIRPIN_IP = "169.254.42.1"  # GLIA_HAIRPIN_IP: source of a pod's connections to itself
_DIR_NAMES = {
    CT_SERVICE: "service",
    CT_REPLY: "reply",
    CT_EGRESS: "egress",
    CT_INGRESS: "ingress",
}
_TCP_FLAG_NAMES = ((0x01, "FIN"), (0x02, "SYN"), (0x04, "RST"), (0x10, "ACK"))

_KEY = struct.Struct("!4s4sHHBBH")  # glia_ct4_key: addresses and ports in network order
_ENTRY_HEAD = struct.Struct("=Q")  # glia_ct4_entry.expires_ns
_ENTRY_NAT = struct.Struct("!4sH")  # nat_addr, nat_port (network order)
_ENTRY_TAIL = struct.Struct("=BBII")  # flags, tcp_flags, svc_id, pad
if _KEY.size != sizeof(glia_ct4_key) or 8 + 6 + _ENTRY_TAIL.size != sizeof(glia_ct4_entry):
    raise ImportError("the conntrack packers do not match glia_ct4_key / glia_ct4_entry")


@dataclass(frozen=True, slots=True)
class CTRow:
    """One conntrack entry, decoded."""

    kind: str  # "service" | "reply" | "egress" | "ingress" (_DIR_NAMES)
    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    nat_addr: str  # service: the backend; reply: the VIP
    nat_port: int
    svc_id: int
    expires_ns: int  # CLOCK_MONOTONIC
    flags: int  # CT_F_*
    tcp_flags: int

    def to_dict(self, now_ns: int | None = None) -> dict[str, Any]:
        """JSON shape of `glia bpf ct list -o json` (``expires_in`` in seconds)."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        return {
            "kind": self.kind,
            "proto": PROTO_NAMES.get(self.proto, str(self.proto)),
            "src": f"{self.src}:{self.sport}",
            "dst": f"{self.dst}:{self.dport}",
            "nat": f"{self.nat_addr}:{self.nat_port}",
            "svc_id": self.svc_id,
            "expires_in": round((self.expires_ns - now) / 1e9, 3),
            "closing": bool(self.flags & CT_F_CLOSING),
            "seen_reply": bool(self.flags & CT_F_SEEN_REPLY),
            "hairpin": bool(self.flags & CT_F_HAIRPIN),
            "via_stack": bool(self.flags & CT_F_VIA_STACK),
            "hostport": bool(self.flags & CT_F_HOSTPORT),
            "tcp_flags": [name for bit, name in _TCP_FLAG_NAMES if self.tcp_flags & bit],
        }


def _decode(key: bytes, value: bytes) -> CTRow:
    saddr, daddr, sport, dport, proto, kind, _ = _KEY.unpack(key)
    (expires,) = _ENTRY_HEAD.unpack_from(value, 0)
    nat_addr, nat_port = _ENTRY_NAT.unpack_from(value, 8)
    flags, tcp_flags, svc_id, _ = _ENTRY_TAIL.unpack_from(value, 14)
    return CTRow(
        kind=_DIR_NAMES.get(kind, str(kind)),
        proto=proto,
        src=socket.inet_ntoa(saddr),
        sport=sport,
        dst=socket.inet_ntoa(daddr),
        dport=dport,
        nat_addr=socket.inet_ntoa(nat_addr),
        nat_port=nat_port,
        svc_id=svc_id,
        expires_ns=expires,
        flags=flags,
        tcp_flags=tcp_flags,
    )


class CTMap:
    """glia_ct4_v2 of one node."""

    def __init__(self, m: BPFMap[glia_ct4_key, glia_ct4_entry]) -> None:
        self.map = m

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> CTMap:
        return cls(BPFMap.open_pinned(pin_dir, CT4, glia_ct4_key, glia_ct4_entry))

    def _raw_pairs(self) -> list[tuple[bytes, bytes]]:
        keys, values = self.map.items_raw()
        ks, vs = CT4.key_size, CT4.value_size
        return [
            (keys[i * ks : (i + 1) * ks], values[i * vs : (i + 1) * vs])
            for i in range(len(keys) // ks)
        ]

    def entries(self) -> list[CTRow]:
        """Every entry, expired ones included (the datapath ignores those)."""
        rows = [_decode(k, v) for k, v in self._raw_pairs()]
        rows.sort(key=lambda r: (r.kind, socket.inet_aton(r.src), r.sport, r.dport))
        return rows

    def gc(self, now_ns: int) -> int:
        """Delete the entries expired at ``now_ns``; how many went.

        Each candidate is looked up again right before its deletion: the
        datapath may have recreated it meanwhile (a new connection on the same
        ports), and deleting that would move the connection to another backend.
        """
        deleted = 0
        for raw_key, raw_value in self._raw_pairs():
            if _ENTRY_HEAD.unpack_from(raw_value, 0)[0] > now_ns:
                continue
            key = glia_ct4_key.from_buffer_copy(raw_key)
            current = self.map.lookup(key)
            if current is not None and current.expires_ns <= now_ns:
                deleted += int(self.map.delete(key))
        return deleted

    def flush(self) -> int:
        """Delete every entry (tests, `glia bpf ct flush`)."""
        keys, _ = self.map.items_raw()
        return self.map.delete_raw(keys) if keys else 0

    def close(self) -> None:
        self.map.close()


def ct_entries(datapath: Datapath) -> list[CTRow]:
    """The node's conntrack entries (for `glia bpf ct list`)."""
    return datapath.ct.entries()


def ct_gc(datapath: Datapath, now_ns: int | None = None) -> int:
    """Delete the node's expired conntrack entries; returns how many.

    ``now_ns`` is a CLOCK_MONOTONIC time (default: now). Run on the datapath
    thread every few seconds; the LRU also evicts when the map is full, so
    GC is about keeping `glia bpf ct list` and the map's memory honest.
    """
    return datapath.ct.gc(time.monotonic_ns() if now_ns is None else now_ns)
