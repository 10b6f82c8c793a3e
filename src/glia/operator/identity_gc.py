"""Garbage collection of unused identities (operator, leader only).

An identity whose ``refs/<id>/`` prefix has been empty for longer than the
grace period loses its master key and label index (deleted only if unchanged
since it was examined). An agent that still uses it re-creates both (see
:class:`glia.identity.allocator.IdentityAllocator`), so a race costs a
re-creation, never a wrong id.

References live on their agents' leases, so an etcd pause past the TTL
deletes them all when etcd resumes; the agents put them back within a second
or two. That never collects an identity in use: it must be found unreferenced
by every pass for the whole grace period (60 s by default; one pass that sees a
reference starts the count again), and a new leader term starts with a new
collector that has seen nothing yet.
"""

from __future__ import annotations

import logging
import time

from glia.kvstore import keys
from glia.kvstore.client import Compare, Delete, KVClient
from glia.model import codec
from glia.model.identity import Identity, labels_key

log = logging.getLogger(__name__)


def unreferenced(ids: dict[int, int], refs: set[int]) -> dict[int, int]:
    """Identities (id -> mod revision) with no reference (pure)."""
    return {i: rev for i, rev in ids.items() if i not in refs}


class IdentityGC:
    def __init__(self, client: KVClient, cluster: str, grace: float) -> None:
        self._kv = client
        self._cluster = cluster
        self._grace = grace
        self._since: dict[int, float] = {}  # id -> when first seen unreferenced
        self.collected = 0
        self.identities = 0  # identities the last pass listed (for the operator's metrics)

    async def run_once(self, now: float | None = None) -> list[int]:
        now = time.monotonic() if now is None else now
        items, _ = await self._kv.list(keys.identity_ids(self._cluster))
        ids: dict[int, int] = {}
        values: dict[int, bytes] = {}
        for kv in items:
            try:
                n = int(keys.last(kv.key))
            except ValueError:
                continue
            ids[n] = kv.mod_revision
            values[n] = kv.value
        ref_items, _ = await self._kv.list(keys.identity_refs(self._cluster))
        refs = set()
        for kv in ref_items:
            ref = keys.parse_identity_ref(self._cluster, kv.key)
            if ref is not None:
                refs.add(ref[1])
        self.identities = len(ids)
        candidates = unreferenced(ids, refs)
        for n in list(self._since):
            if n not in candidates:
                del self._since[n]
        collected = []
        for n, rev in candidates.items():
            first = self._since.setdefault(n, now)
            if now - first < self._grace:
                continue
            idkey = keys.identity_id(self._cluster, n)
            compares = [Compare(idkey, "mod", "==", rev)]
            dels = [Delete(idkey)]
            try:
                ident = codec.decode(Identity, values[n])
            except codec.InvalidValue:
                ident = None
            if ident is not None:
                lkey = keys.identity_labels(self._cluster, labels_key(ident.labels))
                lkv = await self._kv.get(lkey)
                # Only drop the label index if it still points at this id.
                if lkv is not None and lkv.value == str(n).encode():
                    compares.append(Compare(lkey, "mod", "==", lkv.mod_revision))
                    dels.append(Delete(lkey))
            if await self._kv.txn(compares, dels):
                collected.append(n)
                self._since.pop(n, None)
                log.info("identity %d garbage-collected", n)
        self.collected += len(collected)
        return collected
