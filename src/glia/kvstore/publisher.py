"""Keys a process owns on its lease, re-published whenever the lease is lost.

The agent publishes its node, endpoints, ipcache entries and identity
references on one lease, so they vanish when the agent dies (TTL). If the lease
is lost while the agent lives (etcd down longer than the TTL), the publisher
grants a new one and writes every key again: the desired set lives here, the
kvstore is its mirror. One writer: only the owning process publishes its keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from glia.kvstore.client import KVClient, Lease
from glia.kvstore.errors import KVStoreError

log = logging.getLogger(__name__)


class LeasedPublisher:
    def __init__(self, client: KVClient, ttl: int) -> None:
        self._client = client
        self._ttl = ttl
        self._desired: dict[str, bytes] = {}
        self._lease: Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.regrants = 0

    @property
    def lease(self) -> Lease | None:
        return self._lease

    async def start(self) -> None:
        self._lease = await self._client.grant_lease(self._ttl)
        self._task = asyncio.create_task(self._watch_lease(), name="lease-watch")

    async def stop(self, *, revoke: bool = False) -> None:
        """Stop keeping the lease alive; ``revoke`` deletes every key at once."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease is not None:
            if revoke:
                with contextlib.suppress(KVStoreError):
                    await self._lease.revoke()
            else:
                await self._lease.stop_keepalive()

    async def publish(self, key: str, value: bytes) -> None:
        async with self._lock:
            self._desired[key] = value
            assert self._lease is not None, "publisher not started"
            await self._client.put(key, value, lease=self._lease)

    async def withdraw(self, key: str) -> None:
        async with self._lock:
            self._desired.pop(key, None)
            await self._client.delete(key)

    def published(self) -> dict[str, bytes]:
        return dict(self._desired)

    async def _watch_lease(self) -> None:
        while True:
            assert self._lease is not None
            await self._lease.lost.wait()
            log.warning(
                "kvstore lease %x lost: re-granting and re-publishing %d keys",
                self._lease.id,
                len(self._desired),
            )
            await self._regrant()

    async def _regrant(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self._lock:
                    lease = await self._client.grant_lease(self._ttl)
                    for key, value in self._desired.items():
                        await self._client.put(key, value, lease=lease)
                    self._lease = lease
                    self.regrants += 1
                    return
            except KVStoreError as e:
                log.warning("re-publishing after lease loss failed: %s (retry in %.1fs)", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
