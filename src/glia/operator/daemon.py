"""The operator process: cluster-wide duties under leader election.

``glia operator --config FILE`` calls :func:`run`. Once leader: the cluster
record (``glia/state/cluster/v1/<cluster>``: name, id, pod pools, service
CIDR, which other clusters of the mesh check before importing anything of
this one), pod CIDR allocation (reflector on the cluster's nodes), Service
resolution (:class:`~glia.operator.services.ServiceResolver`), identity
garbage collection and the cluster heartbeat (``glia/.heartbeat``), which
remote clusters read to tell a live cluster from a stale one.

Losing leadership (etcd revoked the lease, or no renewal got through within
its TTL) stops every duty at once and the process campaigns again; when it
leads again the duties start afresh, listing everything anew, so nothing that
changed meanwhile is missed. Only SIGTERM/SIGINT end the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from glia.aiotasks import cancel_and_wait
from glia.kvstore import keys
from glia.kvstore.client import Compare, KVClient, Lease, Put
from glia.kvstore.errors import KVStoreError
from glia.kvstore.reflector import Reflector
from glia.metrics.http import MetricsServer
from glia.model import codec
from glia.model.cluster import ClusterInfo
from glia.operator import leader
from glia.operator.config import OperatorConfig
from glia.operator.identity_gc import IdentityGC
from glia.operator.leader import LeaderElection
from glia.operator.metrics import OperatorMetrics
from glia.operator.podcidr import PodCIDRAllocator
from glia.operator.services import ServiceResolver
from glia.validate.bounds import ClusterBounds
from glia.validate.cluster import check_cluster_info
from glia.validate.errors import Rejected

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAY = 1.0  # after a term whose duties could not start


def cluster_record(cfg: OperatorConfig) -> ClusterInfo:
    """The cluster record ``cfg`` makes; ValueError if other clusters would refuse it.

    Checked by the same validator remote clusters run
    (:func:`~glia.validate.cluster.check_cluster_info`), so a configuration
    the mesh would refuse fails when the operator starts, not later in
    another cluster's ``glia clustermesh status``.
    """
    info = ClusterInfo(cfg.cluster, cfg.cluster_id, [cfg.pod_pool], cfg.service_cidr or None)
    try:
        key = keys.cluster_info(cfg.cluster)
        check_cluster_info(key, codec.encode(info), cfg.cluster, cfg.cluster_id)
    except (Rejected, ValueError) as e:
        raise ValueError(
            f"cluster, cluster_id, pod_pool and service_cidr do not make a valid "
            f"cluster record: {e}"
        ) from None
    return info


class Operator:
    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self.record = cluster_record(cfg)
        self._record_value = codec.encode(self.record)
        self.record_puts = 0  # times the cluster record was (re)written
        self.identity = cfg.identity or f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: list[asyncio.Task[None]] = []
        self._reflector: Reflector | None = None
        self._services: ServiceResolver | None = None
        self.kv: KVClient | None = None
        self.election: LeaderElection | None = None
        self.terms = 0  # times this process became the leader
        self.leading = False
        # Across terms, for the metrics (glia.operator.metrics).
        self.gc_passes = {"success": 0, "error": 0}
        self.identities_collected = 0
        self.identities_listed: int | None = None  # by the last GC pass; None: none yet
        self._gc: IdentityGC | None = None  # this term's collector

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        self.kv = await KVClient.connect(
            cfg.etcd,
            check_read=[keys.STATE, keys.CONFIG],
            check_write=[
                keys.services(cfg.cluster),
                keys.podcidrs(cfg.cluster),
                keys.cluster_info(cfg.cluster),
                keys.HEARTBEAT,
            ],
        )
        self.election = LeaderElection(
            self.kv, keys.operator_leader(cfg.cluster), self.identity, cfg.lease_ttl
        )
        try:
            while not stop.is_set():
                lease = await _unless_stopped(self.election.acquire(), stop)
                if lease is None:
                    break
                self.terms += 1
                why = await self._lead(lease, stop)
                if stop.is_set():
                    break
                log.warning("leadership lost (%s): duties stopped; campaigning again", why)
        finally:
            await self._close()

    async def _lead(self, lease: Lease, stop: asyncio.Event) -> str:
        """One term: start the duties, run them until leadership or the process ends."""
        assert self.election
        self.leading = True
        try:
            try:
                started = await _unless_stopped(self._start_duties(), stop)
            except KVStoreError as e:
                await asyncio.sleep(RETRY_DELAY)
                return f"starting the duties failed: {e}"
            if started is None:
                return "stopping"
            over = asyncio.create_task(leader.lost(lease))
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({over, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
                over.cancel()
            return over.result() if over.done() and not over.cancelled() else "stopping"
        finally:
            self.leading = False
            await self._stop_duties()
            await self.election.resign()

    async def _start_duties(self) -> bool:
        cfg = self.cfg
        assert self.kv
        await self._publish_record()
        allocator = PodCIDRAllocator(self.kv, cfg.cluster, cfg.pod_pool, cfg.node_mask_size)
        self._reflector = Reflector(self.kv, keys.nodes(cfg.cluster), allocator)
        await self._reflector.start()
        bounds = ClusterBounds.of(cfg.cluster, cfg.cluster_id, cfg.pod_pool, cfg.service_cidr)
        self._services = ServiceResolver(self.kv, cfg.cluster, cfg.cluster_id, bounds=bounds)
        await self._services.start()
        self._gc = IdentityGC(self.kv, cfg.cluster, cfg.identity_gc_grace)
        self._tasks = [
            asyncio.create_task(
                self._every(cfg.identity_gc_interval, self._collect_identities), name="identity-gc"
            ),
            asyncio.create_task(
                self._every(cfg.heartbeat_interval, self._heartbeat), name="heartbeat"
            ),
            asyncio.create_task(
                self._every(cfg.heartbeat_interval, self._publish_record), name="cluster-record"
            ),
        ]
        log.info("leader duties started (term %d)", self.terms)
        return True

    async def _collect_identities(self) -> None:
        """One identity GC pass of this term's collector, counted for the metrics."""
        gc = self._gc
        assert gc is not None
        try:
            collected = await gc.run_once()
        except Exception:
            self.gc_passes["error"] += 1
            raise  # _every logs it
        self.gc_passes["success"] += 1
        self.identities_collected += len(collected)
        self.identities_listed = gc.identities

    def service_status(self) -> dict[str, Any] | None:
        """The Service resolver's status while this replica leads, else None."""
        return self._services.status() if self._services is not None else None

    async def _stop_duties(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        services, self._services = self._services, None
        if services:
            with contextlib.suppress(Exception):
                await services.stop()
        reflector, self._reflector = self._reflector, None
        if reflector:
            with contextlib.suppress(Exception):
                await reflector.stop()

    async def _publish_record(self) -> None:
        """Make the cluster record this configuration's: written at the start of each term,
        then checked every heartbeat interval and rewritten only if it differs (deleted
        or changed by someone else), so a correct record gets no new revision.

        Not on a lease: the record describes the cluster, not this replica, and
        must stay while no operator leads (remote clusters keep importing).
        """
        assert self.kv
        key, value = keys.cluster_info(self.cfg.cluster), self._record_value
        if await self.kv.txn([Compare(key, "value", "==", value)], [], [Put(key, value)]):
            return  # etcd holds exactly this record (a missing key never compares equal)
        self.record_puts += 1
        log.info("published the cluster record %s: %s", key, value.decode())

    async def _heartbeat(self) -> None:
        assert self.kv
        body = {"cluster": self.cfg.cluster, "cluster_id": self.cfg.cluster_id, "time": time.time()}
        await self.kv.put(keys.HEARTBEAT, json.dumps(body).encode())

    async def _every(self, interval: float, fn: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await fn()
            except Exception as e:
                log.warning("%s failed: %s", getattr(fn, "__qualname__", fn), e)
            await asyncio.sleep(interval)

    async def _close(self) -> None:
        await self._stop_duties()
        if self.election:
            with contextlib.suppress(Exception):
                await self.election.resign()
        if self.kv:
            with contextlib.suppress(Exception):
                await self.kv.close()


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``work``'s result, or None (``work`` cancelled) once ``stop`` is set first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    await cancel_and_wait(task)
    return None


async def serve(cfg: OperatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    operator = Operator(cfg)
    metrics: MetricsServer | None = None
    if cfg.prometheus_listen:
        metrics = MetricsServer(OperatorMetrics(operator).render)
        try:
            await metrics.start(cfg.prometheus_listen)
        except (ValueError, OSError) as e:
            raise SystemExit(f"glia operator: prometheus_listen: {e}") from None
        log.info("serving Prometheus metrics on http://%s/metrics", cfg.prometheus_listen)
    try:
        await operator.run(stop)
    finally:
        if metrics is not None:
            await metrics.stop()


def run(cfg: OperatorConfig) -> None:
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(cfg))
