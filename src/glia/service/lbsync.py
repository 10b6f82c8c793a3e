"""Keeps a node's lb4 service maps equal to the cluster's ClusterServices.

Called by the agent (glia.agent.services): a reflector on the operator's
ClusterService records feeds :meth:`ServiceMapSync.set_services` (the full
set, once listed), then :meth:`~ServiceMapSync.upsert` and
:meth:`~ServiceMapSync.delete` per change. This is the only writer of the
lb4 maps. Each call plans the new content (glia.service.lbplan, pure), diffs
it with what was applied (glia.service.lbdiff, pure), and writes the
difference in batches on the datapath thread.

The first call adopts what the maps already hold (an agent restart keeps its
pinned maps): ids of frontends and backends still wanted are kept, so live
connections and affinity entries stay valid, and entries nobody wants any
more are removed by the first full set. A failed write re-adopts the maps
and retries with backoff until the maps match again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from glia.datapath.errors import DatapathError
from glia.datapath.lbtypes import (
    LB_F_AFFINITY,
    LB_F_HOSTPORT,
    LB_F_MAGLEV,
    PROTO_NAMES,
    BackendAddr,
    MapChanges,
    MapContents,
)
from glia.datapath.loader import Datapath
from glia.datapath.runner import RunDatapath
from glia.model.service import ClusterService, LBAlgorithm
from glia.service import lbplan
from glia.service.lbdiff import diff
from glia.service.lbids import PlanError
from glia.service.lbstate import (
    BackendView,
    LBState,
    frontend_contents,
    service_key,
)

log = logging.getLogger(__name__)

_RETRY_FIRST = 0.2
_RETRY_MAX = 10.0


class ServiceMapSync:
    def __init__(self, datapath: Datapath, run_dp: RunDatapath) -> None:
        self._dp = datapath
        self._run_dp = run_dp
        self._desired: dict[str, ClusterService] = {}
        self._full = False  # set_services was called: the desired set is complete
        self._state: LBState | None = None  # what the maps hold; None = adopt first
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self.last_error = ""
        self.last_changes: dict[str, int] = {}
        self.last_apply_seconds = 0.0
        self.applied = 0  # successful reconciliations

    # --- the reflector's calls ----------------------------------------------

    async def set_services(self, services: list[ClusterService]) -> None:
        """The full desired set: afterwards the maps hold exactly these services."""
        desired = {service_key(s.namespace, s.name): s for s in services}
        async with self._lock:
            self._desired = desired
            self._full = True
            await self._reconcile(lambda prev: lbplan.plan(desired.values(), prev))

    async def upsert(self, svc: ClusterService) -> None:
        async with self._lock:
            self._desired[service_key(svc.namespace, svc.name)] = svc
            await self._reconcile(lambda prev: lbplan.update(prev, [svc]))

    async def delete(self, namespace: str, name: str) -> None:
        key = service_key(namespace, name)
        async with self._lock:
            self._desired.pop(key, None)
            await self._reconcile(lambda prev: lbplan.update(prev, deletes=[key]))

    async def stop(self) -> None:
        """Cancel a pending retry (the maps stay as they are)."""
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None

    # --- reconciliation -------------------------------------------------------

    async def _reconcile(self, step: Any) -> None:
        """Plan with ``step(previous)`` (or from scratch after adopting) and apply."""
        try:
            if self._state is None:
                contents = await self._run_dp(self._dp.lb.read)
                with _gc_paused():
                    prev = LBState.from_maps(contents)
                    new = self._plan_all(prev)
                    changes = diff(prev, new)
            else:
                prev = self._state
                with _gc_paused():
                    new = step(prev)
                    changes = diff(prev, new)
            started = time.perf_counter()
            if not changes.is_empty():
                await self._run_dp(lambda: self._dp.lb.apply(changes))
            self.last_apply_seconds = time.perf_counter() - started
        except (DatapathError, PlanError) as e:
            self._state = None  # the maps may be half-written: adopt them again
            self.last_error = str(e)
            log.warning("programming the service maps failed: %s (retrying)", e)
            self._schedule_retry()
            return
        self._state = new
        self.last_error = ""
        self.last_changes = changes.summary()
        log.debug("service maps: %s in %.3fs", summarize(changes), self.last_apply_seconds)
        self.applied += 1
        for key, why in new.errors.items():
            log.warning("service %s is not programmed: %s", key, why)

    def _plan_all(self, adopted: LBState) -> LBState:
        if self._full:
            return lbplan.plan(self._desired.values(), adopted)
        # Only single upserts so far: keep whatever else the maps hold.
        return lbplan.update(adopted, self._desired.values())

    def _schedule_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_loop(), name="lb4-retry")

    async def _retry_loop(self) -> None:
        delay = _RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            async with self._lock:
                if self._state is not None:
                    return  # a later call succeeded meanwhile
                await self._reconcile(lambda prev: self._plan_all(prev))
                if self._state is not None:
                    return
            delay = min(delay * 2, _RETRY_MAX)

    # --- readers ----------------------------------------------------------------

    @property
    def state(self) -> LBState | None:
        """The applied plan (None before the first success or after a failure)."""
        return self._state

    def lb_rows(self) -> list[dict[str, Any]]:
        """`glia bpf lb list` rows: the maps read back, named from the plan.

        Reads the maps: call it on the datapath thread (``run_dp``).
        """
        return lb_rows(self._dp.lb.read(), self._state)

    def status(self) -> dict[str, Any]:
        state = self._state
        return {
            "ok": state is not None and not self.last_error,
            "services": len(self._desired),
            "frontends": len(state.frontends) if state else 0,
            "backends": len(state.backend_ids) if state else 0,
            "conflicts": {
                k: [str(f) for f in v] for k, v in (state.conflicts if state else {}).items()
            },
            "errors": dict(state.errors) if state else {},
            "last_error": self.last_error,
            "last_changes": self.last_changes,
            "last_apply_seconds": round(self.last_apply_seconds, 6),
        }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Planning 100,000 services allocates millions of objects, none of them in
    cycles; the cyclic collector would scan them again and again (half the
    time). Reference counting still frees everything meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def lb_rows(contents: MapContents, state: LBState | None) -> list[dict[str, Any]]:
    """Rows per frontend from the maps' content; names and not-ready backends from ``state``.

    Shape: ``{"frontend": "10.96.0.10:80/TCP", "vip", "port", "protocol",
    "svc_id", "service": "ns/name" | "", "algorithm": "random" | "maglev",
    "affinity_timeout": s (0 = none), "host_port": bool (a host port's frontend,
    docs/hostport.md), "count": ready backends, "backends":
    [{"address": "ip:port", "ip", "port", "id": int | None, "slot": int | None,
    "state": "ready" | "not-ready", "node": str, "cluster": str,
    "flags": ["preferred" | "stale" | "standby", ...]}], "in_sync": bool}``
    (``in_sync``: the maps hold what the plan says for this frontend).
    """
    planned = state.frontends if state is not None else {}
    rows = []
    for f in sorted(contents.services, key=lambda x: x.sort_key()):
        e = contents.services[f]
        fp = planned.get(f)
        views = {v.addr: v for v in fp.backends} if fp is not None else {}
        backends: list[dict[str, Any]] = []
        seen: set[BackendAddr] = set()
        for slot in range(e.ready_count):
            backend_id = contents.slots.get((e.svc_id, slot))
            addr = contents.backends.get(backend_id) if backend_id is not None else None
            if addr is None:
                backends.append(_backend_row(None, backend_id, slot, "missing", None))
                continue
            seen.add(addr)
            backends.append(_backend_row(addr, backend_id, slot, "ready", views.get(addr)))
        if fp is not None:
            for v in fp.backends:
                if not v.ready and v.addr not in seen:
                    backends.append(_backend_row(v.addr, None, None, "not-ready", v))
        in_sync = False
        if fp is not None:
            planned_contents = frontend_contents(fp)
            in_sync = (
                planned_contents.services.get(f) == e
                and all(contents.slots.get(k) == b for k, b in planned_contents.slots.items())
                and contents.maglev.get(e.svc_id) == planned_contents.maglev.get(e.svc_id)
            )
        rows.append(
            {
                "frontend": str(f),
                "vip": f.vip,
                "port": f.port,
                "protocol": PROTO_NAMES.get(f.proto, str(f.proto)),
                "svc_id": e.svc_id,
                "service": fp.service if fp is not None else "",
                "algorithm": (
                    LBAlgorithm.MAGLEV.value if e.flags & LB_F_MAGLEV else LBAlgorithm.RANDOM.value
                ),
                "affinity_timeout": e.affinity_timeout if e.flags & LB_F_AFFINITY else 0,
                "host_port": bool(e.flags & LB_F_HOSTPORT),
                "count": e.ready_count,
                "backends": backends,
                "in_sync": in_sync,
            }
        )
    return rows


def _backend_row(
    addr: BackendAddr | None,
    backend_id: int | None,
    slot: int | None,
    state: str,
    view: BackendView | None,
) -> dict[str, Any]:
    flags = (
        [f for f, on in (("preferred", view.preferred), ("stale", view.stale),
                         ("standby", view.standby)) if on]
        if view is not None
        else []
    )  # fmt: skip
    return {
        "address": str(addr) if addr is not None else "",
        "ip": addr.ip if addr is not None else "",
        "port": addr.port if addr is not None else 0,
        "id": backend_id,
        "slot": slot,
        "state": state,
        "node": view.node if view is not None else "",
        "cluster": view.cluster if view is not None else "",
        "flags": flags,
    }


def summarize(changes: MapChanges) -> str:
    """One line for logs: only the non-zero counts."""
    return ", ".join(f"{k} {v}" for k, v in changes.summary().items() if v) or "no change"
