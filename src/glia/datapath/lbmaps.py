"""Typed handles on the lb4 service maps (bpf/include/lb.h).

:class:`LBMaps` bundles the seven maps of service load-balancing: it reads
them back whole (:meth:`LBMaps.read`, for adoption after an agent restart and
for `glia bpf lb list`) and applies a :class:`~glia.datapath.lbtypes.MapChanges`
computed by glia.service.lbdiff in batches, in an order that keeps the
datapath consistent at every step. Entries are packed with ``struct`` in the C
layout (mirrored and BTF-checked in glia.datapath.structs), which is what makes
10,000 services a matter of milliseconds. Created by
glia.datapath.loader.Datapath (``dp.lb``) or with ``open_pinned`` by readers;
written only by glia.service.lbsync.ServiceMapSync.
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections.abc import Callable, Iterable
from ctypes import Structure, c_uint32, sizeof
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from glia.datapath import libbpf
from glia.datapath.errors import DatapathError
from glia.datapath.lbtypes import (
    BackendAddr,
    Frontend,
    MapChanges,
    MapContents,
    RevNat,
    ServiceEntry,
)
from glia.datapath.maps import BPFMap, memlock_bytes
from glia.datapath.mapspecs import (
    LB_AFFINITY,
    LB_AFFMATCH,
    LB_BACKENDS,
    LB_MAGLEV,
    LB_REVNAT,
    LB_SERVICES,
    LB_SLOTS,
    MapSpec,
)
from glia.datapath.structs import (
    LB_MAGLEV_M,
    glia_lb4_aff_key,
    glia_lb4_affinity,
    glia_lb4_affm,
    glia_lb4_affm_key,
    glia_lb4_backend,
    glia_lb4_key,
    glia_lb4_maglev,
    glia_lb4_revnat,
    glia_lb4_service,
    glia_lb4_slot,
    glia_lb4_slot_key,
)

_K = TypeVar("_K", bound="c_uint32 | Structure")
_V = TypeVar("_V", bound=Structure)

# C layouts (see lb.h): "4s" is an address in network order, "!" fields are
# __be16, "=" fields host order.
_ADDR_PORT = struct.Struct("!4sHBB")  # glia_lb4_key, glia_lb4_backend
_SERVICE = struct.Struct("=IHBBI")  # glia_lb4_service
_PAIR = struct.Struct("=II")  # slot key, affinity-match key
_U32 = struct.Struct("=I")  # ids, slot value, affinity-match value
_REVNAT = struct.Struct("!4sHH")
_AFFINITY = struct.Struct("=QII")
_AFF_KEY = struct.Struct("=4sI")
# The packers must describe the BTF-checked mirrors (offsets: test_datapath_pure).
for _packer, _mirror in (
    (_ADDR_PORT, glia_lb4_key),
    (_ADDR_PORT, glia_lb4_backend),
    (_SERVICE, glia_lb4_service),
    (_PAIR, glia_lb4_slot_key),
    (_PAIR, glia_lb4_affm_key),
    (_U32, glia_lb4_slot),
    (_U32, glia_lb4_affm),
    (_REVNAT, glia_lb4_revnat),
    (_AFFINITY, glia_lb4_affinity),
    (_AFF_KEY, glia_lb4_aff_key),
):
    if _packer.size != sizeof(_mirror):
        raise ImportError(
            f"packer of {_mirror.__name__} is {_packer.size} bytes, C has {sizeof(_mirror)}"
        )


def _addr(ip: str) -> bytes:
    try:
        return socket.inet_aton(ip)
    except OSError:
        raise ValueError(f"{ip!r} is not an IPv4 address") from None


def _check_table(svc_id: int, table: tuple[int, ...]) -> None:
    if len(table) != LB_MAGLEV_M:
        raise DatapathError(
            f"Maglev table of service {svc_id} has {len(table)} slots; the datapath's has "
            f"{LB_MAGLEV_M}"
        )


@dataclass(frozen=True, slots=True)
class AffinityRow:
    """One ClientIP affinity entry (glia_lb4_aff_v1)."""

    client: str
    svc_id: int
    backend_id: int
    last_used_ns: int  # CLOCK_MONOTONIC


class LBMaps:
    """The lb4 maps of one node."""

    def __init__(
        self,
        services: BPFMap[glia_lb4_key, glia_lb4_service],
        slots: BPFMap[glia_lb4_slot_key, glia_lb4_slot],
        maglev: BPFMap[c_uint32, glia_lb4_maglev],
        backends: BPFMap[c_uint32, glia_lb4_backend],
        revnat: BPFMap[c_uint32, glia_lb4_revnat],
        affinity: BPFMap[glia_lb4_aff_key, glia_lb4_affinity],
        affinity_match: BPFMap[glia_lb4_affm_key, glia_lb4_affm],
    ) -> None:
        self.services = services
        self.slots = slots
        self.maglev = maglev
        self.backends = backends
        self.revnat = revnat
        self.affinity = affinity
        self.affinity_match = affinity_match

    @classmethod
    def open(cls, fd_for: Callable[[MapSpec], int]) -> LBMaps:
        """Open every lb4 map with an fd from ``fd_for(spec)`` (owned from then on)."""
        opened: list[BPFMap[Any, Any]] = []

        def get(spec: MapSpec, key: type[_K], value: type[_V]) -> BPFMap[_K, _V]:
            m = BPFMap(fd_for(spec), spec, key, value)
            opened.append(m)
            return m

        try:
            return cls(
                get(LB_SERVICES, glia_lb4_key, glia_lb4_service),
                get(LB_SLOTS, glia_lb4_slot_key, glia_lb4_slot),
                get(LB_MAGLEV, c_uint32, glia_lb4_maglev),
                get(LB_BACKENDS, c_uint32, glia_lb4_backend),
                get(LB_REVNAT, c_uint32, glia_lb4_revnat),
                get(LB_AFFINITY, glia_lb4_aff_key, glia_lb4_affinity),
                get(LB_AFFMATCH, glia_lb4_affm_key, glia_lb4_affm),
            )
        except BaseException:
            for m in opened:
                m.close()
            raise

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> LBMaps:
        """For readers without a loaded Datapath (the CLI, tests)."""
        return cls.open(lambda spec: libbpf.obj_get(str(Path(pin_dir) / spec.name)))

    def _all(self) -> tuple[BPFMap[Any, Any], ...]:
        return (
            self.services,
            self.slots,
            self.maglev,
            self.backends,
            self.revnat,
            self.affinity,
            self.affinity_match,
        )

    def close(self) -> None:
        for m in self._all():
            m.close()

    # --- read -------------------------------------------------------------

    def read(self) -> MapContents:
        """Everything the maps hold (the affinity LRU aside)."""
        out = MapContents()
        keys, values = self.services.items_raw()
        for (vip, port, proto, _), (svc_id, count, flags, _, timeout) in zip(
            _ADDR_PORT.iter_unpack(keys), _SERVICE.iter_unpack(values), strict=True
        ):
            out.services[Frontend(socket.inet_ntoa(vip), port, proto)] = ServiceEntry(
                svc_id, count, flags, timeout
            )
        keys, values = self.slots.items_raw()
        for (svc_id, slot), (backend_id,) in zip(
            _PAIR.iter_unpack(keys), _U32.iter_unpack(values), strict=True
        ):
            out.slots[(svc_id, slot)] = backend_id
        keys, values = self.backends.items_raw()
        for (backend_id,), (ip, port, proto, _) in zip(
            _U32.iter_unpack(keys), _ADDR_PORT.iter_unpack(values), strict=True
        ):
            out.backends[backend_id] = BackendAddr(socket.inet_ntoa(ip), port, proto)
        keys, values = self.revnat.items_raw()
        for (svc_id,), (vip, port, _) in zip(
            _U32.iter_unpack(keys), _REVNAT.iter_unpack(values), strict=True
        ):
            out.revnat[svc_id] = RevNat(socket.inet_ntoa(vip), port)
        keys, values = self.maglev.items_raw()
        size = self.maglev.spec.value_size
        for i, (svc_id,) in enumerate(_U32.iter_unpack(keys)):
            table = array("I")
            table.frombytes(values[i * size : (i + 1) * size])
            out.maglev[svc_id] = tuple(table)
        keys, _ = self.affinity_match.items_raw()
        out.affinity_match = {(b, s) for b, s in _PAIR.iter_unpack(keys)}
        return out

    def affinity_entries(self) -> list[AffinityRow]:
        keys, values = self.affinity.items_raw()
        return [
            AffinityRow(socket.inet_ntoa(client), svc_id, backend_id, last_used)
            for (client, svc_id), (last_used, backend_id, _) in zip(
                _AFF_KEY.iter_unpack(keys), _AFFINITY.iter_unpack(values), strict=True
            )
        ]

    # --- write ------------------------------------------------------------

    def apply(self, changes: MapChanges) -> None:
        """Write ``changes``; each map in batches.

        Order: everything a service entry points at (backends, slots, Maglev
        tables, reverse NAT, affinity matches) before the service entries, so
        a count never exposes a slot not written yet; then the service
        entries; then deletions, services first, so nothing still reachable
        is removed. A shrinking service (count 3 -> 2) has its slots
        rewritten, then its count lowered, then its last slot deleted.
        """
        u = changes.upsert
        if u.backends:
            self.backends.update_raw(
                b"".join(_U32.pack(i) for i in u.backends),
                b"".join(
                    _ADDR_PORT.pack(_addr(b.ip), b.port, b.proto, 0) for b in u.backends.values()
                ),
            )
        if u.slots:
            self.slots.update_raw(
                b"".join(_PAIR.pack(s, n) for s, n in u.slots),
                b"".join(_U32.pack(b) for b in u.slots.values()),
            )
        if u.maglev:
            for svc_id, table in u.maglev.items():
                _check_table(svc_id, table)
            self.maglev.update_raw(
                b"".join(_U32.pack(s) for s in u.maglev),
                b"".join(array("I", t).tobytes() for t in u.maglev.values()),
            )
        if u.revnat:
            self.revnat.update_raw(
                b"".join(_U32.pack(s) for s in u.revnat),
                b"".join(_REVNAT.pack(_addr(r.vip), r.port, 0) for r in u.revnat.values()),
            )
        if u.affinity_match:
            self.affinity_match.update_raw(
                b"".join(_PAIR.pack(b, s) for b, s in u.affinity_match),
                _U32.pack(0) * len(u.affinity_match),
            )
        if u.services:
            self.services.update_raw(
                b"".join(_ADDR_PORT.pack(_addr(f.vip), f.port, f.proto, 0) for f in u.services),
                b"".join(
                    _SERVICE.pack(e.svc_id, e.ready_count, e.flags, 0, e.affinity_timeout)
                    for e in u.services.values()
                ),
            )
        if changes.delete_services:
            self.services.delete_raw(
                b"".join(
                    _ADDR_PORT.pack(_addr(f.vip), f.port, f.proto, 0)
                    for f in changes.delete_services
                )
            )
        if changes.delete_slots:
            self.slots.delete_raw(b"".join(_PAIR.pack(s, n) for s, n in changes.delete_slots))
        if changes.delete_maglev:
            self.maglev.delete_raw(b"".join(_U32.pack(s) for s in changes.delete_maglev))
        if changes.delete_revnat:
            self.revnat.delete_raw(b"".join(_U32.pack(s) for s in changes.delete_revnat))
        if changes.delete_affinity_match:
            self.affinity_match.delete_raw(
                b"".join(_PAIR.pack(b, s) for b, s in changes.delete_affinity_match)
            )
        if changes.delete_backends:
            self.backends.delete_raw(b"".join(_U32.pack(b) for b in changes.delete_backends))
        if changes.flush_affinity:
            self.flush_affinity(changes.flush_affinity)

    def flush_affinity(self, svc_ids: Iterable[int]) -> int:
        """Delete the ClientIP affinity entries of these services; number deleted."""
        wanted = set(svc_ids)
        keys, _ = self.affinity.items_raw()
        size = self.affinity.spec.key_size
        doomed = b"".join(
            keys[i * size : (i + 1) * size]
            for i, (_, svc_id) in enumerate(_AFF_KEY.iter_unpack(keys))
            if svc_id in wanted
        )
        return self.affinity.delete_raw(doomed) if doomed else 0

    # --- accounting ---------------------------------------------------------

    def memory(self) -> dict[str, int]:
        """Bytes the kernel charges per map (memlock), by map name."""
        return {m.spec.name: memlock_bytes(m.fd) for m in self._all()}
