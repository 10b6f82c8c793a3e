"""A remote cluster's ClusterService records: checked, then handed to the agent's merge.

Owned by :class:`glia.clustermesh.remote.RemoteCluster`, one per remote
cluster; its reflector on that cluster's ``services/v1`` prefix feeds
:meth:`RemoteServices.handler`, and the ipcache handlers of its nodes and pod
CIDR allocations are wrapped by :meth:`RemoteServices.placement`. Each record
is checked (:func:`glia.validate.services.check_cluster_service`) against the
remote's bounds and node CIDRs, but only once its nodes and allocations are
listed (checked earlier, backends would be dropped for nodes that merely
have not arrived yet) and again as soon as those CIDRs change. What passes
goes to :meth:`glia.agent.services.AgentServices.set_remote` with the
cluster's freshness; a rejected record is counted in :attr:`rejects` and
withdrawn from the merge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from glia.clustermesh.sinks import MeshSinks
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.service.merge import RemoteRecord
from glia.validate.bounds import ClusterBounds
from glia.validate.errors import Rejected
from glia.validate.rejects import RejectLog
from glia.validate.services import check_cluster_service

PLACEMENT = frozenset({"nodes", "podcidrs"})  # table parts a Service's backends are checked by


class RemoteServices:
    def __init__(
        self,
        name: str,
        sinks: MeshSinks,
        bounds: Callable[[], ClusterBounds | None],
        stale: Callable[[], bool],
    ) -> None:
        self.name = name
        self._sinks = sinks
        self._bounds = bounds
        self._stale = stale
        self._raw: dict[str, bytes] = {}  # service key -> record as read
        self.programmed: set[tuple[str, str]] = set()  # (namespace, name) in the merge
        self.rejects = RejectLog(f"services of {name}")
        self._cidrs_seen: object = None

    def handler(self) -> Any:
        """The reflector handler of the remote's ClusterService records."""
        return _Services(self)

    def placement(self, inner: Any) -> Any:
        """``inner`` (an ipcache handler of nodes or allocations), then the re-check of
        the Services that a change of node CIDRs calls for."""
        return _Placement(self, inner)

    async def upsert(self, key: str, raw: bytes) -> None:
        self._raw[key] = raw
        await self._program(key)

    async def delete(self, key: str) -> None:
        self._raw.pop(key, None)
        self.rejects.forget(key)
        await self._unmerge(key)

    async def cidrs_changed(self) -> None:
        """Check every record again if the node CIDRs they are checked against changed
        (the first time, once both lists are in)."""
        table = self._sinks.ipcache.table(self.name)
        if table is None or not PLACEMENT.issubset(table.synced_parts):
            return
        if table.cidrs is not self._cidrs_seen:
            self._cidrs_seen = table.cidrs
            await self.reprogram()

    async def reprogram(self) -> None:
        """Check every record again (node CIDRs or the cluster's freshness changed)."""
        for key in list(self._raw):
            await self._program(key)

    async def withdraw(self) -> None:
        """Take every record out of the merge and forget them."""
        for ns, name in sorted(self.programmed):
            await self._sinks.services.set_remote(self.name, ns, name, None)
        self.programmed.clear()
        self._raw.clear()
        self.rejects.sync({})
        self._cidrs_seen = None

    async def _unmerge(self, key: str) -> None:
        parts = keys.parse(key).parts if key.startswith(keys.SERVICES) else ()
        if len(parts) == 3 and (parts[1], parts[2]) in self.programmed:
            self.programmed.discard((parts[1], parts[2]))
            await self._sinks.services.set_remote(self.name, parts[1], parts[2], None)

    async def _program(self, key: str) -> None:
        bounds = self._bounds()
        assert bounds is not None
        table = self._sinks.ipcache.table(self.name)
        if table is None or not PLACEMENT.issubset(table.synced_parts):
            return  # kept raw until the nodes and allocations are listed (docstring)
        try:
            checked = check_cluster_service(key, self._raw[key], bounds, table.cidrs)
        except Rejected as e:
            self.rejects.reject(key, str(e))
            await self._unmerge(key)
            return
        if checked.dropped:
            self.rejects.reject(key, f"{len(checked.dropped)} backends dropped: "
                                f"{checked.dropped[0]}")  # fmt: skip
        else:
            self.rejects.accept(key)
        svc = checked.service
        self.programmed.add((svc.namespace, svc.name))
        await self._sinks.services.set_remote(
            self.name, svc.namespace, svc.name, RemoteRecord(svc, stale=self._stale())
        )


class _Placement:
    def __init__(self, owner: RemoteServices, inner: Any) -> None:
        self._owner = owner
        self._inner = inner

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        await self._inner.on_upsert(key, kv)
        await self._owner.cidrs_changed()

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        await self._inner.on_delete(key, old)
        await self._owner.cidrs_changed()

    async def on_synced(self) -> None:
        await self._inner.on_synced()
        await self._owner.cidrs_changed()


class _Services:
    def __init__(self, owner: RemoteServices) -> None:
        self._owner = owner

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        await self._owner.upsert(key, kv.value)

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        await self._owner.delete(key)

    def on_synced(self) -> None:
        return None
