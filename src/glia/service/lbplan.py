"""Plan the lb4 maps from ClusterService records (pure).

Called by glia.service.lbsync.ServiceMapSync (the only writer of the maps):
``plan(services, previous)`` turns the full desired set of ClusterServices
into an :class:`~glia.service.lbstate.LBState`, ``update(previous, upserts,
deletes)`` does the same for a few changed ones, and
:func:`glia.service.lbdiff.diff` gives the
:class:`~glia.datapath.lbtypes.MapChanges` that take the maps from one to the
other. Ids come from :mod:`glia.service.lbids`. No I/O: everything is tested
without a kernel (tests/unit/test_lbplan.py).

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
- A host port (``ClusterService.host_port``, made by the agent for its own
  endpoints, glia.service.hostports) is a frontend like any other, with
  ``LB_F_HOSTPORT`` in its flags (the only frontends from_netdev balances).
- A restarted agent adopts the maps: ``LBState.from_maps`` reads their
  content back (ids included), the first plan keeps the ids of frontends and
  backends that are still wanted, and the first diff is computed against the
  maps' real content, so live entries are never dropped and leftovers go.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterable

from glia.datapath.lbtypes import IPPROTO_TCP, IPPROTO_UDP, BackendAddr, Frontend
from glia.model.service import Backend, ClusterService, LBAlgorithm, Protocol
from glia.service.lbids import MAX_ID, Allocator
from glia.service.lbstate import BackendView, FrontendPlan, LBState, ServicePlan, service_key
from glia.service.maglev import DEFAULT_M, maglev_table

MAX_SLOTS = 0xFFFF  # glia_lb4_service.count is a __u16
_PROTOCOLS = {Protocol.TCP: IPPROTO_TCP, Protocol.UDP: IPPROTO_UDP}


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
    svc_alloc = Allocator(prev.svc_ids, "service")
    be_alloc = Allocator(prev.be_ids, "backend")

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
    be_alloc: Allocator,
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
        host_port=svc.host_port,
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
