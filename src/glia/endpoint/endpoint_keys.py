"""The kvstore side of a node's endpoints: their ipcache and endpoint keys.

Used by :class:`glia.endpoint.manager.EndpointManager` only. An endpoint's two
keys are published on the agent's lease in one transaction and withdrawn in
one (:meth:`glia.kvstore.publisher.LeasedPublisher.publish_many`), so a reader
never sees the endpoint without its ipcache entry, and each costs one round
trip. Layout v2 keys carry the writing node, so "this node's" is a prefix:
the stray sweep after a restart never touches another node's key.
"""

from __future__ import annotations

import logging

from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.kvstore.publisher import LeasedPublisher
from glia.model import codec
from glia.model.endpoint import Endpoint
from glia.model.ipcache import IPCacheEntry

log = logging.getLogger(__name__)


class EndpointKeys:
    def __init__(
        self,
        *,
        publisher: LeasedPublisher,
        kv: KVClient,
        cluster: str,
        cluster_id: int,
        node: str,
        node_ip: str,
    ) -> None:
        self._pub = publisher
        self._kv = kv
        self._cluster = cluster
        self._cluster_id = cluster_id
        self._node = node
        self._node_ip = node_ip

    def _keys(self, ep: Endpoint) -> tuple[str, str]:
        return (
            keys.ipcache(self._cluster, self._node, ep.ip),
            keys.endpoint(self._cluster, self._node, ep.namespace, ep.name),
        )

    async def publish(self, ep: Endpoint) -> None:
        """Put both keys; raises if etcd did not take them (they are put later)."""
        entry = IPCacheEntry(
            ip=ep.ip,
            identity=ep.identity,
            tunnel_endpoint=self._node_ip,
            cluster_id=self._cluster_id,
            node=self._node,
        )
        ipcache, endpoint = self._keys(ep)
        await self._pub.publish_many({ipcache: codec.encode(entry), endpoint: codec.encode(ep)})

    async def withdraw(self, ep: Endpoint) -> None:
        """Delete both keys (in the background while etcd is away); never raises."""
        await self._pub.withdraw_many(self._keys(ep))

    async def withdraw_name(self, namespace: str, name: str) -> None:
        """The endpoint key under an old name (the endpoint changed namespace)."""
        await self._pub.withdraw(keys.endpoint(self._cluster, self._node, namespace, name))

    async def withdraw_strays(self) -> int:
        """Delete this node's endpoint and ipcache keys that no adopted endpoint claims."""
        mine = self._pub.published()
        removed = 0
        for prefix in (
            keys.endpoints(self._cluster, self._node),
            keys.ipcaches(self._cluster, self._node),
        ):
            items, _ = await self._kv.list(prefix)
            for kv in items:
                if kv.key not in mine and await self._kv.delete_if(
                    kv.key, mod_revision=kv.mod_revision
                ):
                    log.info("withdrew stray key %s", kv.key)
                    removed += 1
        return removed
