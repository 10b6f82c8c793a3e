"""Connections to one etcd cluster: one gRPC channel per endpoint, failover, retry.

Used by :class:`glia.kvstore.client.KVClient`, its leases and its watches.

Why the generated stubs (``aetcd.rpc``) and not ``aetcd.Client``: aetcd's
client is bound to one insecure channel to one host, its range requests
cannot set ``limit``/``revision`` (needed for consistent paged lists), its
errors drop the gRPC status code, and its shared watch stream reports neither
why a watch was cancelled (RBAC) nor lets a watch resume on its own. The
protobuf messages and stubs it ships are the complete etcd v3 API, so glia
uses those, with its own channels.

Unary calls go to the current endpoint; a transient failure (UNAVAILABLE,
DEADLINE_EXCEEDED) moves to the next endpoint and retries with capped
exponential backoff until ``retry_timeout`` has passed. A mutation retried
after a lost reply may have been applied already: :meth:`KVClient.create` and
:meth:`KVClient.update_if` then report ``False``, and callers re-read (as every
compare-and-swap loop does anyway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from glia.kvstore.errors import KVStoreError, KVStoreUnavailable, is_transient, map_rpc_error
from glia.kvstore.tls import Endpoint, open_channel

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0


@dataclass(slots=True)
class Conn:
    """The channel and stubs of one endpoint."""

    endpoint: Endpoint
    channel: grpc.aio.Channel
    kv: Any
    lease: Any
    watch: Any
    maintenance: Any

    @property
    def url(self) -> str:
        return self.endpoint.url


class ConnPool:
    def __init__(
        self,
        endpoints: list[Endpoint],
        creds: grpc.ChannelCredentials | None,
        *,
        call_timeout: float,
        retry_timeout: float,
        user: str | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._creds = creds
        self._conns: dict[int, Conn] = {}
        self._current = 0
        self.call_timeout = call_timeout
        self.retry_timeout = retry_timeout
        self.closed = False
        self.user = user  # the etcd user (certificate CN), for messages

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def current(self) -> Conn:
        if self.closed:
            raise KVStoreError("the etcd client is closed")
        i = self._current
        conn = self._conns.get(i)
        if conn is None:
            ep = self._endpoints[i]
            ch = open_channel(ep, self._creds)
            conn = Conn(
                endpoint=ep,
                channel=ch,
                kv=rpc.KVStub(ch),
                lease=rpc.LeaseStub(ch),
                watch=rpc.WatchStub(ch),
                maintenance=rpc.MaintenanceStub(ch),
            )
            self._conns[i] = conn
        return conn

    def failed(self, conn: Conn) -> None:
        """``conn`` failed transiently: the next caller tries the next endpoint."""
        if self._conns.get(self._current) is conn and len(self._endpoints) > 1:
            self._current = (self._current + 1) % len(self._endpoints)
            log.info("etcd %s failed, trying %s next", conn.url, self._endpoints[self._current].url)

    async def unary(
        self,
        what: str,
        call: Callable[[Conn, float], Awaitable[T]],
        *,
        retry_for: float | None = None,
    ) -> T:
        """Run ``call(conn, timeout)``, failing over and retrying transient errors.

        Non-transient errors (RBAC, bad request) are raised at once as
        :class:`KVStoreError` subclasses; transient ones for ``retry_for``
        seconds (default ``retry_timeout``), then as :class:`KVStoreUnavailable`.
        """
        loop = asyncio.get_running_loop()
        budget = self.retry_timeout if retry_for is None else retry_for
        deadline = loop.time() + budget
        delay = BACKOFF_MIN
        attempts = 0
        while True:
            conn = self.current()
            remaining = deadline - loop.time()
            timeout = max(0.1, min(self.call_timeout, remaining))
            try:
                return await call(conn, timeout)
            except grpc.aio.AioRpcError as e:
                code, details = e.code(), e.details() or ""
            attempts += 1
            err = map_rpc_error(code, details, conn.url, what, self.user)
            if self.closed:
                raise KVStoreError(f"{what}: the etcd client was closed") from None
            if not is_transient(code):
                raise err from None
            self.failed(conn)
            # A full round over every endpoint failed: wait before the next one.
            pause = delay if attempts % len(self._endpoints) == 0 else 0.0
            if loop.time() + pause >= deadline:
                raise KVStoreUnavailable(
                    f"etcd unreachable for {what} after {attempts} attempt(s) in {budget:.1f} s "
                    f"(endpoints: {', '.join(self.urls)}); last error from {conn.url}: "
                    f"{code.name if code else 'UNKNOWN'}: {details}"
                ) from None
            if pause:
                await asyncio.sleep(pause)
                delay = min(delay * 2, BACKOFF_MAX)

    async def close(self) -> None:
        self.closed = True
        conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            await c.channel.close()
