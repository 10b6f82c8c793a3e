"""Leader election among a cluster's operator replicas, on an etcd lease.

The leader key is created only if absent, on the candidate's lease; losing the
lease (process death, etcd unreachable longer than the TTL) frees the key and
a replica takes over, possibly the same one campaigning again. Called by
:mod:`glia.operator.daemon`, which runs the leader's duties between
:meth:`LeaderElection.acquire` and :func:`lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from glia.kvstore.client import KVClient, Lease
from glia.kvstore.errors import KVStoreError

log = logging.getLogger(__name__)

BACKOFF_MAX = 5.0
REVOKE_TIMEOUT = 2.0  # a revoke etcd does not answer is left to the TTL


class LeaderElection:
    def __init__(self, client: KVClient, key: str, identity: str, ttl: int) -> None:
        self._kv = client
        self._key = key
        self._id = identity
        self._ttl = ttl
        self._granted: set[int] = set()  # every lease this replica campaigned with
        self.lease: Lease | None = None

    async def acquire(self, poll: float = 1.0) -> Lease:
        """Block until this replica is the leader; returns the lease that holds it.

        Keeps trying while etcd is unreachable. A leader key left on one of this
        replica's own earlier leases (a term that ended while etcd was away, not
        yet revoked) is cleared at once instead of waiting out its TTL.
        """
        delay = poll
        while True:
            try:
                lease = await self._kv.grant_lease(self._ttl)
            except KVStoreError as e:
                log.warning("campaigning for %s: %s (retry in %.1fs)", self._key, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self._granted.add(lease.id)
            try:
                if await self._kv.create(self._key, self._id.encode(), lease=lease):
                    self.lease = lease
                    log.info("%s is the leader (%s)", self._id, self._key)
                    return lease
                current = await self._kv.get(self._key)
            except KVStoreError as e:
                await lease.stop_keepalive()  # etcd is away: let it run out
                log.warning("campaigning for %s: %s (retry in %.1fs)", self._key, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            await _drop(lease)
            delay = poll
            if current is not None and current.lease in self._granted:
                log.info("clearing this replica's leader key of an earlier term")
                with contextlib.suppress(KVStoreError):
                    await self._kv.revoke_lease(current.lease)
                continue
            holder = current.value.decode(errors="replace") if current else "?"
            log.info("leader is %s; waiting", holder)
            await asyncio.sleep(poll)

    async def resign(self) -> None:
        """Give the key up now (best effort: if etcd is away, the lease runs out)."""
        lease, self.lease = self.lease, None
        if lease is not None:
            await _drop(lease)


async def _drop(lease: Lease) -> None:
    try:
        await asyncio.wait_for(lease.revoke(), REVOKE_TIMEOUT)
    except (KVStoreError, TimeoutError) as e:
        why = str(e) or f"no answer within {REVOKE_TIMEOUT} s"
        log.info("revoking lease %#x failed (it expires by itself): %s", lease.id, why)


async def lost(lease: Lease, check: float = 0.5) -> str:
    """Wait until leadership on ``lease`` is over; returns why.

    Over when etcd says the lease is gone, and also when no renewal has reached
    etcd within the TTL: etcd counts the TTL from when it received a renewal,
    later than this side sent it, so a leader cut off stops before etcd can let
    another replica in.
    """
    while True:
        if lease.lost.is_set():
            return f"lease {lease.id:#x} expired or was revoked"
        if lease.remaining() <= 0:
            return f"no renewal of lease {lease.id:#x} reached etcd within its {lease.ttl} s TTL"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lease.lost.wait(), min(check, max(lease.remaining(), 0.01)))
