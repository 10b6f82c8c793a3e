"""One remote cluster of the mesh: a read-only connection, and its state imported.

Started by :class:`glia.clustermesh.mesh.ClusterMesh` for each file of the
agent's cluster directory. In the background, retrying with backoff (a remote
etcd that is down never stops the agent; its start waits for the first lists
a bounded time only, :meth:`ClusterMesh.wait_synced`):

1. connect with the remote's read-only user and check it may read
   ``glia/state/`` and the heartbeat (etcd cancels an RBAC-denied watch
   silently: checked here, reported, never a hang);
2. read and check the remote's cluster record and ask the mesh to admit it
   (:mod:`glia.clustermesh.admission`); a refused cluster imports nothing
   (what it had imported is withdrawn) and is asked again later (its record
   may be fixed);
3. import: the remote's nodes, pod CIDR allocations, ipcache entries,
   identities and ClusterServices into the agent's tables, each checked
   against the remote's bounds (:mod:`glia.clustermesh.remote_import`,
   :mod:`glia.clustermesh.remote_services`).

Freshness: the remote's heartbeat is read every tick; a cluster not heard
from for a while is *stale*, and after its file's ``stale_after`` its state
is withdrawn; it comes back when its heartbeat does
(:mod:`glia.clustermesh.freshness`). The cluster record is read again every
tick too: a record that changes into one that is not valid or not admitted
any more (say, claiming our id) withdraws the cluster. Stopping the agent
keeps everything imported (the maps outlive it); removing the file withdraws
at once.

A changed file (:meth:`RemoteCluster.reconfigure`) never opens a gap: a new
``stale_after`` applies to the connection in use; new endpoints, TLS files or
an expected id make a new connection, and what the old one imported stays in
the tables until the new one's first lists replace it key by key (seeded
reflectors: only what the new connection does not have is withdrawn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from glia.clustermesh import freshness
from glia.clustermesh.admission import check_record, still_admitted
from glia.clustermesh.config import RemoteClusterConfig, needs_reconnect
from glia.clustermesh.freshness import HEARTBEAT_TIMEOUT, Freshness
from glia.clustermesh.remote_import import RemoteImport
from glia.clustermesh.remote_services import RemoteServices
from glia.clustermesh.sinks import MeshSinks
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.kvstore.errors import KVStoreError, PermissionDenied
from glia.model.cluster import ClusterInfo
from glia.policy.store import PolicyListing, read_policies
from glia.validate.bounds import ClusterBounds

log = logging.getLogger(__name__)

RETRY_MIN, RETRY_MAX = 0.5, 30.0
RECHECK_REFUSED = 10.0  # a refused cluster's record is read again this often
TICK = 1.0  # staleness is judged (and the cluster record read) this often
HEARTBEAT_ERROR = "heartbeat: "  # how a failed heartbeat read starts last_error
POLICY_READ_TIMEOUT = 5.0  # one read of the remote's policies for a trace


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
        self.failures = 0  # distinct failures seen (a new last_error), for metrics
        self.last_failure_at: float | None = None  # wall clock of the latest one
        self.info: ClusterInfo | None = None
        self.bounds: ClusterBounds | None = None
        self._client: KVClient | None = None
        self._task: asyncio.Task[None] | None = None
        # Held while the tables change (import, withdrawal, freshness): the
        # background task is only ever cancelled outside it.
        self._lock = asyncio.Lock()
        self._record_rev = 0  # mod revision of the admitted cluster record
        self._refused_rev = 0  # and of the one last refused
        self.services = RemoteServices(cfg.name, sinks, lambda: self.bounds, lambda: self.stale)
        self._tables = RemoteImport(
            cfg.name, sinks, self.services, clock=clock, on_synced=self._first_lists_in
        )
        self.heartbeat_seen: float | None = None  # our clock, when the last one arrived
        self._heartbeat_rev = 0
        self.stale_since: float | None = None
        self.connections = 0  # connections made (a reconnect of the file counts one more)

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"clustermesh {self.name}")

    async def stop(self, *, withdraw: bool) -> None:
        """Stop reading; ``withdraw`` also takes its state out of every table and map."""
        await self._halt()
        async with self._lock:
            await self._tables.stop()
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
            await self._tables.stop(keep_seed=True)
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
        return self._tables.synced

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
                await self._tables.stop(keep_seed=True)

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
                if self._tables.imported:
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
            self.failures += 1
            self.last_failure_at = time.time()
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
        checked = check_record(kv.key, kv.value, self.name, self.cfg.cluster_id)
        if isinstance(checked, str):
            reason = checked
        else:
            self.info = checked
            reason = await self._admit(self)
        if reason is None:
            self._record_rev = kv.mod_revision
            if not self.stale:
                self.last_error = None  # connected and admitted: what failed before is over
            return True
        self._refused_rev = kv.mod_revision
        self._failed(f"refused: {reason}")
        async with self._lock:
            await self._tables.stop()
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
        info = still_admitted(kv.key, kv.value, self.name, self.cfg.cluster_id, self.bounds)
        if info is None:
            return False
        self.info, self._record_rev = info, kv.mod_revision
        return True

    async def _import(self) -> None:
        """Import this cluster's state under the bounds of its admitted record.

        Tables kept from a replaced connection stay if the bounds are the same;
        under other bounds every record must be checked again: withdrawn, then
        imported afresh.
        """
        assert self._client is not None and self.info is not None
        bounds = ClusterBounds.from_info(self.info)
        if self._tables.imported and bounds != self.bounds:
            await self._withdraw()
        self.bounds = bounds
        await self._tables.start(self._client, bounds)

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
            self.last_error = freshness.stale_error(self._heartbeat_timeout) if self.stale else None
        if kv is None or kv.mod_revision == self._heartbeat_rev:
            return
        if self._heartbeat_rev:
            self.heartbeat_seen = self._clock()
        else:
            # The first reading: its own timestamp says how old it is (clocks of
            # two clusters may differ: believed only when it says "recent").
            age = freshness.recent_heartbeat_age(kv.value, time.time(), self._heartbeat_timeout)
            if age is not None:
                self.heartbeat_seen = self._clock() - age
        self._heartbeat_rev = kv.mod_revision

    def _first_lists_in(self) -> None:
        # Said at once, not at the next freshness tick (up to a second later).
        if self.state == "connected" and not self.stale:
            self.state = "synced"

    async def _judge_freshness(self, *, connected: bool = True) -> None:
        """Fresh, stale or withdrawn, from the heartbeat's age. ``connected=False``
        (between connection attempts): nothing is read, state only ages."""
        now = self._clock()
        verdict = freshness.judge(
            now, self.heartbeat_seen, self._tables.started, self._heartbeat_timeout
        )
        if verdict is not Freshness.STALE:
            if not connected:
                return
            if verdict is Freshness.FRESH and self.stale_since is not None:
                log.info("clustermesh %s: fresh again", self.name)
                self.stale_since = None
                self.last_error = None  # the log keeps it; the status shows what is wrong now
                if not self._tables.imported:
                    await self._import()
                else:
                    await self.services.reprogram()
            self.state = "synced" if self.synced else "connected"
            return
        if self.stale_since is None:
            self.stale_since = now
            self._failed(freshness.stale_error(self._heartbeat_timeout))
            await self.services.reprogram()
        if self._tables.imported and freshness.withdrawal_due(
            now, self.stale_since, self.cfg.stale_after
        ):
            log.warning(
                "clustermesh %s: stale for %.0f s: withdrawing its state", self.name,
                now - self.stale_since,
            )  # fmt: skip
            await self._tables.stop()
            await self._withdraw()
        self.state = "stale" if self._tables.imported else "withdrawn"

    # --- withdrawal -----------------------------------------------------------------

    async def _withdraw(self) -> None:
        if await self._tables.withdraw():
            self.state = "withdrawn"
            log.info("clustermesh %s: state withdrawn", self.name)

    # --- status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "name": self.name,
            "id": self.info.id if self.info else self.cfg.cluster_id,
            "state": self.state,
            "ready": self.state == "synced",
            "pod_pools": list(self.info.pod_pools) if self.info else [],
            "service_cidr": self.info.service_cidr if self.info else None,
            **self._tables.status(),
            "last_error": self.last_error,
            "failures": self.failures,
            "last_failure_at": self.last_failure_at,
            "heartbeat_age": (
                round(now - self.heartbeat_seen, 1) if self.heartbeat_seen is not None else None
            ),
            "last_sync_seconds": self._tables.last_sync_seconds,
            "stale_since": (
                round(now - self.stale_since, 1) if self.stale_since is not None else None
            ),
            "stale_after": self.cfg.stale_after,
            "connections": self.connections,
        }
