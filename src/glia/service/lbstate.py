"""What the lb4 maps hold, as planned or adopted: :class:`LBState` and its parts.

Pure. :mod:`glia.service.lbplan` makes these, :mod:`glia.service.lbdiff`
compares two of them, :mod:`glia.service.lbsync` keeps the current one and
shows it (``glia bpf lb list``). :meth:`LBState.from_maps` adopts the maps'
content after an agent restart, ids included, and :meth:`LBState.contents`
gives the entries a state stands for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from glia.datapath.lbtypes import (
    LB_F_AFFINITY,
    LB_F_HOSTPORT,
    LB_F_MAGLEV,
    BackendAddr,
    Frontend,
    MapContents,
    RevNat,
    ServiceEntry,
)
from glia.model.service import ClusterService, LBAlgorithm
from glia.service.lbids import IdPool, adopted_pool


def service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


class BackendView(NamedTuple):
    """A backend of a frontend as the operator published it (ready or not)."""

    addr: BackendAddr
    ready: bool
    node: str
    cluster: str
    endpoint: str
    # Global Services (glia.service.merge): on the side the affinity prefers, of a
    # stale cluster, or healthy but held back from new connections.
    preferred: bool = False
    stale: bool = False
    standby: bool = False


class FrontendPlan(NamedTuple):
    """Everything the maps hold for one frontend."""

    frontend: Frontend
    svc_id: int
    service: str  # "namespace/name"; "" for a frontend adopted from the maps
    algorithm: LBAlgorithm
    affinity_timeout: int  # seconds; 0 = no ClientIP affinity
    slots: tuple[int, ...]  # backend ids of the ready backends, in slot order
    addrs: tuple[BackendAddr, ...]  # their addresses (known ones, when adopted)
    maglev: tuple[int, ...] | None  # Maglev table (backend ids) when Maglev and any ready
    backends: tuple[BackendView, ...]  # all backends, ready or not (display only)
    host_port: bool = False  # a host port of a local endpoint (ClusterService.host_port)

    @property
    def flags(self) -> int:
        flags = LB_F_MAGLEV if self.algorithm == LBAlgorithm.MAGLEV else 0
        flags |= LB_F_HOSTPORT if self.host_port else 0
        return flags | (LB_F_AFFINITY if self.affinity_timeout else 0)

    @property
    def entry(self) -> ServiceEntry:
        return ServiceEntry(self.svc_id, len(self.slots), self.flags, self.affinity_timeout)


@dataclass(frozen=True, slots=True)
class ServicePlan:
    source: ClusterService
    frontends: tuple[Frontend, ...]  # the frontends it holds
    conflicts: tuple[Frontend, ...] = ()  # the ones another Service holds


@dataclass(frozen=True)
class LBState:
    """A planned (or adopted) content of the lb4 maps. Treat as immutable."""

    frontends: Mapping[Frontend, FrontendPlan] = field(default_factory=dict)
    services: Mapping[str, ServicePlan] = field(default_factory=dict)
    backend_ids: Mapping[BackendAddr, int] = field(default_factory=dict)
    backend_refs: Mapping[BackendAddr, int] = field(default_factory=dict)  # frontends using it
    svc_ids: IdPool = field(default_factory=IdPool)
    be_ids: IdPool = field(default_factory=IdPool)
    conflicts: Mapping[str, tuple[Frontend, ...]] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)  # service -> why it was skipped
    # The maps' real content when adopted (from_maps); the next diff starts from it.
    actual: MapContents | None = None

    @classmethod
    def from_maps(cls, contents: MapContents) -> LBState:
        """Adopt what the maps hold (after an agent restart)."""
        frontends: dict[Frontend, FrontendPlan] = {}
        backend_ids: dict[BackendAddr, int] = {}
        refs: dict[BackendAddr, int] = {}
        for addr_id, addr in contents.backends.items():
            backend_ids.setdefault(addr, addr_id)
        by_id = {i: a for a, i in backend_ids.items()}
        for f, e in contents.services.items():
            slots = tuple(contents.slots.get((e.svc_id, i), 0) for i in range(e.ready_count))
            maglev = contents.maglev.get(e.svc_id) if e.flags & LB_F_MAGLEV else None
            if maglev is not None and set(maglev) != set(slots):
                maglev = None  # stale (interrupted update): recomputed by the next plan
            addrs = tuple(by_id[b] for b in slots if b in by_id)
            for addr in addrs:
                refs[addr] = refs.get(addr, 0) + 1
            frontends[f] = FrontendPlan(
                frontend=f,
                svc_id=e.svc_id,
                service="",
                algorithm=LBAlgorithm.MAGLEV if e.flags & LB_F_MAGLEV else LBAlgorithm.RANDOM,
                affinity_timeout=e.affinity_timeout if e.flags & LB_F_AFFINITY else 0,
                slots=slots,
                addrs=addrs,
                maglev=maglev,
                backends=tuple(BackendView(a, True, "", "", "") for a in addrs),
                host_port=bool(e.flags & LB_F_HOSTPORT),
            )
        used_svc = {fp.svc_id for fp in frontends.values()}
        seen_svc = (
            used_svc
            | set(contents.revnat)
            | set(contents.maglev)
            | {s for s, _ in contents.slots}
            | {s for _, s in contents.affinity_match}
        )
        used_be = {backend_ids[a] for a in refs}
        seen_be = (
            set(contents.backends)
            | set(contents.slots.values())
            | {b for b, _ in contents.affinity_match}
            | {b for t in contents.maglev.values() for b in set(t)}
        )
        return cls(
            frontends=frontends,
            backend_ids={a: i for a, i in backend_ids.items() if a in refs},
            backend_refs=refs,
            svc_ids=adopted_pool(used_svc, seen_svc),
            be_ids=adopted_pool(used_be, seen_be),
            actual=contents,
        )

    def contents(self) -> MapContents:
        """The map content this state stands for."""
        out = MapContents()
        for fp in self.frontends.values():
            add_frontend(out, fp)
        out.backends = {i: a for a, i in self.backend_ids.items()}
        return out


def frontend_contents(fp: FrontendPlan) -> MapContents:
    """The map entries of one frontend (backends aside)."""
    out = MapContents()
    add_frontend(out, fp)
    return out


def add_frontend(out: MapContents, fp: FrontendPlan) -> None:
    """Add one frontend's entries to ``out`` (backends aside)."""
    out.services[fp.frontend] = fp.entry
    out.revnat[fp.svc_id] = RevNat(fp.frontend.vip, fp.frontend.port)
    for slot, backend_id in enumerate(fp.slots):
        out.slots[(fp.svc_id, slot)] = backend_id
    if fp.maglev is not None:
        out.maglev[fp.svc_id] = fp.maglev
    if fp.affinity_timeout:
        out.affinity_match.update((b, fp.svc_id) for b in fp.slots)
