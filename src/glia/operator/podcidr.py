"""Pod CIDR allocation to nodes (operator, leader only).

Watches the cluster's node records; a node without an allocation gets the
lowest free block of the pool. The block key and the node's allocation key are
created in one compare-and-swap transaction, so a block is never given twice,
even by two operators that both believe they lead. Allocations are not on a
lease: a node that restarts gets its block back (its endpoints hold IPs in it).
"""

from __future__ import annotations

import logging

from glia.ipam.pool import PoolExhausted, next_block
from glia.kvstore import keys
from glia.kvstore.client import Compare, KeyValue, KVClient, Put
from glia.model import codec
from glia.model.node import Node, PodCIDRAllocation

log = logging.getLogger(__name__)


class PodCIDRAllocator:
    def __init__(self, client: KVClient, cluster: str, pool: str, mask: int) -> None:
        self._kv = client
        self._cluster = cluster
        self._pool = pool
        self._mask = mask
        self.allocated = 0
        self.errors = 0

    # Reflector handler on keys.nodes(cluster)
    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        try:
            node = codec.decode(Node, kv.value)
        except codec.InvalidValue as e:
            log.warning("ignoring invalid node record %s: %s", key, e)
            return
        await self.ensure(node.name)

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        return None

    async def on_synced(self) -> None:
        return None

    async def ensure(self, node: str) -> str | None:
        """The node's block, allocating one if it has none."""
        for _ in range(16):
            existing = await self._kv.get(keys.podcidr_node(self._cluster, node))
            if existing is not None:
                return codec.decode(PodCIDRAllocation, existing.value).cidr
            items, _ = await self._kv.list(keys.podcidr_nodes(self._cluster))
            used = []
            for kv in items:
                try:
                    used.append(codec.decode(PodCIDRAllocation, kv.value).cidr)
                except codec.InvalidValue:
                    continue
            try:
                cidr = next_block(self._pool, self._mask, used)
            except PoolExhausted as e:
                self.errors += 1
                log.error("cannot allocate a pod CIDR for node %s: %s", node, e)
                return None
            nkey = keys.podcidr_node(self._cluster, node)
            bkey = keys.podcidr_block(self._cluster, cidr)
            ok = await self._kv.txn(
                [Compare(nkey, "create", "==", 0), Compare(bkey, "create", "==", 0)],
                [
                    Put(nkey, codec.encode(PodCIDRAllocation(node=node, cidr=cidr))),
                    Put(bkey, node.encode()),
                ],
            )
            if ok:
                self.allocated += 1
                log.info("allocated pod CIDR %s to node %s", cidr, node)
                return cidr
        self.errors += 1
        log.error("gave up allocating a pod CIDR for %s after repeated conflicts", node)
        return None
