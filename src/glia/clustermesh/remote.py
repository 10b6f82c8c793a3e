"""One remote cluster of the mesh: a read-only connection, and its state imported.

Started by :class:`glia.clustermesh.mesh.ClusterMesh` for each file of the
agent's cluster directory. In the background, retrying with backoff (a remote
etcd that is down never delays or stops the agent):

1. connect with the remote's read-only user and check it may read
   ``glia/state/`` and the heartbeat (etcd cancels an RBAC-denied watch
   silently: checked here, reported, never a hang);
2. read and check the remote's cluster record
   (:func:`glia.validate.cluster.check_cluster_info`, with the id the file
   expects) and ask the mesh to admit it
   (:func:`glia.validate.cluster.mesh_conflicts`); a refused cluster imports
   nothing and is asked again later (its record may be fixed);
3. import: the remote's nodes, pod CIDR allocations and ipcache entries into
   its own :class:`~glia.agent.ipcache_table.ClusterTable`, its identities into
   the identity cache, its ClusterServices (validated against its own bounds
   and node CIDRs) into the agent's Service merge — each checked against the
   remote's bounds, so it can claim only its own pod pools and identity range.

Freshness: the remote's operator rewrites ``glia/.heartbeat`` every few
seconds; a cluster whose heartbeat has not been seen for
:data:`HEARTBEAT_TIMEOUT` is *stale* (its backends get new connections only
while no fresh ready backend exists), and after its file's ``stale_after``
its state is withdrawn; it comes back when its heartbeat does. Stopping the
agent keeps everything imported (the maps outlive it); removing the file
withdraws at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from glia.clustermesh.config import RemoteClusterConfig
from glia.kvstore import keys
from glia.kvstore.client import KeyValue, KVClient
from glia.kvstore.errors import KVStoreError, PermissionDenied
from glia.kvstore.reflector import Reflector
from glia.model.cluster import ClusterInfo
from glia.service.merge import RemoteRecord
from glia.validate.bounds import ClusterBounds
from glia.validate.cluster import check_cluster_info
from glia.validate.errors import Rejected
from glia.validate.rejects import RejectLog
from glia.validate.services import check_cluster_service

if TYPE_CHECKING:
    from glia.agent.identities import IdentityCache
    from glia.agent.ipcache import IPCacheSync
    from glia.agent.services import AgentServices

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 15.0  # three of the operator's 5 s heartbeats missed
RETRY_MIN, RETRY_MAX = 0.5, 30.0
RECHECK_REFUSED = 10.0  # a refused cluster's record is read again this often
TICK = 1.0  # staleness is judged this often


@dataclass(frozen=True, slots=True)
class MeshSinks:
    """Where an imported cluster's state goes: the agent's tables."""

    ipcache: IPCacheSync
    identities: IdentityCache
    services: AgentServices


Admit = Callable[["RemoteCluster"], Awaitable[str | None]]  # None: admitted, else why not


class RemoteCluster:
    def __init__(
        self,
        cfg: RemoteClusterConfig,
        sinks: MeshSinks,
        admit: Admit,
        *,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._sinks = sinks
        self._admit = admit
        self._clock = clock
        self._heartbeat_timeout = heartbeat_timeout
        self.state = "connecting"
        self.last_error: str | None = None
        self.info: ClusterInfo | None = None
        self.bounds: ClusterBounds | None = None
        self._client: KVClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._data: list[Reflector] = []
        self._imported = False
        self._services: dict[str, bytes] = {}  # service key -> raw record
        self._programmed: set[tuple[str, str]] = set()
        self.service_rejects = RejectLog(f"services of {cfg.name}")
        self.heartbeat_seen: float | None = None  # our clock, when the last one arrived
        self._heartbeat_rev = 0
        self._cidrs_seen: object = None
        self.stale_since: float | None = None
        self._import_started = 0.0
        self._sync_timer: asyncio.Task[None] | None = None
        self.last_sync_seconds: float | None = None

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"clustermesh {self.name}")

    async def stop(self, *, withdraw: bool) -> None:
        """Stop reading; ``withdraw`` also takes its state out of every table and map."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_reflectors()
        if withdraw:
            await self._withdraw()
            self.state = "withdrawn"
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    @property
    def synced(self) -> bool:
        return self._imported and all(r.synced.is_set() for r in self._data)

    # --- the background work ----------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                await self._connect_and_admit()
                break
            except (KVStoreError, Rejected) as e:
                self._failed(str(e))
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        await self._import()
        while True:
            await asyncio.sleep(TICK)
            await self._judge_freshness()

    def _failed(self, msg: str) -> None:
        if msg != self.last_error:
            log.warning("clustermesh %s: %s", self.name, msg)
        self.last_error = msg

    async def _connect_and_admit(self) -> None:
        if self._client is None:
            try:
                self._client = await KVClient.connect(
                    self.cfg.etcd, check_read=[keys.STATE, keys.HEARTBEAT]
                )
            except PermissionDenied as e:
                self.state = "refused"
                raise KVStoreError(f"read permission denied: {e}") from None
        self.state = "connected"
        while True:
            kv = await self._client.get(keys.cluster_info(self.name))
            if kv is None:
                raise KVStoreError(f"no cluster record at {keys.cluster_info(self.name)}")
            info = check_cluster_info(kv.key, kv.value, self.name, self.cfg.cluster_id)
            self.info = info
            reason = await self._admit(self)
            if reason is None:
                self.bounds = ClusterBounds.from_info(info)
                return
            self.state = "refused"
            self._failed(f"refused: {reason}")
            await asyncio.sleep(RECHECK_REFUSED)

    async def _import(self) -> None:
        """Tables for this cluster, and reflectors that fill them (retrying on their own)."""
        assert self._client is not None and self.bounds is not None
        sinks, name = self._sinks, self.name
        sinks.ipcache.add_source(self.bounds)
        sinks.identities.add_source(self.bounds)
        feeds: list[tuple[str, Any]] = [
            (keys.nodes(name), sinks.ipcache.handler("nodes", name)),
            (keys.podcidr_nodes(name), sinks.ipcache.handler("podcidrs", name)),
            (keys.ipcaches(name), sinks.ipcache.handler("ip", name)),
            (keys.identity_ids(name), sinks.identities.handler(name)),
            (keys.services(name), _Services(self)),
        ]
        self._import_started = self._clock()
        self._imported = True
        self.last_sync_seconds = None
        for prefix, handler in feeds:
            r = Reflector(
                self._client, prefix, handler, name=f"{name}: {prefix}", first_list_fatal=False
            )
            await r.start()
            self._data.append(r)
        self._sync_timer = asyncio.create_task(self._time_sync(list(self._data)))
        log.info("clustermesh %s: importing (id %d)", name, self.bounds.cluster_id)

    async def _poll_heartbeat(self) -> None:
        """The heartbeat is one key the read-only role may read as a key, not as a
        prefix (so no watch): a get per tick, fresh when its revision moved."""
        assert self._client is not None
        try:
            kv = await asyncio.wait_for(self._client.get(keys.HEARTBEAT), TICK * 2)
        except (KVStoreError, TimeoutError) as e:
            self._failed(f"heartbeat: {str(e) or type(e).__name__}")
            return
        if kv is None or kv.mod_revision == self._heartbeat_rev:
            return
        if self._heartbeat_rev:
            self.heartbeat_seen = self._clock()
        else:
            # The first reading: its own timestamp says how old it is (clocks of
            # two clusters may differ: believed only when it says "recent").
            age = _heartbeat_age(kv.value, time.time())
            if age is not None and age < self._heartbeat_timeout:
                self.heartbeat_seen = self._clock() - age
        self._heartbeat_rev = kv.mod_revision

    async def _time_sync(self, reflectors: list[Reflector]) -> None:
        """How long the first lists of every import reflector took together."""
        await asyncio.gather(*(r.synced.wait() for r in reflectors))
        self.last_sync_seconds = round(self._clock() - self._import_started, 3)
        log.info("clustermesh %s: synced in %.3f s", self.name, self.last_sync_seconds)
        # Said at once, not at the next freshness tick (up to a second later).
        if self.state == "connected" and not self.stale:
            self.state = "synced"

    async def _judge_freshness(self) -> None:
        await self._poll_heartbeat()
        table = self._sinks.ipcache.table(self.name)
        if table is not None and table.cidrs is not self._cidrs_seen:
            self._cidrs_seen = table.cidrs
            await self._reprogram_services()
        now = self._clock()
        fresh = self.heartbeat_seen is not None and now - self.heartbeat_seen < (
            self._heartbeat_timeout
        )
        if fresh:
            if self.stale_since is not None:
                log.info("clustermesh %s: fresh again", self.name)
                self.stale_since = None
                self.last_error = None  # the log keeps it; the status shows what is wrong now
                if not self._imported:
                    await self._import()
                else:
                    await self._reprogram_services()
            self.state = "synced" if self.synced else "connected"
            return
        # Not heard from yet: a new heartbeat comes within the operator's
        # interval; judge only once the timeout has passed since the import.
        if self.heartbeat_seen is None and now - self._import_started < self._heartbeat_timeout:
            self.state = "synced" if self.synced else "connected"
            return
        if self.stale_since is None:
            self.stale_since = now
            self._failed(f"stale: no heartbeat for {self._heartbeat_timeout:.0f} s")
            await self._reprogram_services()
        self.state = "stale"
        if self._imported and now - self.stale_since >= self.cfg.stale_after:
            log.warning(
                "clustermesh %s: stale for %.0f s: withdrawing its state", self.name,
                now - self.stale_since,
            )  # fmt: skip
            await self._stop_data()
            await self._withdraw()

    # --- services -------------------------------------------------------------------

    async def _service_upsert(self, key: str, raw: bytes) -> None:
        self._services[key] = raw
        await self._program_service(key)

    async def _service_delete(self, key: str) -> None:
        self._services.pop(key, None)
        self.service_rejects.forget(key)
        parts = keys.parse(key).parts if key.startswith(keys.SERVICES) else ()
        if len(parts) == 3 and (parts[1], parts[2]) in self._programmed:
            self._programmed.discard((parts[1], parts[2]))
            await self._sinks.services.set_remote(self.name, parts[1], parts[2], None)

    async def _program_service(self, key: str) -> None:
        assert self.bounds is not None
        table = self._sinks.ipcache.table(self.name)
        cidrs = table.cidrs if table is not None else {}
        try:
            checked = check_cluster_service(key, self._services[key], self.bounds, cidrs)
        except Rejected as e:
            self.service_rejects.reject(key, str(e))
            parts = keys.parse(key).parts if key.startswith(keys.SERVICES) else ()
            if len(parts) == 3 and (parts[1], parts[2]) in self._programmed:
                self._programmed.discard((parts[1], parts[2]))
                await self._sinks.services.set_remote(self.name, parts[1], parts[2], None)
            return
        if checked.dropped:
            self.service_rejects.reject(key, f"{len(checked.dropped)} backends dropped: "
                                        f"{checked.dropped[0]}")  # fmt: skip
        else:
            self.service_rejects.accept(key)
        svc = checked.service
        self._programmed.add((svc.namespace, svc.name))
        await self._sinks.services.set_remote(
            self.name, svc.namespace, svc.name, RemoteRecord(svc, stale=self.stale)
        )

    async def _reprogram_services(self) -> None:
        """Check every record again (node CIDRs or freshness changed)."""
        for key in list(self._services):
            await self._program_service(key)

    # --- withdrawal -----------------------------------------------------------------

    async def _stop_data(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        for r in self._data:
            with contextlib.suppress(Exception):
                await r.stop()
        self._data.clear()

    async def _stop_reflectors(self) -> None:
        await self._stop_data()

    async def _withdraw(self) -> None:
        if not self._imported:
            return
        self._imported = False
        for ns, name in sorted(self._programmed):
            await self._sinks.services.set_remote(self.name, ns, name, None)
        self._programmed.clear()
        self._services.clear()
        self._sinks.identities.remove_source(self.name)
        await self._sinks.ipcache.remove_source(self.name)
        self.state = "withdrawn"
        log.info("clustermesh %s: state withdrawn", self.name)

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock()
        table = self._sinks.ipcache.table(self.name) if self._imported else None
        idents = self._sinks.identities.tables.get(self.name) if self._imported else None
        rejected = len(table.rejected()) if table is not None else 0
        rejected += idents.rejects.count if idents is not None else 0
        rejected += self.service_rejects.count
        return {
            "name": self.name,
            "id": self.info.id if self.info else self.cfg.cluster_id,
            "state": self.state,
            "ready": self.state == "synced",
            "pod_pools": list(self.info.pod_pools) if self.info else [],
            "service_cidr": self.info.service_cidr if self.info else None,
            "nodes": len(table.valid_nodes) if table is not None else 0,
            "endpoints": table.placed if table is not None else 0,
            "identities": len(idents.by_id) if idents is not None else 0,
            "services": len(self._programmed),
            "rejected": rejected,
            "last_error": self.last_error,
            "heartbeat_age": (
                round(now - self.heartbeat_seen, 1) if self.heartbeat_seen is not None else None
            ),
            "last_sync_seconds": self.last_sync_seconds,
            "stale_since": (
                round(now - self.stale_since, 1) if self.stale_since is not None else None
            ),
        }


def _heartbeat_age(raw: bytes, now: float) -> float | None:
    """Seconds since the heartbeat ``raw`` was written (its ``time``), None if unreadable."""
    try:
        value = json.loads(raw)
        stamp = float(value["time"])
    except (ValueError, TypeError, KeyError):
        return None
    age = now - stamp
    return age if 0 <= age < 86400 else None


class _Services:
    def __init__(self, rc: RemoteCluster) -> None:
        self._rc = rc

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        await self._rc._service_upsert(key, kv.value)

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        await self._rc._service_delete(key)

    def on_synced(self) -> None:
        return None
