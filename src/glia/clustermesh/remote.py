"""One remote cluster of the mesh: a read-only connection, and its state imported.

Started by :class:`glia.clustermesh.mesh.ClusterMesh` for each file of the
agent's cluster directory. In the background, retrying with backoff (a remote
etcd that is down never stops the agent; its start waits for the first lists
a bounded time only, :meth:`ClusterMesh.wait_synced`):

1. connect with the remote's read-only user and check it may read
   ``glia/state/`` and the heartbeat (etcd cancels an RBAC-denied watch
   silently: checked here, reported, never a hang);
2. read and check the remote's cluster record
   (:func:`glia.validate.cluster.check_cluster_info`, with the id the file
   expects) and ask the mesh to admit it
   (:func:`glia.validate.cluster.mesh_conflicts`); a refused cluster imports
   nothing (what it had imported is withdrawn) and is asked again later (its
   record may be fixed);
3. import: the remote's nodes, pod CIDR allocations and ipcache entries into
   its own :class:`~glia.agent.ipcache_table.ClusterTable`, its identities into
   the identity cache, its ClusterServices (validated against its own bounds
   and node CIDRs: once its nodes and allocations are listed, and again as
   soon as those change; :mod:`glia.clustermesh.remote_services`) into the
   agent's Service merge — each checked
   against the remote's bounds, so it can claim only its own pod pools and
   identity range.

Freshness: the remote's operator rewrites ``glia/.heartbeat`` every few
seconds; a cluster whose heartbeat has not been seen for
:data:`HEARTBEAT_TIMEOUT` is *stale* (its backends get new connections only
while no fresh ready backend exists), and after its file's ``stale_after``
its state is withdrawn; it comes back when its heartbeat does. The cluster
record is read again every tick too: a record that changes into one that is
not valid or not admitted any more (say, claiming our id) withdraws the
cluster. Stopping the agent keeps everything imported (the maps outlive it);
removing the file withdraws at once.

A changed file (:meth:`RemoteCluster.reconfigure`) never opens a gap: a new
``stale_after`` applies to the connection in use; new endpoints, TLS files or
an expected id make a new connection, and what the old one imported stays in
the tables until the new one's first lists replace it key by key (seeded
reflectors: only what the new connection does not have is withdrawn).
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

from glia.clustermesh.config import RemoteClusterConfig, needs_reconnect
from glia.clustermesh.remote_services import RemoteServices
from glia.kvstore import keys
from glia.kvstore.client import KeyValue, KVClient
from glia.kvstore.errors import KVStoreError, PermissionDenied
from glia.kvstore.reflector import Reflector
from glia.model.cluster import ClusterInfo
from glia.policy.store import PolicyListing, read_policies
from glia.validate.bounds import ClusterBounds
from glia.validate.cluster import check_cluster_info
from glia.validate.errors import Rejected

if TYPE_CHECKING:
    from glia.agent.identities import IdentityCache
    from glia.agent.ipcache import IPCacheSync
    from glia.agent.services import AgentServices

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT = 15.0  # three of the operator's 5 s heartbeats missed
RETRY_MIN, RETRY_MAX = 0.5, 30.0
RECHECK_REFUSED = 10.0  # a refused cluster's record is read again this often
TICK = 1.0  # staleness is judged (and the cluster record read) this often
REJECTED_SAMPLE = 16  # rejected keys shown by status(), with their reasons
HEARTBEAT_ERROR = "heartbeat: "  # how a failed heartbeat read starts last_error
POLICY_READ_TIMEOUT = 5.0  # one read of the remote's policies for a trace


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
        # Held while the tables change (import, withdrawal, freshness): the
        # background task is only ever cancelled outside it.
        self._lock = asyncio.Lock()
        self._data: list[Reflector] = []
        self._imported = False
        # prefix -> what the reflectors of a replaced connection held: the
        # next import's reflectors start from it (no withdrawal gap).
        self._seed: dict[str, dict[str, KeyValue]] = {}
        self._record_rev = 0  # mod revision of the admitted cluster record
        self._refused_rev = 0  # and of the one last refused
        self.services = RemoteServices(cfg.name, sinks, lambda: self.bounds, lambda: self.stale)
        self.heartbeat_seen: float | None = None  # our clock, when the last one arrived
        self._heartbeat_rev = 0
        self.stale_since: float | None = None
        self._import_started = 0.0
        self._sync_timer: asyncio.Task[None] | None = None
        self.last_sync_seconds: float | None = None
        self.connections = 0  # connections made (a reconnect of the file counts one more)

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"clustermesh {self.name}")

    async def stop(self, *, withdraw: bool) -> None:
        """Stop reading; ``withdraw`` also takes its state out of every table and map."""
        await self._halt()
        async with self._lock:
            await self._stop_data()
            if withdraw:
                await self._withdraw()
                self.state = "withdrawn"
            await self._close_client()

    async def reconfigure(self, cfg: RemoteClusterConfig) -> None:
        """Take a changed file of this cluster, without a gap in what it imported.

        Only ``stale_after`` changed: it applies to the connection in use (a
        shorter one may withdraw at the next tick). Otherwise
        (:func:`~glia.clustermesh.config.needs_reconnect`) the old connection
        is closed and a new one made, checked and admitted in the background;
        meanwhile what the old one imported stays, judged for freshness like
        the state of an etcd that is unreachable. Once admitted with the same
        bounds, the new reflectors start from what the old ones held: their
        first lists deliver only what differs and delete only what the new
        connection does not have. Refused, everything is withdrawn.
        """
        old, self.cfg = self.cfg, cfg
        if not needs_reconnect(old, cfg):
            log.info("clustermesh %s: new settings (stale_after %g s)", self.name, cfg.stale_after)
            return
        await self._halt()
        async with self._lock:
            await self._stop_data(keep_seed=True)
            await self._close_client()
        self._heartbeat_rev = 0  # revisions of another connection say nothing
        self._record_rev = 0
        if not self.stale:
            self.state = "connecting"
        log.info(
            "clustermesh %s: reconnecting (%s); its state stays until the new connection "
            "has listed it", self.name, ", ".join(cfg.etcd.endpoints),
        )  # fmt: skip
        self.start()

    async def _halt(self) -> None:
        """Cancel the background task at a point where it changes no table."""
        async with self._lock:
            task, self._task = self._task, None
            if task is not None:
                task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    @property
    def synced(self) -> bool:
        return self._imported and bool(self._data) and all(r.synced.is_set() for r in self._data)

    async def list_policies(self, timeout: float = POLICY_READ_TIMEOUT) -> PolicyListing:
        """This cluster's declared policies, read once over the read-only connection
        (``glia policy trace``), records re-checked (:func:`glia.policy.store.read_policies`).

        KVStoreError with the reason when the cluster is not connected and
        admitted, or does not answer within ``timeout`` s: a trace then says
        that side cannot be judged rather than guess.
        """
        client = self._client
        if client is None or self.state in ("connecting", "refused", "withdrawn"):
            why = f": {self.last_error}" if self.last_error else ""
            raise KVStoreError(f"cluster {self.name} is {self.state}{why}")
        try:
            return await asyncio.wait_for(read_policies(client), timeout)
        except TimeoutError:
            raise KVStoreError(
                f"cluster {self.name}: no answer within {timeout:g} s reading its policies"
            ) from None

    # --- the background work ----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._connect_loop()
            async with self._lock:
                await self._import()
            while True:
                await asyncio.sleep(TICK)
                await self._poll_heartbeat()
                if not await self._record_unchanged():
                    break
                async with self._lock:
                    await self._judge_freshness()
            # The cluster record changed: admitted again (or refused) over this
            # connection; the tables stay until then.
            async with self._lock:
                await self._stop_data(keep_seed=True)

    async def _connect_loop(self) -> None:
        """Until connected and admitted, retrying; state kept from an earlier
        connection goes stale (and is withdrawn) meanwhile as it would anyway."""
        delay = RETRY_MIN
        while True:
            refused = False
            try:
                if await self._connect_and_admit():
                    return
                refused, wait = True, RECHECK_REFUSED
            except KVStoreError as e:
                self._failed(str(e))
                wait, delay = delay, min(delay * 2, RETRY_MAX)
            deadline = self._clock() + wait
            while (left := deadline - self._clock()) > 0:
                if self._imported:
                    async with self._lock:
                        await self._judge_freshness(connected=False)
                await asyncio.sleep(min(TICK, left))
                if refused and await self._record_moved():
                    break  # a fixed record is admitted at once, not at the next recheck

    async def _record_moved(self) -> bool:
        """Whether the cluster record is another than the one last refused."""
        if self._client is None:
            return False
        try:
            kv = await asyncio.wait_for(self._client.get(keys.cluster_info(self.name)), TICK * 2)
        except (KVStoreError, TimeoutError):
            return False
        return (kv.mod_revision if kv is not None else 0) != self._refused_rev

    def _failed(self, msg: str) -> None:
        if msg != self.last_error:
            log.warning("clustermesh %s: %s", self.name, msg)
        self.last_error = msg

    async def _connect_and_admit(self) -> bool:
        """Connect (unless connected), read and check the cluster record, ask the
        mesh; False when refused (then nothing of it stays imported)."""
        if self._client is None:
            try:
                self._client = await KVClient.connect(
                    self.cfg.etcd, check_read=[keys.STATE, keys.HEARTBEAT]
                )
            except PermissionDenied as e:
                self.state = "refused"
                raise KVStoreError(f"read permission denied: {e}") from None
            self.connections += 1
        if not self.stale:
            self.state = "connected"
        kv = await self._client.get(keys.cluster_info(self.name))
        if kv is None:
            raise KVStoreError(f"no cluster record at {keys.cluster_info(self.name)}")
        reason: str | None
        try:
            info = check_cluster_info(kv.key, kv.value, self.name, self.cfg.cluster_id)
        except Rejected as e:
            reason = f"cluster record {kv.key}: {e}"
        else:
            self.info = info
            reason = await self._admit(self)
        if reason is None:
            self._record_rev = kv.mod_revision
            if not self.stale:
                self.last_error = None  # connected and admitted: what failed before is over
            return True
        self._refused_rev = kv.mod_revision
        self._failed(f"refused: {reason}")
        async with self._lock:
            await self._stop_data()
            await self._withdraw()
        self.state = "refused"
        return False

    async def _record_unchanged(self) -> bool:
        """Read the cluster record again; False when it changed into one that must
        be checked and admitted again (not valid, or other bounds)."""
        assert self._client is not None
        try:
            kv = await asyncio.wait_for(self._client.get(keys.cluster_info(self.name)), TICK * 2)
        except (KVStoreError, TimeoutError):
            return True  # an etcd that does not answer is the heartbeat's to judge
        if kv is None or kv.mod_revision == self._record_rev:
            return True  # a deleted record is put back by its operator; nothing to judge
        try:
            info = check_cluster_info(kv.key, kv.value, self.name, self.cfg.cluster_id)
        except Rejected:
            return False
        if ClusterBounds.from_info(info) != self.bounds:
            return False
        self.info, self._record_rev = info, kv.mod_revision
        return True

    async def _import(self) -> None:
        """Tables for this cluster, and reflectors that fill them (retrying on their own).

        Tables kept from a replaced connection stay if the bounds are the same
        (the reflectors start from what the old ones held); under other bounds
        every record must be checked again: withdrawn, then imported afresh.
        """
        assert self._client is not None and self.info is not None and not self._data
        bounds = ClusterBounds.from_info(self.info)
        if self._imported and bounds != self.bounds:
            await self._withdraw()
        self.bounds = bounds
        sinks, name = self._sinks, self.name
        seed: dict[str, dict[str, KeyValue]] | None = None
        if self._imported:
            seed, self._seed = self._seed, {}
        else:
            sinks.ipcache.add_source(bounds)
            sinks.identities.add_source(bounds)
        feeds: list[tuple[str, Any]] = [
            (keys.nodes(name), self.services.placement(sinks.ipcache.handler("nodes", name))),
            (
                keys.podcidr_nodes(name),
                self.services.placement(sinks.ipcache.handler("podcidrs", name)),
            ),
            (keys.ipcaches(name), sinks.ipcache.handler("ip", name)),
            (keys.identity_ids(name), sinks.identities.handler(name)),
            (keys.services(name), self.services.handler()),
        ]
        self._import_started = self._clock()
        self._imported = True
        self.last_sync_seconds = None
        for prefix, handler in feeds:
            r = Reflector(
                self._client,
                prefix,
                handler,
                name=f"{name}: {prefix}",
                first_list_fatal=False,
                seed=seed.get(prefix, {}) if seed is not None else None,
            )
            await r.start()
            self._data.append(r)
        self._sync_timer = asyncio.create_task(self._time_sync(list(self._data)))
        how = "over a new connection, its state kept" if seed is not None else "importing"
        log.info("clustermesh %s: %s (id %d)", name, how, bounds.cluster_id)

    async def _poll_heartbeat(self) -> None:
        """The heartbeat is one key the read-only role may read as a key, not as a
        prefix (so no watch): a get per tick, fresh when its revision moved."""
        assert self._client is not None
        try:
            kv = await asyncio.wait_for(self._client.get(keys.HEARTBEAT), TICK * 2)
        except (KVStoreError, TimeoutError) as e:
            self._failed(f"{HEARTBEAT_ERROR}{str(e) or type(e).__name__}")
            return
        if self.last_error is not None and self.last_error.startswith(HEARTBEAT_ERROR):
            # Read again: that failure is over (what is wrong now, if anything).
            self.last_error = self._stale_error() if self.stale else None
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

    def _stale_error(self) -> str:
        return f"stale: no heartbeat for {self._heartbeat_timeout:.0f} s"

    async def _time_sync(self, reflectors: list[Reflector]) -> None:
        """How long the first lists of every import reflector took together."""
        await asyncio.gather(*(r.synced.wait() for r in reflectors))
        self.last_sync_seconds = round(self._clock() - self._import_started, 3)
        log.info("clustermesh %s: synced in %.3f s", self.name, self.last_sync_seconds)
        # Said at once, not at the next freshness tick (up to a second later).
        if self.state == "connected" and not self.stale:
            self.state = "synced"

    async def _judge_freshness(self, *, connected: bool = True) -> None:
        """Fresh, stale or withdrawn, from the heartbeat's age. ``connected=False``
        (between connection attempts): nothing is read, state only ages."""
        now = self._clock()
        fresh = self.heartbeat_seen is not None and now - self.heartbeat_seen < (
            self._heartbeat_timeout
        )
        # Not heard from yet: a new heartbeat comes within the operator's
        # interval; judge only once the timeout has passed since the import.
        waiting = self.heartbeat_seen is None and now - self._import_started < (
            self._heartbeat_timeout
        )
        if fresh or waiting:
            if not connected:
                return
            if fresh and self.stale_since is not None:
                log.info("clustermesh %s: fresh again", self.name)
                self.stale_since = None
                self.last_error = None  # the log keeps it; the status shows what is wrong now
                if not self._imported:
                    await self._import()
                else:
                    await self.services.reprogram()
            self.state = "synced" if self.synced else "connected"
            return
        if self.stale_since is None:
            self.stale_since = now
            self._failed(self._stale_error())
            await self.services.reprogram()
        if self._imported and now - self.stale_since >= self.cfg.stale_after:
            log.warning(
                "clustermesh %s: stale for %.0f s: withdrawing its state", self.name,
                now - self.stale_since,
            )  # fmt: skip
            await self._stop_data()
            await self._withdraw()
        self.state = "stale" if self._imported else "withdrawn"

    # --- withdrawal -----------------------------------------------------------------

    async def _stop_data(self, *, keep_seed: bool = False) -> None:
        """Stop the import reflectors. ``keep_seed``: remember what they delivered, for
        the next import's reflectors (:attr:`_seed`); taken once they are all
        stopped, so no event can reach the tables after it."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        for r in self._data:
            with contextlib.suppress(Exception):
                await r.stop()
        if keep_seed and self._data:
            self._seed = {r.prefix: dict(r.items) for r in self._data}
        self._data.clear()

    async def _withdraw(self) -> None:
        self._seed = {}
        if not self._imported:
            return
        self._imported = False
        await self.services.withdraw()
        self._sinks.identities.remove_source(self.name)
        await self._sinks.ipcache.remove_source(self.name)
        self.state = "withdrawn"
        log.info("clustermesh %s: state withdrawn", self.name)

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock()
        table = self._sinks.ipcache.table(self.name) if self._imported else None
        idents = self._sinks.identities.tables.get(self.name) if self._imported else None
        rejected: dict[str, str] = dict(table.rejected()) if table is not None else {}
        if idents is not None:
            rejected.update(idents.rejects.current())
        rejected.update(self.services.rejects.current())
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
            "services": len(self.services.programmed),
            "rejected": len(rejected),
            "rejected_keys": {k: rejected[k] for k in sorted(rejected)[:REJECTED_SAMPLE]},
            "last_error": self.last_error,
            "heartbeat_age": (
                round(now - self.heartbeat_seen, 1) if self.heartbeat_seen is not None else None
            ),
            "last_sync_seconds": self.last_sync_seconds,
            "stale_since": (
                round(now - self.stale_since, 1) if self.stale_since is not None else None
            ),
            "stale_after": self.cfg.stale_after,
            "connections": self.connections,
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
