"""Plain values of the lb4 maps (bpf/include/lb.h), without ctypes or I/O.

The vocabulary shared by the pure planner (glia.service.lbplan and lbdiff, which decide
the map content), the typed maps (glia.datapath.lbmaps, which convert to the
C structs and write) and readers (lbsync's rows, the CLI). Addresses are
dotted quads, ports numbers, protocols IP protocol numbers. The small values
are named tuples: hashing and comparing them runs in C, which matters at
100,000 services.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import NamedTuple

IPPROTO_TCP = 6
IPPROTO_UDP = 17
PROTO_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}

# enum glia_lb_flags
LB_F_MAGLEV = 1
LB_F_AFFINITY = 2
LB_F_HOSTPORT = 4  # a host port (podman -p): from_netdev serves it too


def ip_sort_key(ip: str) -> bytes:
    """Addresses sort numerically by their packed form."""
    return socket.inet_aton(ip)


class Frontend(NamedTuple):
    """Key of glia_lb4_svc_v1: a service's VIP, port and protocol."""

    vip: str
    port: int
    proto: int  # IPPROTO_TCP | IPPROTO_UDP

    def sort_key(self) -> tuple[bytes, int, int]:
        return ip_sort_key(self.vip), self.port, self.proto

    def __str__(self) -> str:
        return f"{self.vip}:{self.port}/{PROTO_NAMES.get(self.proto, self.proto)}"


class ServiceEntry(NamedTuple):
    """Value of glia_lb4_svc_v1."""

    svc_id: int  # also the reverse-NAT index
    ready_count: int  # ready backends = slots 0..ready_count-1 (C: count)
    flags: int  # LB_F_*
    affinity_timeout: int  # seconds (0 without affinity)


class BackendAddr(NamedTuple):
    """Value of glia_lb4_be_v1; also what identifies a backend (ids are per node)."""

    ip: str
    port: int
    proto: int

    def sort_key(self) -> tuple[bytes, int, int]:
        return ip_sort_key(self.ip), self.port, self.proto

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


class RevNat(NamedTuple):
    """Value of glia_lb4_rev_v1."""

    vip: str
    port: int


@dataclass
class MapContents:
    """Everything the lb4 maps hold (the affinity LRU aside), by map."""

    services: dict[Frontend, ServiceEntry] = field(default_factory=dict)
    slots: dict[tuple[int, int], int] = field(default_factory=dict)  # (svc, slot) -> backend
    backends: dict[int, BackendAddr] = field(default_factory=dict)
    revnat: dict[int, RevNat] = field(default_factory=dict)
    maglev: dict[int, tuple[int, ...]] = field(default_factory=dict)  # svc -> backend ids
    affinity_match: set[tuple[int, int]] = field(default_factory=set)  # (backend, svc)

    def entry_count(self) -> int:
        return (
            len(self.services)
            + len(self.slots)
            + len(self.backends)
            + len(self.revnat)
            + len(self.maglev)
            + len(self.affinity_match)
        )


@dataclass
class MapChanges:
    """What to write to and delete from each lb4 map to go from one plan to the next.

    Applied by glia.datapath.lbmaps.LBMaps.apply in an order that keeps every
    intermediate state consistent for the datapath (slots before the count
    that exposes them, counts before the slots they hide go).
    """

    upsert: MapContents = field(default_factory=MapContents)
    delete_services: list[Frontend] = field(default_factory=list)
    delete_slots: list[tuple[int, int]] = field(default_factory=list)
    delete_backends: list[int] = field(default_factory=list)
    delete_revnat: list[int] = field(default_factory=list)
    delete_maglev: list[int] = field(default_factory=list)
    delete_affinity_match: list[tuple[int, int]] = field(default_factory=list)
    # Services whose ClientIP affinity entries (LRU map) are to be purged:
    # frontends that went away or stopped asking for affinity.
    flush_affinity: set[int] = field(default_factory=set)

    def is_empty(self) -> bool:
        return self.upsert.entry_count() == 0 and not (
            self.delete_services
            or self.delete_slots
            or self.delete_backends
            or self.delete_revnat
            or self.delete_maglev
            or self.delete_affinity_match
            or self.flush_affinity
        )

    def summary(self) -> dict[str, int]:
        """Counts per map and operation, for logs and status."""
        u = self.upsert
        return {
            "services+": len(u.services),
            "services-": len(self.delete_services),
            "slots+": len(u.slots),
            "slots-": len(self.delete_slots),
            "backends+": len(u.backends),
            "backends-": len(self.delete_backends),
            "revnat+": len(u.revnat),
            "revnat-": len(self.delete_revnat),
            "maglev+": len(u.maglev),
            "maglev-": len(self.delete_maglev),
            "affinity_match+": len(u.affinity_match),
            "affinity_match-": len(self.delete_affinity_match),
            "affinity_flush": len(self.flush_affinity),
        }
