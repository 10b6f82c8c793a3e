"""Publishes each declared Service's ClusterService record (operator, leader only).

Started by :class:`glia.operator.daemon.Operator` once it leads. Four
reflectors feed it: the pod CIDR allocations, the declared Services
(``glia/config/v1/services/``), the cluster's endpoints and the agents' probe
results (``BackendHealth`` per node). Endpoints and probe results are
untrusted (any node may have written them): an endpoint becomes a backend
only if its record is valid and its IP lies in the pod CIDR of the node that
wrote it (:mod:`glia.validate.endpoints`), and a node's probe results count
only for its own addresses (:mod:`glia.validate.health`). Rejections are
counted and logged once (:class:`~glia.validate.rejects.RejectLog`).
A change marks only the Services it can affect (a selector index finds them
without scanning every Service); after a short debounce (~20 ms, so a burst of
events costs one pass) the marked Services are resolved with the pure
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
from glia.model.endpoint import Endpoint
from glia.model.service import ClusterService, ServiceSpec
from glia.service import store
from glia.service.resolve import HealthKey, resolve, selects
from glia.validate.bounds import ClusterBounds
from glia.validate.endpoints import check_endpoint, check_endpoint_placement
from glia.validate.errors import Rejected
from glia.validate.health import check_health
from glia.validate.nodes import check_podcidr
from glia.validate.rejects import RejectLog

log = logging.getLogger(__name__)

Ref = tuple[str, str]  # (namespace, name)
DEBOUNCE = 0.02
TXN_BATCH = 100  # writes per etcd transaction (etcd allows 128 by default)
BACKOFF_MAX = 5.0


class _Handler:
    """Reflector handler forwarding to two functions of the resolver."""

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


def _ref(key: str, prefix: str) -> Ref | None:
    """(namespace, name) of a ``<prefix><ns>/<name>`` key."""
    parts = key[len(prefix) :].split("/")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def _service_ref(service: str) -> Ref | None:
    ns, sep, name = service.partition("/")
    return (ns, name) if sep and ns and name and "/" not in name else None


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
        self._bounds = bounds or ClusterBounds(cluster, cluster_id)
        self.rejects = RejectLog("services")
        self._cidrs: dict[str, Any] = {}  # node -> IPv4Network (operator's allocations)
        self._cidr_keys: dict[str, str] = {}  # allocation key -> node
        self._candidates: dict[str, Endpoint] = {}  # by key: valid records, placed or not
        self._health_raw: dict[str, bytes] = {}  # by node: to check again when CIDRs change
        self._debounce = debounce
        self._grace = grace  # deletes of leased endpoints/probe results held back
        self._hold = hold  # inherited records keep their ready backends this long
        self._hold_until = 0.0
        self._inherited: set[Ref] = set()  # records listed at start, not yet rewritten
        self._held: set[Ref] = set()  # Services whose rewrite waits for the hold to end
        self._release: asyncio.Task[None] | None = None
        self._deferring: list[DeferredDeletes] = []
        self._config_prefix = keys.configs(store.KIND)
        self._records_prefix = keys.services(cluster)
        self._specs: dict[Ref, ServiceSpec] = {}
        # Each Service is indexed under one of its selector pairs: an endpoint
        # can only match Services indexed under one of its own labels.
        self._index: dict[tuple[str, str, str], set[Ref]] = {}
        self._endpoints: dict[str, Endpoint] = {}  # by kvstore key
        self._by_ns: dict[str, dict[str, Endpoint]] = {}
        self._ip_node: dict[str, str] = {}
        self._health: dict[str, dict[HealthKey, bool]] = {}  # node -> probe results
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
            ref = _ref(item.key, self._records_prefix)
            if ref is None:
                continue
            try:
                self._published[ref] = codec.decode(ClusterService, item.value)
                self._inherited.add(ref)
            except codec.InvalidValue as e:
                log.warning("invalid ClusterService record %s (%s): rewriting it", item.key, e)
                self._published[ref] = None
        self._deferring = [
            defer_deletes(_Handler(self._ep_upsert, self._ep_delete), self._kv, self._grace),
            defer_deletes(
                _Handler(self._health_upsert, self._health_delete), self._kv, self._grace
            ),
        ]
        feeds: list[tuple[str, ReflectorHandler]] = [
            (keys.podcidr_nodes(self._cluster), _Handler(self._cidr_upsert, self._cidr_delete)),
            (self._config_prefix, _Handler(self._spec_upsert, self._spec_delete)),
            (keys.endpoints(self._cluster), self._deferring[0]),
            (keys.healths(self._cluster), self._deferring[1]),
        ]
        try:
            for prefix, handler in feeds:
                r = Reflector(self._kv, prefix, handler, name=f"services: {prefix}")
                await r.start()
                self._reflectors.append(r)
            dirty = set(self._specs) | set(self._published)
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
            "services": len(self._specs),
            "records": len(self._published),
            "endpoints": len(self._endpoints),
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
            spec = self._specs.get(ref)
            if spec is None:
                if ref in self._published:
                    ops.append((ref, None))
                continue
            ns_eps = self._by_ns.get(ref[0], {})
            record = resolve(spec, ns_eps.values(), self._probe, self._cluster, self._cluster_id)
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

    def _probe(self, service: str, ip: str, port: int) -> bool | None:
        node = self._ip_node.get(ip)
        return None if node is None else self._health.get(node, {}).get((service, ip, port))

    # --- declared Services ----------------------------------------------------------

    def _index_key(self, spec: ServiceSpec) -> tuple[str, str, str] | None:
        if not spec.selector:
            return None
        k = min(spec.selector)
        return (spec.namespace, k, spec.selector[k])

    def _spec_upsert(self, key: str, kv: KeyValue) -> None:
        ref = _ref(key, self._config_prefix)
        if ref is None:
            return
        try:
            spec = codec.decode(ServiceSpec, kv.value)
        except codec.InvalidValue as e:
            log.warning("ignoring invalid Service %s (keeping the last valid one): %s", key, e)
            return
        if (spec.namespace, spec.name) != ref:
            log.warning(
                "ignoring Service %s: its value names %s/%s", key, spec.namespace, spec.name
            )
            return
        self._unindex(ref)
        self._specs[ref] = spec
        if (ik := self._index_key(spec)) is not None:
            self._index.setdefault(ik, set()).add(ref)
        self._mark([ref])

    def _spec_delete(self, key: str, old: KeyValue | None) -> None:
        ref = _ref(key, self._config_prefix)
        if ref is None:
            return
        self._unindex(ref)
        self._specs.pop(ref, None)
        self._mark([ref])

    def _unindex(self, ref: Ref) -> None:
        old = self._specs.get(ref)
        if old is not None and (ik := self._index_key(old)) is not None:
            refs = self._index.get(ik)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._index[ik]

    # --- endpoints -----------------------------------------------------------------

    def _affected(self, ep: Endpoint) -> set[Ref]:
        """Services whose selector matches the endpoint's labels (whatever its state)."""
        out: set[Ref] = set()
        for k, v in ep.labels.items():
            for ref in self._index.get((ep.namespace, k, v), ()):
                spec = self._specs.get(ref)
                if spec is not None and selects(spec.selector, ep.labels):
                    out.add(ref)
        return out

    def _ep_upsert(self, key: str, kv: KeyValue) -> None:
        try:
            ep = check_endpoint(key, kv.value, self._bounds)
        except Rejected as e:
            self.rejects.reject(key, str(e))
            self._ep_delete(key, None)
            return
        self._candidates[key] = ep
        self._place(key, ep)

    def _place(self, key: str, ep: Endpoint) -> None:
        """Make ``ep`` a possible backend if it lies in its node's pod CIDR."""
        try:
            check_endpoint_placement(ep, self._cidrs.get(ep.node))
        except Rejected as e:
            self.rejects.reject(key, str(e))
            old = self._forget(key)
            if old is not None:
                self._mark(self._affected(old))
            return
        self.rejects.accept(key)
        old = self._endpoints.get(key)
        if old == ep:
            return
        self._forget(key)
        self._endpoints[key] = ep
        self._by_ns.setdefault(ep.namespace, {})[key] = ep
        self._ip_node[ep.ip] = ep.node
        self._mark(self._affected(ep) | (self._affected(old) if old else set()))

    def _ep_delete(self, key: str, old_kv: KeyValue | None) -> None:
        self._candidates.pop(key, None)
        if old_kv is not None:
            self.rejects.forget(key)
        old = self._forget(key)
        if old is not None:
            self._mark(self._affected(old))

    def _forget(self, key: str) -> Endpoint | None:
        old = self._endpoints.pop(key, None)
        if old is not None:
            ns = self._by_ns.get(old.namespace, {})
            ns.pop(key, None)
            if not ns:
                self._by_ns.pop(old.namespace, None)
            if self._ip_node.get(old.ip) == old.node:
                del self._ip_node[old.ip]
                # An endpoint that moved namespace (new key, same IP) may have been
                # placed before its old key went: it still owns the address.
                for other in self._by_ns.values():
                    same = next((e for e in other.values() if e.ip == old.ip), None)
                    if same is not None:
                        self._ip_node[old.ip] = same.node
                        break
        return old

    # --- probe results ----------------------------------------------------------------

    def _health_upsert(self, key: str, kv: KeyValue) -> None:
        node = keys.last(key)
        self._health_raw[node] = kv.value
        self._take_health(key, node, kv.value)

    def _take_health(self, key: str, node: str, raw: bytes) -> None:
        try:
            value, dropped = check_health(key, raw, self._bounds, self._cidrs.get(node))
        except Rejected as e:
            self.rejects.reject(key, str(e))
            self._health_changed(self._health.pop(node, {}), {})
            return
        if dropped:
            self.rejects.reject(key, f"{dropped} results about addresses not of node {node}")
        else:
            self.rejects.accept(key)
        new = {(r.service, r.ip, r.port): r.ready for r in value.results}
        self._health_changed(self._health.get(node, {}), new)
        self._health[node] = new

    def _health_delete(self, key: str, old_kv: KeyValue | None) -> None:
        node = keys.last(key)
        self._health_raw.pop(node, None)
        self.rejects.forget(key)
        old = self._health.pop(node, {})
        self._health_changed(old, {})

    # --- pod CIDR allocations (what bounds each node's endpoints) -------------------

    def _cidr_upsert(self, key: str, kv: KeyValue) -> None:
        try:
            node, cidr = check_podcidr(key, kv.value, self._bounds)
        except Rejected as e:
            self.rejects.reject(key, str(e))
            self._cidr_delete(key, None)
            return
        self.rejects.accept(key)
        self._cidr_keys[key] = node
        if self._cidrs.get(node) != cidr:
            self._cidrs[node] = cidr
            self._recheck(node)

    def _cidr_delete(self, key: str, old_kv: KeyValue | None) -> None:
        node = self._cidr_keys.pop(key, None)
        if old_kv is not None:
            self.rejects.forget(key)
        if node is not None and self._cidrs.pop(node, None) is not None:
            self._recheck(node)

    def _recheck(self, node: str) -> None:
        """Place again what depends on ``node``'s CIDR (endpoints, probe results)."""
        for key, ep in list(self._candidates.items()):
            if ep.node == node:
                self._place(key, ep)
        raw = self._health_raw.get(node)
        if raw is not None:
            self._take_health(keys.health(self._cluster, node), node, raw)

    def _health_changed(self, old: dict[HealthKey, bool], new: dict[HealthKey, bool]) -> None:
        changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        self._mark(ref for svc, _, _ in changed if (ref := _service_ref(svc)) is not None)
