"""The operator process: cluster-wide duties under leader election.

``glia operator --config FILE`` calls :func:`run`. Once leader: pod CIDR
allocation (reflector on the cluster's nodes), Service resolution
(:class:`~glia.operator.services.ServiceResolver`), identity garbage collection and
the cluster heartbeat (``glia/.heartbeat``), which remote clusters read to
tell a live cluster from a stale one. Losing the leader lease stops the duties
and the process exits, so a supervisor restarts it as a candidate.
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

from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.kvstore.reflector import Reflector
from glia.operator.config import OperatorConfig
from glia.operator.identity_gc import IdentityGC
from glia.operator.leader import LeaderElection
from glia.operator.podcidr import PodCIDRAllocator
from glia.operator.services import ServiceResolver
from glia.validate.bounds import ClusterBounds

log = logging.getLogger(__name__)


class Operator:
    def __init__(self, cfg: OperatorConfig) -> None:
        self.cfg = cfg
        self.identity = cfg.identity or f"{socket.gethostname()}-{os.getpid()}"
        self._tasks: list[asyncio.Task[None]] = []
        self._reflector: Reflector | None = None
        self._services: ServiceResolver | None = None
        self.kv: KVClient | None = None
        self.election: LeaderElection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.cfg
        self.kv = await KVClient.connect(
            cfg.etcd,
            check_read=[keys.STATE, keys.CONFIG],
            check_write=[keys.services(cfg.cluster), keys.podcidrs(cfg.cluster), keys.HEARTBEAT],
        )
        self.election = LeaderElection(
            self.kv, keys.operator_leader(cfg.cluster), self.identity, cfg.lease_ttl
        )
        acquire = asyncio.create_task(self.election.acquire())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not acquire.done():
            acquire.cancel()
            await self.kv.close()
            return
        lease = acquire.result()
        allocator = PodCIDRAllocator(self.kv, cfg.cluster, cfg.pod_pool, cfg.node_mask_size)
        self._reflector = Reflector(self.kv, keys.nodes(cfg.cluster), allocator)
        await self._reflector.start()
        bounds = ClusterBounds.of(cfg.cluster, cfg.cluster_id, cfg.pod_pool, cfg.service_cidr)
        self._services = ServiceResolver(self.kv, cfg.cluster, cfg.cluster_id, bounds=bounds)
        await self._services.start()
        gc = IdentityGC(self.kv, cfg.cluster, cfg.identity_gc_grace)
        self._tasks = [
            asyncio.create_task(
                self._every(cfg.identity_gc_interval, gc.run_once), name="identity-gc"
            ),
            asyncio.create_task(
                self._every(cfg.heartbeat_interval, self._heartbeat), name="heartbeat"
            ),
        ]
        lost = asyncio.create_task(lease.lost.wait())
        await asyncio.wait({lost, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            log.error("leadership lost (lease expired); exiting so a replica can take over")
        await self._shutdown()
        if lost.done():
            raise SystemExit(1)

    async def _heartbeat(self) -> None:
        assert self.kv
        body = {"cluster": self.cfg.cluster, "cluster_id": self.cfg.cluster_id, "time": time.time()}
        await self.kv.put(keys.HEARTBEAT, json.dumps(body).encode())

    async def _every(self, interval: float, fn: object) -> None:
        assert callable(fn)
        while True:
            try:
                await fn()
            except Exception as e:
                log.warning("%s failed: %s", getattr(fn, "__qualname__", fn), e)
            await asyncio.sleep(interval)

    async def _shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        if self._services:
            with contextlib.suppress(Exception):
                await self._services.stop()
        if self._reflector:
            with contextlib.suppress(Exception):
                await self._reflector.stop()
        if self.election:
            with contextlib.suppress(Exception):
                await self.election.resign()
        if self.kv:
            with contextlib.suppress(Exception):
                await self.kv.close()


async def serve(cfg: OperatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Operator(cfg).run(stop)


def run(cfg: OperatorConfig) -> None:
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(cfg))
