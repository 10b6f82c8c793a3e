"""The agent's view of the cluster's Services.

A reflector on the cluster's ClusterService records (written by the operator)
feeds two consumers, after :func:`glia.validate.services.check_cluster_service`
has checked each record (a bad frontend rejects the record, a bad backend is
dropped alone; both are counted and shown by ``glia status``; the backends are
checked against the node CIDRs the ipcache sync knows, and every record is
checked again when those change):

- the load-balancer maps, through :class:`glia.service.lbsync.ServiceMapSync`
  (the only writer of the lb4 maps), after
  :func:`glia.service.merge.merge_service` has merged each Service with the
  records remote clusters hold of it (:meth:`AgentServices.set_remote`; a
  Service that is not global is programmed as our record says);
- the health prober, which probes the backends hosted on this node and
  publishes :class:`~glia.model.service.BackendHealth` on the agent's lease.

Host ports of this node's endpoints (:meth:`AgentServices.set_host_ports`,
from :mod:`glia.agent.hostports`) join the same maps: part of the full set at
the first sync, upserted and deleted after it; never merged with remote
records, never probed, and not answered by DNS (:meth:`programmed_service`).

Conntrack garbage collection runs here too, since it is part of keeping the
service maps honest; and the datapath's signals (:mod:`glia.datapath.signals`)
are read here: an endpoint of this node that refused a connection gets its
backends probed at once (:meth:`HealthProber.poke`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from ipaddress import IPv4Network
from typing import Any

from glia.datapath.ct import ct_gc
from glia.datapath.errors import DatapathError
from glia.datapath.loader import Datapath
from glia.datapath.runner import RunDatapath
from glia.datapath.signals import SignalReader
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.kvstore.publisher import LeasedPublisher
from glia.model import codec
from glia.model.service import BackendHealth, ClusterService, Protocol
from glia.service.health import HealthProber, ProbeTarget
from glia.service.lbsync import ServiceMapSync
from glia.service.merge import RemoteRecord, merge_service
from glia.validate.bounds import ClusterBounds
from glia.validate.errors import Rejected
from glia.validate.rejects import RejectLog
from glia.validate.services import check_cluster_service

log = logging.getLogger(__name__)


def local_targets(services: dict[str, ClusterService], node: str) -> set[ProbeTarget]:
    """Backends of ``node`` to probe (pure).

    Probe results are keyed by (service, IP, port) without the protocol, so when
    a Service has the same target port over TCP and UDP (DNS), only the TCP
    probe runs and its verdict speaks for both.
    """
    found: dict[tuple[str, str, int], ProbeTarget] = {}
    for svc in services.values():
        service = f"{svc.namespace}/{svc.name}"
        for b in svc.backends:
            if b.node != node or b.cluster != svc.cluster:
                continue
            key = (service, b.ip, b.port)
            if key not in found or b.protocol is Protocol.TCP:
                found[key] = ProbeTarget(service, b.ip, b.port, svc.health, b.protocol)
    return set(found.values())


class AgentServices:
    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        datapath: Datapath,
        run_dp: RunDatapath,
        publisher: LeasedPublisher,
        bounds: ClusterBounds,
        cidrs: Callable[[], Mapping[str, IPv4Network]],
        ct_gc_interval: float = 10.0,
    ) -> None:
        self._cluster = cluster
        self._bounds = bounds
        self._cidrs = cidrs
        self._raw: dict[str, bytes] = {}  # every record as read, to check again later
        self.rejects = RejectLog("services")
        self._node = node
        self._dp = datapath
        self._run_dp = run_dp
        self._pub = publisher
        self.lb = ServiceMapSync(datapath, run_dp)
        self.services: dict[str, ClusterService] = {}  # our records by key, validated
        # Remote clusters' records of global Services (ClusterMesh feeds them).
        self.remote: dict[str, dict[tuple[str, str], RemoteRecord]] = {}
        self._programmed: dict[tuple[str, str], ClusterService] = {}  # what the maps hold
        # Host ports (glia.service.hostports): wanted, and what the maps were given.
        self._host_wanted: dict[tuple[str, str], ClusterService] = {}
        self._host_programmed: dict[tuple[str, str], ClusterService] = {}
        self._host_lock = asyncio.Lock()
        self.programmed_version = 0  # changes with _programmed (DNS keeps answers while not)
        self._synced = False
        self._dirty = asyncio.Event()
        self.prober = HealthProber(self._health_changed)
        self._tasks: list[asyncio.Task[None]] = []
        self._ct_gc_interval = ct_gc_interval
        self.ct_collected = 0
        self._signals: SignalReader | None = None
        self.refusals = 0  # connections this node's endpoints refused (signals read)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._publish_health_loop(), name="health-publish"),
            asyncio.create_task(self._ct_gc_loop(), name="ct-gc"),
        ]
        self._watch_signals()

    def _watch_signals(self) -> None:
        try:
            reader = SignalReader(self._dp.pin_dir)
            asyncio.get_running_loop().add_reader(reader.fileno(), self._on_signals)
        except (DatapathError, OSError) as e:
            # Only a hint is lost: probes still run at their interval.
            log.warning("datapath signals unavailable (%s): backends are probed at intervals", e)
            return
        self._signals = reader

    def _on_signals(self) -> None:
        if self._signals is None:
            return
        try:
            signals = self._signals.read()
        except DatapathError as e:
            log.warning("reading datapath signals: %s", e)
            return
        for sig in signals:
            self.refusals += 1
            self.prober.poke(sig.ip, sig.port)

    async def stop(self) -> None:
        if self._signals is not None:
            asyncio.get_running_loop().remove_reader(self._signals.fileno())
            self._signals.close()
            self._signals = None
        await self.prober.stop()
        await self.lb.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    # Reflector handler on keys.services(cluster) ------------------------

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        self._raw[key] = kv.value
        await self._take(key, kv.value)

    async def _take(self, key: str, raw: bytes) -> None:
        """Check one record and hand what passed to the maps (a rejected one leaves them)."""
        old = self.services.get(key)
        try:
            checked = check_cluster_service(key, raw, self._bounds, self._cidrs())
        except Rejected as e:
            self.rejects.reject(key, str(e))
            svc = self.services.pop(key, None)
            if svc is not None and self._synced:
                await self.lb.delete(svc.namespace, svc.name)
                self._retarget()
            return
        if checked.dropped:
            more = f" (and {len(checked.dropped) - 1} more)" if len(checked.dropped) > 1 else ""
            self.rejects.reject(
                key, f"{len(checked.dropped)} backends dropped: {checked.dropped[0]}{more}"
            )
        else:
            self.rejects.accept(key)
        svc = checked.service
        if old == svc:
            return
        self.services[key] = svc
        await self._program(svc.namespace, svc.name)

    async def revalidate(self) -> None:
        """Check every record again (the node CIDRs backends are checked against changed)."""
        for key, raw in list(self._raw.items()):
            await self._take(key, raw)

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        self._raw.pop(key, None)
        self.rejects.forget(key)
        svc = self.services.pop(key, None)
        if svc is not None:
            await self._program(svc.namespace, svc.name)

    async def on_synced(self) -> None:
        merged = [m for ref in self._refs() if (m := self._merged(*ref)) is not None]
        self._programmed = {(m.namespace, m.name): m for m in merged}
        self.programmed_version += 1
        async with self._host_lock:
            host = dict(self._host_wanted)
            await self.lb.set_services(merged + list(host.values()))
            self._host_programmed = host
        self._synced = True
        self._retarget()
        await self._apply_host_ports()  # a change that came during the sync

    # Host ports of this node's endpoints -----------------------------------

    async def set_host_ports(self, services: list[ClusterService]) -> None:
        """The full set of this node's host-port services (glia.service.hostports).

        Before the first sync only remembered (they join its full set, so a
        restarted agent keeps the frontends the maps hold); after it, the
        difference is written. The newest call wins: each pass under the lock
        brings the maps to the latest set. DNS-visible state does not change.
        """
        self._host_wanted = {(s.namespace, s.name): s for s in services if s.host_port}
        if self._synced:
            await self._apply_host_ports()

    async def _apply_host_ports(self) -> None:
        async with self._host_lock:
            while self._host_programmed != self._host_wanted:
                wanted = self._host_wanted
                for ref in [r for r in self._host_programmed if r not in wanted]:
                    del self._host_programmed[ref]
                    await self.lb.delete(*ref)
                for ref, svc in wanted.items():
                    if self._host_programmed.get(ref) != svc:
                        self._host_programmed[ref] = svc
                        await self.lb.upsert(svc)

    # Global services (ClusterMesh): remote records, merged per Service ------

    def set_remote(
        self, cluster: str, namespace: str, name: str, record: RemoteRecord | None
    ) -> Awaitable[None]:
        """A remote cluster's (validated) record of a Service, or None when it is gone."""
        of = self.remote.setdefault(cluster, {})
        if record is None:
            of.pop((namespace, name), None)
            if not of:
                del self.remote[cluster]
        else:
            of[(namespace, name)] = record
        return self._program(namespace, name)

    def _refs(self) -> set[tuple[str, str]]:
        refs = {(s.namespace, s.name) for s in self.services.values()}
        for of in self.remote.values():
            refs.update(of)
        return refs

    def _merged(self, namespace: str, name: str) -> ClusterService | None:
        local = self.services.get(keys.service(self._cluster, namespace, name))
        remotes = {c: rec for c, of in self.remote.items() if (rec := of.get((namespace, name)))}
        return merge_service(self._cluster, local, remotes)

    async def _program(self, namespace: str, name: str) -> None:
        """Bring one Service's maps to its merged record (after the first sync)."""
        if not self._synced:
            return
        merged = self._merged(namespace, name)
        ref = (namespace, name)
        if merged == self._programmed.get(ref):
            return
        self.programmed_version += 1
        if merged is None:
            del self._programmed[ref]
            await self.lb.delete(namespace, name)
        else:
            self._programmed[ref] = merged
            await self.lb.upsert(merged)
        self._retarget()

    # Health -------------------------------------------------------------

    def _retarget(self) -> None:
        if self.prober.set_targets(local_targets(self.services, self._node)):
            self._dirty.set()

    async def _health_changed(self) -> None:
        self._dirty.set()

    async def _publish_health_loop(self) -> None:
        last: bytes | None = None
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            value = codec.encode(BackendHealth(node=self._node, results=self.prober.results()))
            if value == last:
                continue
            try:
                await self._pub.publish(keys.health(self._cluster, self._node), value)
                last = value
            except Exception as e:
                log.warning("publishing backend health failed: %s (retrying)", e)
                await asyncio.sleep(0.5)
                self._dirty.set()

    # Conntrack GC -------------------------------------------------------

    async def _ct_gc_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ct_gc_interval)
            try:
                n = await self._run_dp(lambda: ct_gc(self._dp, time.monotonic_ns()))
                self.ct_collected += n
            except Exception as e:
                log.warning("conntrack GC failed: %s", e)

    @property
    def synced(self) -> bool:
        """Whether the maps were brought to the records once (before, they are not ours)."""
        return self._synced

    def programmed(self) -> list[ClusterService]:
        """The Services as the maps hold them: ours, merged with the remote clusters' records
        of global ones, and this node's host ports (``GET /v1/services``); empty until the
        first sync."""
        every = [*self._programmed.values(), *self._host_programmed.values()]
        return sorted(every, key=lambda s: (s.namespace, s.name))

    def programmed_service(self, namespace: str, name: str) -> ClusterService | None:
        """One Service as the maps hold it (DNS asks this for every query); never a host
        port's."""
        return self._programmed.get((namespace, name))

    def status(self) -> dict[str, Any]:
        return {
            "services": len(self.services),
            "host_ports": len(self._host_programmed),
            "lb": self.lb.status(),
            "probes": len(self.prober.results()),
            "refusals": self.refusals,
            "probes_poked": self.prober.poked,
            "ct_collected": self.ct_collected,
            **self.rejects.status(),
        }
