"""The agent's identity cache: every identity of every source cluster, validated.

A reflector per cluster on ``identities/v2/<cluster>/id/`` feeds one
:class:`ClusterIdentities` table (pure): each master key is checked
(:func:`glia.validate.identities.check_identity`: the id matches its key, lies
in that cluster's range, the label set is bounded); rejected keys are counted
and shown. ``glia identity list`` reads it instead of listing etcd on every
call. The same reflector also feeds
:class:`~glia.identity.allocator.MasterKeyKeeper` for this cluster, so one
watch serves both.

Policy (:mod:`glia.agent.policy`) listens (:meth:`IdentityCache.listen`): every
identity that appears, changes or goes, in any table, is reported once with
the cluster that minted it; a removed source reports each of its identities gone.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from glia.kvstore.client import KeyValue
from glia.model.identity import Identity
from glia.validate.bounds import ClusterBounds
from glia.validate.errors import Rejected
from glia.validate.identities import check_identity
from glia.validate.rejects import RejectLog

# (minting cluster, identity number, the identity or None when it is gone)
IdentityListener = Callable[[str, int, Identity | None], None]


class ClusterIdentities:
    """One cluster's identities by number (pure)."""

    def __init__(self, bounds: ClusterBounds) -> None:
        self.bounds = bounds
        self.by_id: dict[int, Identity] = {}
        self._keys: dict[str, int] = {}
        self.rejects = RejectLog(f"identities of {bounds.cluster}")
        self.synced = False
        self.listener: IdentityListener | None = None

    def _notify(self, numeric: int, ident: Identity | None) -> None:
        if self.listener is not None:
            self.listener(self.bounds.cluster, numeric, ident)

    def _pop(self, key: str) -> Identity | None:
        numeric = self._keys.pop(key, None)
        return None if numeric is None else self.by_id.pop(numeric, None)

    def upsert(self, key: str, value: bytes) -> None:
        self.rejects.forget(key)
        old = self._pop(key)
        try:
            ident = check_identity(key, value, self.bounds)
        except Rejected as e:
            self.rejects.reject(key, str(e))
            if old is not None:
                self._notify(old.id, None)
            return
        self.rejects.accept(key)
        self.by_id[ident.id] = ident
        self._keys[key] = ident.id
        # A re-list re-delivers unchanged records: listeners hear only real changes.
        if old is not None and old.id != ident.id:
            self._notify(old.id, None)
        if old != ident:
            self._notify(ident.id, ident)

    def delete(self, key: str) -> None:
        self.rejects.forget(key)
        old = self._pop(key)
        if old is not None:
            self._notify(old.id, None)

    def clear(self) -> None:
        """Forget every identity (the source is removed), telling the listener."""
        for key in list(self._keys):
            self.delete(key)


class IdentityCache:
    """Every source cluster's identities; :meth:`handler` feeds one cluster's table."""

    def __init__(self, local: ClusterBounds) -> None:
        self._local = local.cluster
        self.tables: dict[str, ClusterIdentities] = {local.cluster: ClusterIdentities(local)}
        self._listener: IdentityListener | None = None

    def listen(self, listener: IdentityListener) -> None:
        """Report every change of every table to ``listener`` (one listener: policy).

        The identities already held are reported at once, as upserts."""
        self._listener = listener
        for table in self.tables.values():
            table.listener = listener
            for ident in list(table.by_id.values()):
                listener(table.bounds.cluster, ident.id, ident)

    def add_source(self, bounds: ClusterBounds) -> ClusterIdentities:
        """A remote cluster's identities (ClusterMesh), checked against its own range."""
        old = self.tables.get(bounds.cluster)
        if old is not None:
            old.clear()  # a replaced table's identities must not linger in listeners
        table = ClusterIdentities(bounds)
        table.listener = self._listener
        self.tables[bounds.cluster] = table
        return table

    def remove_source(self, cluster: str) -> None:
        if cluster != self._local:
            table = self.tables.pop(cluster, None)
            if table is not None:
                table.clear()

    def handler(self, cluster: str | None = None, also: Any = None) -> Any:
        """Reflector handler for ``cluster`` (default ours); ``also``: another handler
        that sees every event too (the master key keeper)."""
        table = self.tables[cluster or self._local]

        async def _also(method: str, *args: object) -> None:
            if also is not None:
                result = getattr(also, method)(*args)
                if inspect.isawaitable(result):
                    await result

        class _H:
            async def on_upsert(self, key: str, kv: KeyValue) -> None:
                table.upsert(key, kv.value)
                await _also("on_upsert", key, kv)

            async def on_delete(self, key: str, old: KeyValue | None) -> None:
                table.delete(key)
                await _also("on_delete", key, old)

            async def on_synced(self) -> None:
                table.synced = True
                await _also("on_synced")

        return _H()

    def get(self, numeric: int) -> Identity | None:
        for t in self.tables.values():
            if (ident := t.by_id.get(numeric)) is not None:
                return ident
        return None

    def all(self) -> Iterable[Identity]:
        for t in self.tables.values():
            yield from t.by_id.values()

    def status(self) -> dict[str, Any]:
        local = self.tables[self._local]
        return {
            "identities": sum(len(t.by_id) for t in self.tables.values()),
            "synced": local.synced,
            **local.rejects.status(),
        }
