"""A remote cluster's state imported into the agent's tables, and withdrawn from them.

Owned by :class:`glia.clustermesh.remote.RemoteCluster`, one per remote
cluster, started once the cluster is connected and admitted: a reflector per
prefix of the remote's state feeds its nodes, pod CIDR allocations and
ipcache entries into its own :class:`~glia.agent.ipcache_table.ClusterTable`,
its identities into the identity cache, and its ClusterServices into
:class:`~glia.clustermesh.remote_services.RemoteServices` — each checked
against the remote's bounds, so it can claim only its own pod pools and
identity range.

A replaced connection opens no gap: stopped with ``keep_seed``, the
reflectors' contents are kept, and the next import's reflectors start from
them (their first lists deliver only what differs, and delete only what the
new connection does not have). Withdrawal takes the cluster out of every
table (and so every map).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from glia.clustermesh.remote_services import RemoteServices
from glia.clustermesh.sinks import MeshSinks
from glia.kvstore import keys
from glia.kvstore.client import KeyValue, KVClient
from glia.kvstore.reflector import Reflector
from glia.validate.bounds import ClusterBounds

log = logging.getLogger(__name__)

REJECTED_SAMPLE = 16  # rejected keys shown by status(), with their reasons


class RemoteImport:
    def __init__(
        self,
        name: str,
        sinks: MeshSinks,
        services: RemoteServices,
        *,
        clock: Callable[[], float],
        on_synced: Callable[[], None],
    ) -> None:
        self.name = name
        self._sinks = sinks
        self._services = services
        self._clock = clock
        self._on_synced = on_synced  # called once every first list of an import is in
        self._data: list[Reflector] = []
        self.imported = False  # the cluster is a source of the tables
        # prefix -> what the reflectors of a replaced connection held: the
        # next import's reflectors start from it (no withdrawal gap).
        self._seed: dict[str, dict[str, KeyValue]] = {}
        self.started = 0.0  # our clock, when the last import began
        self._sync_timer: asyncio.Task[None] | None = None
        self.last_sync_seconds: float | None = None

    @property
    def synced(self) -> bool:
        return self.imported and bool(self._data) and all(r.synced.is_set() for r in self._data)

    async def start(self, client: KVClient, bounds: ClusterBounds) -> None:
        """Tables for this cluster, and reflectors that fill them (retrying on their own).

        Tables kept from a replaced connection stay (the reflectors start from
        what the old ones held); the caller withdraws them first if the bounds
        changed, since every record must then be checked again.
        """
        assert not self._data
        sinks, name = self._sinks, self.name
        seed: dict[str, dict[str, KeyValue]] | None = None
        if self.imported:
            seed, self._seed = self._seed, {}
        else:
            sinks.ipcache.add_source(bounds)
            sinks.identities.add_source(bounds)
        feeds: list[tuple[str, Any]] = [
            (keys.nodes(name), self._services.placement(sinks.ipcache.handler("nodes", name))),
            (
                keys.podcidr_nodes(name),
                self._services.placement(sinks.ipcache.handler("podcidrs", name)),
            ),
            (keys.ipcaches(name), sinks.ipcache.handler("ip", name)),
            (keys.identity_ids(name), sinks.identities.handler(name)),
            (keys.services(name), self._services.handler()),
        ]
        self.started = self._clock()
        self.imported = True
        self.last_sync_seconds = None
        for prefix, handler in feeds:
            r = Reflector(
                client,
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

    async def _time_sync(self, reflectors: list[Reflector]) -> None:
        """How long the first lists of every import reflector took together."""
        await asyncio.gather(*(r.synced.wait() for r in reflectors))
        self.last_sync_seconds = round(self._clock() - self.started, 3)
        log.info("clustermesh %s: synced in %.3f s", self.name, self.last_sync_seconds)
        self._on_synced()

    async def stop(self, *, keep_seed: bool = False) -> None:
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

    async def withdraw(self) -> bool:
        """Take the cluster out of every table; whether anything was imported."""
        self._seed = {}
        if not self.imported:
            return False
        self.imported = False
        await self._services.withdraw()
        self._sinks.identities.remove_source(self.name)
        await self._sinks.ipcache.remove_source(self.name)
        return True

    def status(self) -> dict[str, Any]:
        """What the tables hold of this cluster, and which of its records they rejected."""
        table = self._sinks.ipcache.table(self.name) if self.imported else None
        idents = self._sinks.identities.tables.get(self.name) if self.imported else None
        rejected: dict[str, str] = dict(table.rejected()) if table is not None else {}
        if idents is not None:
            rejected.update(idents.rejects.current())
        rejected.update(self._services.rejects.current())
        return {
            "nodes": len(table.valid_nodes) if table is not None else 0,
            "endpoints": table.placed if table is not None else 0,
            "identities": len(idents.by_id) if idents is not None else 0,
            "services": len(self._services.programmed),
            "rejected": len(rejected),
            "rejected_keys": {k: rejected[k] for k in sorted(rejected)[:REJECTED_SAMPLE]},
        }
