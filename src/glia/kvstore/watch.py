"""A resumable watch on one key prefix: every event once, in order, across reconnects.

Backs :meth:`glia.kvstore.client.KVClient.watch` (and so every
:class:`~glia.kvstore.reflector.Reflector`). Each watch has its own gRPC
stream, so one watch's failure or cancellation never disturbs another.

Resume rule: after yielding an event at revision R the next stream starts at
R + 1. etcd never splits one revision's events over two watch responses
(without ``fragment``), and a new stream is only opened between responses, so
nothing is lost or repeated. Progress notifications (no events, header
revision H) move the resume point to H + 1, which keeps an idle watch from
falling behind a compaction.

Ends only by raising: :class:`Compacted` (start over with a list),
:class:`PermissionDenied` (RBAC refused the watch; etcd reports it as a
cancellation with watch id -1, which other Python clients swallow), or
:class:`KVStoreError` (client closed, or a cancellation for another reason).
Other failures (connection lost, etcd restarting, leader change) are retried
forever, with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

import grpc
from aetcd import rpc

from glia.kvstore.conn import ConnPool
from glia.kvstore.errors import Compacted, KVStoreError, is_fatal_for_stream, map_rpc_error
from glia.kvstore.records import Event, event_from_pb, prefix_range

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


class _StreamEnded(Exception):
    """The server closed the watch stream without an error status."""


async def watch_prefix(
    pool: ConnPool,
    prefix: str,
    start_revision: int,
    on_reconnect: Callable[[str], None] | None = None,
) -> AsyncGenerator[Event, None]:
    if start_revision < 1:
        raise ValueError(f"watch start_revision must be >= 1, got {start_revision}")
    key, range_end = prefix_range(prefix)
    next_rev = start_revision
    delay = BACKOFF_MIN
    while True:
        conn = pool.current()
        call = conn.watch.Watch()
        reason = ""
        try:
            create = rpc.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=next_rev, progress_notify=True
            )
            await call.write(rpc.WatchRequest(create_request=create))
            created = False
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise _StreamEnded
                _check_response(resp, prefix, conn.url, pool.user)
                if resp.created:
                    created = True
                    delay = BACKOFF_MIN
                    continue
                for pb in resp.events:
                    ev = event_from_pb(pb)
                    next_rev = ev.mod_revision + 1
                    yield ev
                if created and not resp.events and resp.header.revision >= next_rev:
                    next_rev = resp.header.revision + 1
        except grpc.aio.AioRpcError as e:
            code, details = e.code(), e.details() or ""
            if pool.closed:
                raise KVStoreError(
                    f"watch on {prefix!r} ended: the etcd client was closed"
                ) from None
            if is_fatal_for_stream(code):
                raise map_rpc_error(
                    code, details, conn.url, f"watch {prefix!r}", pool.user
                ) from None
            reason = f"{code.name}: {details}"
        except (_StreamEnded, asyncio.InvalidStateError):
            # InvalidStateError: gRPC's answer to a write on a call that has
            # already failed, as the stream may break before the create request.
            reason = "stream closed"
        finally:
            call.cancel()
        log.info(
            "watch %r on %s broke (%s); resuming at revision %d", prefix, conn.url, reason, next_rev
        )
        if on_reconnect is not None:
            on_reconnect(reason)
        pool.failed(conn)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


def _check_response(resp: Any, prefix: str, url: str, user: str | None) -> None:
    if resp.compact_revision:
        raise Compacted(
            int(resp.compact_revision),
            f"watch on {prefix!r} at {url}: history before revision "
            f"{resp.compact_revision} has been compacted; list again",
        )
    if resp.canceled:
        reason = resp.cancel_reason or "no reason given"
        raise map_rpc_error(
            grpc.StatusCode.PERMISSION_DENIED if "permission denied" in reason else None,
            reason,
            url,
            f"watch {prefix!r} (cancelled by the server)",
            user,
        )
