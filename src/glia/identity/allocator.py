"""Cluster-wide numeric identities for label sets, allocated in etcd.

Called by the agent's endpoint manager. Layout (see :mod:`glia.kvstore.keys`):

- ``.../labels/<digest>`` -> numeric id and ``.../id/<n>`` -> Identity are
  created together in one transaction that succeeds only if neither exists, so
  two agents allocating the same labels at once agree on one id, and one id is
  never given to two label sets;
- ``.../refs/<n>/<node>`` marks that a node uses the id, on the node's lease.
  The operator deletes ids without references after a grace period; an agent
  that still uses an id whose master key vanished re-creates it.

Reserved identities (< 256) are never stored.
"""

from __future__ import annotations

import json
import logging
import random

from glia.kvstore import keys
from glia.kvstore.client import Compare, KeyValue, KVClient, Put
from glia.kvstore.publisher import LeasedPublisher
from glia.model import codec
from glia.model.identity import MAX_LOCAL, MIN_LOCAL, Identity, labels_key, make_cluster_identity
from glia.validate.identities import cluster_range

log = logging.getLogger(__name__)


class IdentityExhausted(Exception):
    pass


class IdentityAllocator:
    def __init__(
        self, client: KVClient, publisher: LeasedPublisher, cluster: str, cluster_id: int, node: str
    ) -> None:
        self._kv = client
        self._pub = publisher
        self._cluster = cluster
        self._cluster_id = cluster_id
        self._node = node
        self._users: dict[int, int] = {}  # id -> number of local endpoints using it
        self._by_id: dict[int, Identity] = {}

    async def allocate(self, labels: dict[str, str]) -> Identity:
        """Identity for ``labels`` (existing or new), referenced by this node."""
        ident = await self._lookup_or_create(labels)
        self._users[ident.id] = self._users.get(ident.id, 0) + 1
        self._by_id[ident.id] = ident
        if self._users[ident.id] == 1:
            await self._pub.publish(keys.identity_ref(self._cluster, ident.id, self._node), b"")
        return ident

    async def release(self, numeric: int) -> None:
        """Drop one local use of ``numeric``; the node's reference goes with the last."""
        if numeric < MIN_LOCAL or numeric not in self._users:
            return
        self._users[numeric] -= 1
        if self._users[numeric] <= 0:
            del self._users[numeric]
            self._by_id.pop(numeric, None)
            await self._pub.withdraw(keys.identity_ref(self._cluster, numeric, self._node))

    def in_use(self) -> dict[int, int]:
        return dict(self._users)

    async def prune_refs(self) -> int:
        """Delete this node's references to ids it no longer uses; returns how many.

        A restarted agent references only what its adopted endpoints use; the
        references of the previous run would otherwise keep unused ids alive
        until that run's lease expires.
        """
        items, _ = await self._kv.list(keys.identity_refs(self._cluster, self._node))
        pruned = 0
        for kv in items:
            ref = keys.parse_identity_ref(self._cluster, kv.key)
            if ref is None or ref[0] != self._node:
                continue
            if ref[1] not in self._users and await self._kv.delete_if(
                kv.key, mod_revision=kv.mod_revision
            ):
                pruned += 1
        return pruned

    async def ensure_master_keys(self) -> int:
        """Re-create master keys of ids still used here that GC removed; returns how many."""
        fixed = 0
        for numeric, ident in list(self._by_id.items()):
            idkey = keys.identity_id(self._cluster, numeric)
            if await self._kv.get(idkey) is not None:
                continue
            lkey = keys.identity_labels(self._cluster, labels_key(ident.labels))
            value = codec.encode(ident)
            # Both gone (the GC's transaction), or only the id while the label
            # index still names it: either way the labels keep their number.
            ok = await self._kv.txn(
                [Compare(idkey, "create", "==", 0), Compare(lkey, "create", "==", 0)],
                [Put(idkey, value), Put(lkey, str(numeric).encode())],
            ) or await self._kv.txn(
                [
                    Compare(idkey, "create", "==", 0),
                    Compare(lkey, "value", "==", str(numeric).encode()),
                ],
                [Put(idkey, value)],
            )
            fixed += int(ok)
        return fixed

    async def _lookup_or_create(self, labels: dict[str, str]) -> Identity:
        lkey = keys.identity_labels(self._cluster, labels_key(labels))
        for _ in range(64):
            kv = await self._kv.get(lkey)
            if kv is not None:
                numeric = _parse_id(kv.value, lkey, self._cluster_id)
                return Identity(numeric, dict(labels))
            numeric = await self._pick_free()
            ident = Identity(numeric, dict(labels))
            idkey = keys.identity_id(self._cluster, numeric)
            ok = await self._kv.txn(
                [Compare(lkey, "create", "==", 0), Compare(idkey, "create", "==", 0)],
                [Put(idkey, codec.encode(ident)), Put(lkey, str(numeric).encode())],
            )
            if ok:
                log.info("allocated identity %d for %s", numeric, labels)
                return ident
            # Lost a race: either the labels were just allocated (next loop
            # finds them) or the id was taken (pick another).
        raise IdentityExhausted(f"could not allocate an identity for {labels} after 64 attempts")

    async def _pick_free(self) -> int:
        items, _ = await self._kv.list(keys.identity_ids(self._cluster))
        used = set()
        for kv in items:
            try:
                used.add(int(keys.last(kv.key)))
            except ValueError:
                continue
        free_count = (MAX_LOCAL - MIN_LOCAL + 1) - len(used)
        if free_count <= 0:
            raise IdentityExhausted(f"all identities of cluster {self._cluster} are allocated")
        # Random start spreads concurrent allocators over different ids.
        start = random.randint(MIN_LOCAL, MAX_LOCAL)
        for i in range(MAX_LOCAL - MIN_LOCAL + 1):
            n = MIN_LOCAL + (start - MIN_LOCAL + i) % (MAX_LOCAL - MIN_LOCAL + 1)
            numeric = make_cluster_identity(self._cluster_id, n)
            if numeric not in used:
                return numeric
        raise IdentityExhausted(f"all identities of cluster {self._cluster} are allocated")


class MasterKeyKeeper:
    """Reflector handler on the cluster's identity ids (``identity_ids``).

    The operator's GC may delete an id in the instant a node starts using it
    (it saw no reference, then the node looked the labels up and published its
    reference). Without its master key other nodes would give the same labels
    another id, so the node re-creates the keys as soon as it sees them go.
    """

    def __init__(self, allocator: IdentityAllocator) -> None:
        self._alloc = allocator

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        return None

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        try:
            numeric = int(keys.last(key))
        except ValueError:
            return
        if numeric in self._alloc.in_use():
            fixed = await self._alloc.ensure_master_keys()
            log.warning("identity %d was deleted while in use: re-created %d", numeric, fixed)

    async def on_synced(self) -> None:
        await self._alloc.ensure_master_keys()


def _parse_id(raw: bytes, key: str, cluster_id: int) -> int:
    """The id a label index names; only one of this cluster's range is believed
    (any agent may write the index: a forged one must not hand out a reserved
    identity or another cluster's)."""
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    lo, hi = cluster_range(cluster_id)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise codec.InvalidValue(
            f"{key}: expected an identity of this cluster ({lo}..{hi}), got {raw[:40]!r}"
        )
    return value
