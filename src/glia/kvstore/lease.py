"""An etcd lease kept alive in the background.

Made by :meth:`glia.kvstore.client.KVClient.grant_lease`. An agent puts its
node and endpoint keys on its lease: if the agent dies, the keep-alive stops,
the lease expires after ``ttl`` seconds and etcd deletes the keys ("a dead
agent's keys vanish").

The keep-alive sends a renewal every ``ttl/3`` seconds on a long-lived
LeaseKeepAlive stream; if the stream breaks (etcd restart, failover) it opens
another, on the next endpoint, and carries on. etcd extends every lease when a
leader takes office, so a restart shorter than the TTL loses nothing. When etcd
answers that the lease is gone (TTL 0: expired or revoked by someone else),
:attr:`Lease.lost` is set and the keep-alive ends: the owner must grant a new
lease and put its keys again. While etcd does not answer, attempts go out at
least once a second, so the owner hears of a revocation as soon as etcd runs
again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc
from aetcd import rpc

from glia.aiotasks import cancel_and_wait
from glia.kvstore.errors import KVStoreError, is_transient

if TYPE_CHECKING:
    from glia.kvstore.conn import ConnPool

log = logging.getLogger(__name__)

RETRY_MAX = 1.0  # seconds between keep-alive attempts while etcd does not answer


class _StreamEnded(Exception):
    """The server closed the keep-alive stream without an error."""


class Lease:
    def __init__(self, pool: ConnPool, lease_id: int, ttl: int) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.lost = asyncio.Event()
        self.renewals = 0  # successful keep-alives, for status and tests
        # Loop time until which etcd is known to hold the lease: the last
        # renewal's send time plus the TTL it granted. An owner cut off from
        # etcd (no renewal gets through) can tell it may have lost the lease
        # before ``lost`` can be set.
        self.valid_until = asyncio.get_running_loop().time() + ttl
        self._pool = pool
        self._task: asyncio.Task[None] | None = None
        # Checked after every await of the keep-alive: a cancel that gRPC or
        # wait_for swallowed must not keep it renewing (see glia.aiotasks).
        self._stopping = False

    def __repr__(self) -> str:
        return f"Lease(id={self.id:#x}, ttl={self.ttl}, lost={self.lost.is_set()})"

    def remaining(self) -> float:
        """Seconds the lease is still known to be held (<= 0: possibly expired)."""
        return self.valid_until - asyncio.get_running_loop().time()

    @property
    def interval(self) -> float:
        return max(self.ttl / 3, 0.2)

    def start_keepalive(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._keepalive(), name=f"etcd-lease-{self.id:x}")

    async def stop_keepalive(self) -> None:
        """Stop renewing without revoking: the lease then expires after its TTL."""
        task, self._task = self._task, None
        self._stopping = True
        await cancel_and_wait(task)

    async def revoke(self) -> None:
        """Stop renewing and revoke: etcd deletes every key on the lease now."""
        await self.stop_keepalive()
        req = rpc.LeaseRevokeRequest(ID=self.id)
        try:
            await self._pool.unary(
                f"revoke lease {self.id:#x}",
                lambda c, t: c.lease.LeaseRevoke(req, timeout=t),
            )
        except KVStoreError as e:
            if "requested lease not found" not in str(e):
                raise

    async def _keepalive(self) -> None:
        delay = 0.1
        while not self.lost.is_set() and not self._pool.closed and not self._stopping:
            conn = self._pool.current()
            call = conn.lease.LeaseKeepAlive()
            try:
                await self._renew_loop(call)
                return  # lost, or stopping
            except grpc.aio.AioRpcError as e:
                if not is_transient(e.code()) and e.code() != grpc.StatusCode.CANCELLED:
                    log.error(
                        "lease %#x: keep-alive refused by %s: %s: %s",
                        self.id,
                        conn.url,
                        e.code().name,
                        e.details(),
                    )
                else:
                    log.info(
                        "lease %#x: keep-alive to %s broke: %s", self.id, conn.url, e.details()
                    )
            except (TimeoutError, _StreamEnded, asyncio.InvalidStateError):
                # InvalidStateError: gRPC's answer to a write on a call that has
                # already failed (the stream broke between two renewals).
                log.info("lease %#x: no keep-alive answer from %s", self.id, conn.url)
            finally:
                call.cancel()
            if self._pool.closed or self._stopping:
                return
            self._pool.failed(conn)
            # Retry well within the TTL: the lease survives only if a renewal
            # gets through before it runs out. At most a second apart, so that
            # once etcd answers again (and has revoked the lease, if it was down
            # longer than the TTL) the owner learns it at once and re-publishes
            # (see glia.kvstore.publisher and glia.kvstore.grace).
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.interval, RETRY_MAX)

    async def _renew_loop(self, call: Any) -> None:
        req = rpc.LeaseKeepAliveRequest(ID=self.id)
        loop = asyncio.get_running_loop()
        while not self._stopping:
            sent = loop.time()
            await call.write(req)
            resp = await asyncio.wait_for(call.read(), timeout=max(self.interval, 1.0))
            if resp is grpc.aio.EOF:
                raise _StreamEnded
            if resp.TTL <= 0:
                log.warning("lease %#x is gone (expired or revoked): its keys are deleted", self.id)
                self.lost.set()
                return
            self.renewals += 1
            self.valid_until = sent + resp.TTL
            await asyncio.sleep(self.interval)
