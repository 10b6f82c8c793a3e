"""Publishes each declared Service's ClusterService record (operator, leader only).

Started by :class:`glia.operator.daemon.Operator` once it leads. Four
reflectors feed it: the pod CIDR allocations, the declared Services
(``glia/config/v1/services/``), the cluster's endpoints and the agents' probe
results (``BackendHealth`` per node). What they deliver is checked and kept by
:class:`~glia.operator.service_inputs.ServiceInputs` (endpoints and probe
results are untrusted: placed only inside their node's pod CIDR), which
marks only the Services a change can affect; after a short debounce (~20 ms,
so a burst of events costs one pass) the marked Services are resolved with the pure
:func:`glia.service.resolve.resolve` and written to
``glia/state/services/v1/<cluster>/<ns>/<name>`` only when the record changed,
many per etcd transaction. Records of deleted Services are removed, and on
start every record without a declared Service (stale) is deleted.

Surviving an etcd pause: endpoints and probe results live on their agents'
leases, so etcd deletes them all when it revokes the leases after a pause past
the TTL, and the agents put them back a moment later. The endpoint and health
reflectors therefore hold such deletes back (:mod:`glia.kvstore.grace`), and for
``hold`` seconds after start a record published before (by an earlier term or
process) is not rewritten with fewer ready backends: a resolver that starts in
that moment (the operator campaigning again) lists an incomplete cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from glia.aiotasks import cancel_and_wait
from glia.kvstore import keys
from glia.kvstore.client import Delete, KeyValue, KVClient, Put
from glia.kvstore.errors import KVStoreError
from glia.kvstore.grace import DEFAULT_GRACE, DeferredDeletes, defer_deletes
from glia.kvstore.reflector import Reflector, ReflectorHandler
from glia.model import codec
from glia.model.service import ClusterService
from glia.operator.service_inputs import Ref, ServiceInputs, ref_of
from glia.service.resolve import resolve
from glia.validate.bounds import ClusterBounds

log = logging.getLogger(__name__)

DEBOUNCE = 0.02
TXN_BATCH = 100  # writes per etcd transaction (etcd allows 128 by default)
BACKOFF_MAX = 5.0


class _Handler:
    """Reflector handler forwarding to two functions (of the resolver's inputs)."""

    def __init__(
        self,
        upsert: Callable[[str, KeyValue], None],
        delete: Callable[[str, KeyValue | None], None],
    ) -> None:
        self._upsert = upsert
        self._delete = delete

    def on_upsert(self, key: str, kv: KeyValue) -> None:
        self._upsert(key, kv)

    def on_delete(self, key: str, old: KeyValue | None) -> None:
        self._delete(key, old)

    def on_synced(self) -> None:
        return None


def loses_backends(old: ClusterService, new: ClusterService) -> bool:
    """Whether a backend ready in ``old`` is missing or not ready in ``new`` (pure)."""

    def ready(svc: ClusterService) -> set[tuple[str, int, str, int]]:
        return {(b.ip, b.port, b.protocol, b.frontend_port) for b in svc.backends if b.ready}

    return not ready(old) <= ready(new)


class ServiceResolver:
    def __init__(
        self,
        kv: KVClient,
        cluster: str,
        cluster_id: int,
        *,
        bounds: ClusterBounds | None = None,
        debounce: float = DEBOUNCE,
        grace: float = DEFAULT_GRACE,
        hold: float = DEFAULT_GRACE,
    ) -> None:
        self._kv = kv
        self._cluster = cluster
        self._cluster_id = cluster_id
        self._inputs = ServiceInputs(
            cluster, bounds or ClusterBounds(cluster, cluster_id), self._mark
        )
        self.rejects = self._inputs.rejects
        self._debounce = debounce
        self._grace = grace  # deletes of leased endpoints/probe results held back
        self._hold = hold  # inherited records keep their ready backends this long
        self._hold_until = 0.0
        self._inherited: set[Ref] = set()  # records listed at start, not yet rewritten
        self._held: set[Ref] = set()  # Services whose rewrite waits for the hold to end
        self._release: asyncio.Task[None] | None = None
        self._deferring: list[DeferredDeletes] = []
        self._records_prefix = keys.services(cluster)
        self._published: dict[Ref, ClusterService | None] = {}  # None: unreadable record
        self._dirty: set[Ref] = set()
        self._inflight = 0  # Services of the pass being written
        self._wake = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._reflectors: list[Reflector] = []
        self.writes = 0  # records put
        self.deletes = 0  # records deleted
        self.passes = 0  # debounced resolution passes
        self.errors = 0
        self.last_error: str | None = None

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Sync all inputs, publish/delete what is due, then follow changes."""
        self._hold_until = asyncio.get_running_loop().time() + self._hold
        items, _ = await self._kv.list(self._records_prefix)
        for item in items:
            ref = ref_of(item.key, self._records_prefix)
            if ref is None:
                continue
            try:
                self._published[ref] = codec.decode(ClusterService, item.value)
                self._inherited.add(ref)
            except codec.InvalidValue as e:
                log.warning("invalid ClusterService record %s (%s): rewriting it", item.key, e)
                self._published[ref] = None
        inputs = self._inputs
        self._deferring = [
            defer_deletes(
                _Handler(inputs.endpoint_upsert, inputs.endpoint_delete), self._kv, self._grace
            ),
            defer_deletes(
                _Handler(inputs.health_upsert, inputs.health_delete), self._kv, self._grace
            ),
        ]
        feeds: list[tuple[str, ReflectorHandler]] = [
            (keys.podcidr_nodes(self._cluster), _Handler(inputs.cidr_upsert, inputs.cidr_delete)),
            (inputs.config_prefix, _Handler(inputs.spec_upsert, inputs.spec_delete)),
            (keys.endpoints(self._cluster), self._deferring[0]),
            (keys.healths(self._cluster), self._deferring[1]),
        ]
        try:
            for prefix, handler in feeds:
                r = Reflector(self._kv, prefix, handler, name=f"services: {prefix}")
                await r.start()
                self._reflectors.append(r)
            dirty = set(inputs.specs) | set(self._published)
            self._dirty.clear()
            await self._flush(dirty)
        except BaseException:
            await self.stop()
            raise
        self._running = True
        self._task = asyncio.create_task(self._run(), name="service-resolver")
        self._release = asyncio.create_task(self._release_held(), name="service-hold")
        if self._dirty:
            self._wake.set()

    async def stop(self) -> None:
        self._running = False
        for task in (self._task, self._release):
            if task is not None:
                await cancel_and_wait(task)
        self._task = self._release = None
        for r in self._reflectors:
            await r.stop()
        self._reflectors.clear()
        for d in self._deferring:
            await d.stop(deliver=False)  # this resolver's view ends here
        self._deferring.clear()

    async def _release_held(self) -> None:
        await asyncio.sleep(max(0.0, self._hold_until - asyncio.get_running_loop().time()))
        self._inherited.clear()
        held, self._held = self._held, set()
        if held:
            log.info("hold after start over: resolving %d held Services", len(held))
        self._mark(held)

    def status(self) -> dict[str, Any]:
        return {
            "services": len(self._inputs.specs),
            "records": len(self._published),
            "endpoints": len(self._inputs.endpoints),
            "pending": len(self._dirty) + self._inflight,
            "held": len(self._held),
            "deferred_deletes": sum(len(d.pending()) for d in self._deferring),
            "writes": self.writes,
            "deletes": self.deletes,
            "passes": self.passes,
            "errors": self.errors,
            "last_error": self.last_error,
            **self.rejects.status(),
        }

    # --- the debounced writer ------------------------------------------------------

    def _mark(self, refs: Iterable[Ref]) -> None:
        before = len(self._dirty)
        self._dirty.update(refs)
        if self._running and len(self._dirty) != before:
            self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._debounce)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await self._flush(dirty)
                backoff = 0.1
            except KVStoreError as e:
                self.errors += 1
                self.last_error = str(e)
                log.warning("publishing ClusterServices failed (retrying in %.1fs): %s", backoff, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._wake.set()

    async def _flush(self, dirty: set[Ref]) -> None:
        """Resolve and write the marked Services; on failure the unwritten ones stay marked."""
        self.passes += 1
        self._inflight = len(dirty)
        try:
            await self._write(dirty)
        finally:
            self._inflight = 0

    async def _write(self, dirty: set[Ref]) -> None:
        ops: list[tuple[Ref, ClusterService | None]] = []
        for ref in sorted(dirty):
            spec = self._inputs.specs.get(ref)
            if spec is None:
                if ref in self._published:
                    ops.append((ref, None))
                continue
            ns_eps = self._inputs.namespace_endpoints(ref[0])
            record = resolve(spec, ns_eps, self._inputs.probe, self._cluster, self._cluster_id)
            if ref in self._published and self._published[ref] == record:
                continue
            if self._holds(ref, record):
                self._held.add(ref)
                continue
            ops.append((ref, record))
        for i in range(0, len(ops), TXN_BATCH):
            batch = ops[i : i + TXN_BATCH]
            try:
                await self._kv.txn(
                    [],
                    [
                        Put(keys.service(self._cluster, *ref), codec.encode(rec))
                        if rec is not None
                        else Delete(keys.service(self._cluster, *ref))
                        for ref, rec in batch
                    ],
                )
            except KVStoreError:
                self._dirty.update(ref for ref, _ in ops[i:])
                raise
            for ref, rec in batch:
                self._inherited.discard(ref)
                if rec is None:
                    self._published.pop(ref, None)
                    self.deletes += 1
                else:
                    self._published[ref] = rec
                    self.writes += 1

    def _holds(self, ref: Ref, record: ClusterService) -> bool:
        """Whether an inherited record must keep its ready backends a while longer."""
        old = self._published.get(ref)
        return (
            old is not None
            and ref in self._inherited
            and asyncio.get_running_loop().time() < self._hold_until
            and loses_backends(old, record)
        )
