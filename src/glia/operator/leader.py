"""Leader election among a cluster's operator replicas, on an etcd lease.

The leader key is created only if absent, on the candidate's lease; losing the
lease (process death, partition longer than the TTL) frees the key and another
replica takes over. Called by :mod:`glia.operator.daemon`.
"""

from __future__ import annotations

import asyncio
import logging

from glia.kvstore.client import KVClient, Lease

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(self, client: KVClient, key: str, identity: str, ttl: int) -> None:
        self._kv = client
        self._key = key
        self._id = identity
        self._ttl = ttl
        self.lease: Lease | None = None

    async def acquire(self, poll: float = 1.0) -> Lease:
        """Block until this replica is the leader; returns the lease that holds it."""
        while True:
            lease = await self._kv.grant_lease(self._ttl)
            if await self._kv.create(self._key, self._id.encode(), lease=lease):
                self.lease = lease
                log.info("%s is the leader (%s)", self._id, self._key)
                return lease
            await lease.revoke()
            current = await self._kv.get(self._key)
            holder = current.value.decode(errors="replace") if current else "?"
            log.info("leader is %s; waiting", holder)
            await asyncio.sleep(poll)

    async def resign(self) -> None:
        if self.lease is not None:
            await self.lease.revoke()
            self.lease = None
