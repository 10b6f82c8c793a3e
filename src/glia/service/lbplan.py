"""Plan the lb4 maps from ClusterService records (pure).

Called by glia.service.lbsync.ServiceMapSync (the only writer of the maps):
``plan(services, previous)`` turns the full desired set of ClusterServices
into an :class:`LBState`, ``update(previous, upserts, deletes)`` does the same
for a few changed ones, and ``diff(old, new)`` gives the
:class:`~glia.datapath.lbtypes.MapChanges` that take the maps from one to the
other. No I/O: everything is tested without a kernel (tests/unit/test_lbplan.py).

Decisions:
- One frontend per (ClusterIP, port, protocol) of a Service, with its own
  service id, which is also its reverse-NAT index. Ids are stable: a frontend
  that exists before and after keeps its id; ids of frontends that went away
  are reused only by a later call (never within the call that released
  them), so nothing keyed by a stale id (affinity) meets a new owner at once.
- Backends are identified by (IP, port, protocol) and shared by all
  frontends that use them, with one backend id each, kept while any frontend
  references it.
- Only READY backends get slots (and Maglev entries), sorted by address so
  every node and every restart agrees. Not-ready backends are not in the maps
  at all: conntrack entries hold the backend's address itself, so
  connections to a withdrawn backend keep working without its entry. They
  stay in the plan (``FrontendPlan.backends``) for `glia bpf lb list`.
- Two Services claiming the same frontend: the one already holding it keeps
  it, otherwise the lowest namespace/name; the other is recorded in
  ``LBState.conflicts`` and gets the frontend when it is released.
- A restarted agent adopts the maps: :meth:`LBState.from_maps` reads their
  content back (ids included), the first plan keeps the ids of frontends and
  backends that are still wanted, and the first diff is computed against the
  maps' real content, so live entries are never dropped and leftovers go.
"""

from __future__ import annotations

import functools
import heapq
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from glia.datapath.lbtypes import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    LB_F_AFFINITY,
    LB_F_MAGLEV,
    BackendAddr,
    Frontend,
    MapChanges,
    MapContents,
    RevNat,
    ServiceEntry,
)
from glia.model.service import Backend, ClusterService, LBAlgorithm, Protocol
from glia.service.maglev import DEFAULT_M, maglev_table

MAX_SLOTS = 0xFFFF  # glia_lb4_service.count is a __u16
MAX_ID = 0xFFFFFFFF
_PROTOCOLS = {Protocol.TCP: IPPROTO_TCP, Protocol.UDP: IPPROTO_UDP}


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

    @property
    def flags(self) -> int:
        flags = LB_F_MAGLEV if self.algorithm == LBAlgorithm.MAGLEV else 0
        return flags | (LB_F_AFFINITY if self.affinity_timeout else 0)

    @property
    def entry(self) -> ServiceEntry:
        return ServiceEntry(self.svc_id, len(self.slots), self.flags, self.affinity_timeout)


@dataclass(frozen=True, slots=True)
class ServicePlan:
    source: ClusterService
    frontends: tuple[Frontend, ...]  # the frontends it holds
    conflicts: tuple[Frontend, ...] = ()  # the ones another Service holds


@dataclass(frozen=True, slots=True)
class _IdPool:
    """Ids 1..MAX_ID: ``free`` are reusable now, ``releasing`` from the next plan on."""

    next: int = 1
    free: tuple[int, ...] = ()
    releasing: tuple[int, ...] = ()


class _Allocator:
    def __init__(self, pool: _IdPool, what: str) -> None:
        self._next = pool.next
        self._free = list(pool.free)
        heapq.heapify(self._free)
        self._released = list(pool.releasing)
        self._what = what

    def take(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        if self._next > MAX_ID:
            raise PlanError(f"out of {self._what} ids")
        self._next += 1
        return self._next - 1

    def release(self, ident: int) -> None:
        self._released.append(ident)

    def pool(self) -> _IdPool:
        return _IdPool(self._next, tuple(sorted(self._free + self._released)), ())


class PlanError(Exception):
    """The plan cannot be made (id space exhausted)."""


@dataclass(frozen=True)
class LBState:
    """A planned (or adopted) content of the lb4 maps. Treat as immutable."""

    frontends: Mapping[Frontend, FrontendPlan] = field(default_factory=dict)
    services: Mapping[str, ServicePlan] = field(default_factory=dict)
    backend_ids: Mapping[BackendAddr, int] = field(default_factory=dict)
    backend_refs: Mapping[BackendAddr, int] = field(default_factory=dict)  # frontends using it
    svc_ids: _IdPool = field(default_factory=_IdPool)
    be_ids: _IdPool = field(default_factory=_IdPool)
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
            svc_ids=_adopted_pool(used_svc, seen_svc),
            be_ids=_adopted_pool(used_be, seen_be),
            actual=contents,
        )

    def contents(self) -> MapContents:
        """The map content this state stands for."""
        out = MapContents()
        for fp in self.frontends.values():
            _add_frontend(out, fp)
        out.backends = {i: a for a, i in self.backend_ids.items()}
        return out


def _adopted_pool(used: set[int], seen: set[int]) -> _IdPool:
    seen = {i for i in seen if 0 < i <= MAX_ID}
    top = max(seen, default=0)
    free = tuple(i for i in range(1, top + 1) if i not in seen)
    return _IdPool(top + 1, free, tuple(sorted(seen - used)))


def frontend_contents(fp: FrontendPlan) -> MapContents:
    """The map entries of one frontend (backends aside)."""
    out = MapContents()
    _add_frontend(out, fp)
    return out


def _add_frontend(out: MapContents, fp: FrontendPlan) -> None:
    out.services[fp.frontend] = fp.entry
    out.revnat[fp.svc_id] = RevNat(fp.frontend.vip, fp.frontend.port)
    for slot, backend_id in enumerate(fp.slots):
        out.slots[(fp.svc_id, slot)] = backend_id
    if fp.maglev is not None:
        out.maglev[fp.svc_id] = fp.maglev
    if fp.affinity_timeout:
        out.affinity_match.update((b, fp.svc_id) for b in fp.slots)


# --- planning -----------------------------------------------------------------


def plan(
    services: Iterable[ClusterService], previous: LBState | None = None, *, m: int = DEFAULT_M
) -> LBState:
    """The maps' content for exactly ``services`` (the full desired set)."""
    prev = previous or LBState()
    desired: dict[str, ClusterService] = {}
    for svc in services:
        key = service_key(svc.namespace, svc.name)
        if key in desired:
            raise ValueError(f"service {key} is listed twice")
        desired[key] = svc
    upserts = {k: s for k, s in desired.items() if _changed(prev, k, s)}
    deletes = {k for k in prev.services if k not in desired}
    return _replan(prev, upserts, deletes, drop_adopted=True, m=m)


def update(
    previous: LBState | None,
    upserts: Iterable[ClusterService] = (),
    deletes: Iterable[str] = (),
    *,
    m: int = DEFAULT_M,
) -> LBState:
    """``previous`` with some services added or changed and some (keys "ns/name") gone.

    Frontends adopted from the maps and not claimed stay untouched (a later
    full :func:`plan` decides about them).
    """
    prev = previous or LBState()
    changed = {service_key(s.namespace, s.name): s for s in upserts}
    changed = {k: s for k, s in changed.items() if _changed(prev, k, s)}
    gone = {k for k in deletes if (k in prev.services or k in prev.errors) and k not in changed}
    return _replan(prev, changed, gone, drop_adopted=False, m=m)


def _changed(prev: LBState, key: str, svc: ClusterService) -> bool:
    held = prev.services.get(key)
    return held is None or held.source != svc


def _replan(
    prev: LBState,
    upserts: dict[str, ClusterService],
    deletes: set[str],
    *,
    drop_adopted: bool,
    m: int,
) -> LBState:
    frontends = dict(prev.frontends)
    services = dict(prev.services)
    conflicts = dict(prev.conflicts)
    errors = {k: v for k, v in prev.errors.items() if k not in upserts and k not in deletes}
    refs = dict(prev.backend_refs)
    backend_ids = dict(prev.backend_ids)
    svc_alloc = _Allocator(prev.svc_ids, "service")
    be_alloc = _Allocator(prev.be_ids, "backend")

    # Services that lost a frontend to another may get it now: plan them again.
    for key in conflicts:
        if key not in upserts and key not in deletes and key in services:
            upserts[key] = services[key].source
    released: dict[Frontend, FrontendPlan] = {}

    def release(f: Frontend) -> None:
        fp = frontends.pop(f)
        released[f] = fp
        for addr in fp.addrs:
            refs[addr] -= 1

    for key in deletes | set(upserts):
        held = services.pop(key, None)
        conflicts.pop(key, None)
        if held is not None:
            for f in held.frontends:
                release(f)
    if drop_adopted:
        for f in [f for f, fp in frontends.items() if not fp.service]:
            release(f)

    valid: dict[str, ClusterService] = {}
    for key, svc in upserts.items():
        problem = _invalid(svc)
        if problem:
            errors[key] = problem
        else:
            valid[key] = svc
    # Who wants which frontend, so a Service that held one before keeps it.
    wanted = {key: set(_frontends_of(svc)) for key, svc in valid.items()}

    for key in sorted(valid):
        svc = valid[key]
        held_fronts: list[Frontend] = []
        lost: list[Frontend] = []
        for port, f in zip(svc.ports, _frontends_of(svc), strict=True):
            owner = frontends.get(f)
            if owner is not None and owner.service == key:
                continue  # the same port listed twice
            if owner is not None and owner.service:
                lost.append(f)
                continue
            before = released.get(f)
            if (
                before is not None
                and before.service not in ("", key)
                and f in wanted.get(before.service, ())
            ):
                lost.append(f)
                continue
            if owner is not None:  # adopted and now claimed
                release(f)
            old = released.get(f)
            svc_id = old.svc_id if old is not None else svc_alloc.take()
            fp = _frontend_plan(f, svc_id, key, svc, port.port, old, backend_ids, be_alloc, m)
            for addr in fp.addrs:
                refs[addr] = refs.get(addr, 0) + 1
            frontends[f] = fp
            held_fronts.append(f)
            released.pop(f, None)
        services[key] = ServicePlan(svc, tuple(held_fronts), tuple(lost))
        if lost:
            conflicts[key] = tuple(lost)

    for fp in released.values():
        svc_alloc.release(fp.svc_id)
    for addr in [a for a, n in refs.items() if n <= 0]:
        del refs[addr]
        be_alloc.release(backend_ids.pop(addr))
    return LBState(
        frontends=frontends,
        services=services,
        backend_ids=backend_ids,
        backend_refs=refs,
        svc_ids=svc_alloc.pool(),
        be_ids=be_alloc.pool(),
        conflicts=conflicts,
        errors=errors,
    )


def _frontends_of(svc: ClusterService) -> list[Frontend]:
    return [Frontend(svc.cluster_ip, p.port, _PROTOCOLS[p.protocol]) for p in svc.ports]


@functools.lru_cache(maxsize=65536)
def _ip_key(ip: str) -> bytes:
    return socket.inet_aton(ip)


@functools.lru_cache(maxsize=65536)
def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)  # strict dotted quad, and fast
    except (OSError, TypeError):
        return False
    return True


def _invalid(svc: ClusterService) -> str:
    if not _is_ipv4(svc.cluster_ip):
        return f"clusterIP {svc.cluster_ip!r} is not an IPv4 address"
    for port in svc.ports:
        if not 1 <= port.port <= 0xFFFF:
            return f"port {port.port} is out of range 1..65535"
        if port.protocol not in _PROTOCOLS:
            return f"protocol {port.protocol!r} is not TCP or UDP"
    for b in svc.backends:
        if not _is_ipv4(b.ip):
            return f"backend {b.ip!r} is not an IPv4 address"
        if not 1 <= b.port <= 0xFFFF:
            return f"backend port {b.port} of {b.ip} is out of range 1..65535"
    if svc.session_affinity and not 1 <= svc.affinity_timeout <= MAX_ID:
        return f"affinity timeout {svc.affinity_timeout} is out of range"
    return ""


def _frontend_plan(
    f: Frontend,
    svc_id: int,
    key: str,
    svc: ClusterService,
    port: int,
    old: FrontendPlan | None,
    backend_ids: dict[BackendAddr, int],
    be_alloc: _Allocator,
    m: int,
) -> FrontendPlan:
    views = sorted(
        (_view(b, f.proto) for b in svc.backends if _serves(b, port, f.proto)),
        key=lambda v: (not v.ready, _ip_key(v.addr.ip), v.addr.port),
    )
    unique: dict[BackendAddr, BackendView] = {}
    for v in views:  # one address listed twice counts once (ready wins)
        unique.setdefault(v.addr, v)
    ready = [v.addr for v in unique.values() if v.ready][:MAX_SLOTS]
    slots = []
    for addr in ready:
        backend_id = backend_ids.get(addr)
        if backend_id is None:
            backend_id = backend_ids[addr] = be_alloc.take()
        slots.append(backend_id)
    algorithm = svc.lb_algorithm
    table: tuple[int, ...] | None = None
    if algorithm == LBAlgorithm.MAGLEV and slots:
        if old is not None and old.maglev is not None and set(old.slots) == set(slots):
            table = old.maglev  # same backends, same ids: the same table
        else:
            ids = {str(a): i for a, i in zip(ready, slots, strict=True)}
            table = tuple(ids[name] for name in maglev_table(ids, m))
    return FrontendPlan(
        frontend=f,
        svc_id=svc_id,
        service=key,
        algorithm=algorithm,
        affinity_timeout=svc.affinity_timeout if svc.session_affinity else 0,
        slots=tuple(slots),
        addrs=tuple(ready),
        maglev=table,
        backends=tuple(unique.values()),
    )


def _serves(b: Backend, port: int, proto: int) -> bool:
    return b.frontend_port == port and _PROTOCOLS.get(b.protocol) == proto


def _view(b: Backend, proto: int) -> BackendView:
    return BackendView(
        BackendAddr(b.ip, b.port, proto),
        b.ready,
        b.node,
        b.cluster,
        b.endpoint,
        b.preferred,
        b.stale,
        b.standby,
    )


# --- diff ---------------------------------------------------------------------


def diff(old: LBState | None, new: LBState) -> MapChanges:
    """The map operations that turn ``old``'s content into ``new``'s."""
    if old is None or old.actual is not None:
        before = old.actual if old is not None and old.actual is not None else MapContents()
        return _diff_contents(before, new.contents())
    ch = MapChanges()
    for f, fp in new.frontends.items():
        ofp = old.frontends.get(f)
        if ofp is not fp:
            _diff_frontend(ch, ofp, fp)
    for f, ofp in old.frontends.items():
        if f not in new.frontends:
            _diff_frontend(ch, ofp, None)
    if old.backend_ids is not new.backend_ids:
        before_be = {i: a for a, i in old.backend_ids.items()}
        after_be = {i: a for a, i in new.backend_ids.items()}
        ch.upsert.backends = {i: a for i, a in after_be.items() if before_be.get(i) != a}
        ch.delete_backends = [i for i in before_be if i not in after_be]
    _drop_rewritten(ch)
    return ch


def _diff_frontend(ch: MapChanges, old: FrontendPlan | None, new: FrontendPlan | None) -> None:
    if old is None and new is not None:  # the common case at start-up: all new
        _add_frontend(ch.upsert, new)
        return
    before, after = MapContents(), MapContents()
    if old is not None:
        _add_frontend(before, old)
    if new is not None:
        _add_frontend(after, new)
    _merge(ch, before, after)
    if old is None or not old.affinity_timeout:
        return
    if new is None or not new.affinity_timeout or new.svc_id != old.svc_id:
        ch.flush_affinity.add(old.svc_id)


def _diff_contents(before: MapContents, after: MapContents) -> MapChanges:
    ch = MapChanges()
    _merge(ch, before, after)
    ch.upsert.backends = {i: a for i, a in after.backends.items() if before.backends.get(i) != a}
    ch.delete_backends = [i for i in before.backends if i not in after.backends]
    keep = {e.svc_id for e in after.services.values() if e.flags & LB_F_AFFINITY}
    ch.flush_affinity = {
        e.svc_id for e in before.services.values() if e.flags & LB_F_AFFINITY
    } - keep
    _drop_rewritten(ch)
    return ch


def _merge(ch: MapChanges, before: MapContents, after: MapContents) -> None:
    """Add the changes between two partial contents (services .. affinity matches)."""
    u = ch.upsert
    for f, e in after.services.items():
        if before.services.get(f) != e:
            u.services[f] = e
    ch.delete_services += [f for f in before.services if f not in after.services]
    for s, r in after.revnat.items():
        if before.revnat.get(s) != r:
            u.revnat[s] = r
    ch.delete_revnat += [s for s in before.revnat if s not in after.revnat]
    for k, b in after.slots.items():
        if before.slots.get(k) != b:
            u.slots[k] = b
    ch.delete_slots += [k for k in before.slots if k not in after.slots]
    for s, t in after.maglev.items():
        if before.maglev.get(s) != t:
            u.maglev[s] = t
    ch.delete_maglev += [s for s in before.maglev if s not in after.maglev]
    u.affinity_match |= after.affinity_match - before.affinity_match
    ch.delete_affinity_match += list(before.affinity_match - after.affinity_match)


def _drop_rewritten(ch: MapChanges) -> None:
    """A key both deleted (by one frontend) and written (by another) must stay."""
    u = ch.upsert
    ch.delete_services = [k for k in ch.delete_services if k not in u.services]
    ch.delete_revnat = [k for k in ch.delete_revnat if k not in u.revnat]
    ch.delete_slots = [k for k in ch.delete_slots if k not in u.slots]
    ch.delete_maglev = [k for k in ch.delete_maglev if k not in u.maglev]
    ch.delete_affinity_match = [k for k in ch.delete_affinity_match if k not in u.affinity_match]
    ch.delete_backends = [k for k in ch.delete_backends if k not in u.backends]
