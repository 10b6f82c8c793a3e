"""Deferred deletes: a reflector-handler wrapper that waits before passing a delete on.

etcd paused or cut off longer than a lease's TTL revokes the expired leases the
moment it runs again and deletes every key on them (FIELD-NOTES); their owners,
still alive, grant a new lease and put the same keys again a moment later. A
consumer that acted on those deletes at once would drop live entries from its
tables for that moment (an ipcache entry, a Service backend), and traffic with
them.

:class:`DeferredDeletes` wraps a :class:`~glia.kvstore.reflector.ReflectorHandler`.
A delete that may be such a revocation is held for ``grace`` seconds; if the key
is put again meanwhile the delete is cancelled and the consumer sees only the
new value, or nothing when the value is unchanged. A delete that cannot be one
passes at once: a key without a lease, or (given ``lease_alive``) a key whose
lease still exists, which only its owner can have deleted on purpose. Pending
deletes are delivered by :meth:`DeferredDeletes.stop` (or dropped, if asked).

Wrapped this way: the agent's ipcache reflectors (nodes and ip entries) and the
operator's :class:`~glia.operator.services.ServiceResolver` (endpoints, backend
health). :func:`defer_deletes` builds one with the lease check of a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from glia.kvstore.client import KeyValue, KVClient
from glia.kvstore.errors import KVStoreError
from glia.kvstore.reflector import ReflectorHandler

log = logging.getLogger(__name__)

# After etcd revokes a lease, its owner learns it on its next keep-alive (at
# most ~1 s later: glia.kvstore.lease retries a broken stream within a second,
# and a renewal already queued is answered the moment etcd runs again), grants
# a new lease and puts its keys again in a few batched transactions; seen here
# about 0.5 s end to end. 5 s covers that several times over on a loaded
# machine, and adds little to what a real loss already takes (the owner died:
# the lease TTL, 15 s by default, passed before etcd deleted anything).
DEFAULT_GRACE = 5.0
# Bound on the lease lookup of one delete (events come from a running etcd, so
# it answers at once; a lookup that does not is treated as "may come back").
LEASE_CHECK_TIMEOUT = 2.0
DEAD_LEASES_KEPT = 4096

LeaseAlive = Callable[[int], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    old: KeyValue | None
    task: asyncio.Task[None]


async def _call(result: Awaitable[None] | None) -> None:
    if inspect.isawaitable(result):
        await result


class DeferredDeletes:
    """A :class:`ReflectorHandler` that holds deletes back for ``grace`` seconds.

    Every call into the wrapped handler is serialised (the reflector's and the
    timers'), so the handler sees one call at a time, as without the wrapper.
    """

    def __init__(
        self,
        handler: ReflectorHandler,
        grace: float = DEFAULT_GRACE,
        *,
        lease_alive: LeaseAlive | None = None,
        sleep: Sleep = asyncio.sleep,
        name: str = "",
    ) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace}")
        self.handler = handler
        self.grace = grace
        self.name = name or type(handler).__name__
        self._lease_alive = lease_alive
        self._sleep = sleep
        self._pending: dict[str, _Pending] = {}
        self._dead: OrderedDict[int, None] = OrderedDict()  # leases known to be gone
        self._lock = asyncio.Lock()
        self.deferred = 0  # deletes held back
        self.cancelled = 0  # held deletes cancelled by the key's return
        self.delivered_late = 0  # held deletes passed on after the grace period
        self.errors = 0  # handler failures on a late delivery

    def pending(self) -> list[str]:
        """Keys whose delete is being held back."""
        return sorted(self._pending)

    def status(self) -> dict[str, object]:
        return {
            "grace": self.grace,
            "pending": len(self._pending),
            "deferred": self.deferred,
            "cancelled": self.cancelled,
            "delivered_late": self.delivered_late,
            "errors": self.errors,
        }

    # --- ReflectorHandler -----------------------------------------------------

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        async with self._lock:
            held = self._pending.pop(key, None)
            if held is not None:
                held.task.cancel()
                self.cancelled += 1
                if held.old is not None and held.old.value == kv.value:
                    return  # back as it was: the consumer never saw it go
            await _call(self.handler.on_upsert(key, kv))

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        if key in self._pending:
            return  # already held (a repeated delete changes nothing)
        if self.grace == 0 or not await self._may_come_back(old):
            async with self._lock:
                await _call(self.handler.on_delete(key, old))
            return
        async with self._lock:
            self.deferred += 1
            task = asyncio.create_task(self._deliver_later(key), name=f"deferred delete {key}")
            self._pending[key] = _Pending(old, task)

    async def on_synced(self) -> None:
        async with self._lock:
            await _call(self.handler.on_synced())

    # --- lifecycle ------------------------------------------------------------

    async def flush(self) -> None:
        """Pass every held delete on now, in key order."""
        async with self._lock:
            held, self._pending = self._pending, {}
            for key in sorted(held):
                held[key].task.cancel()
                await self._deliver(key, held[key].old)
        await self._reap(held)

    async def stop(self, *, deliver: bool = True) -> None:
        """Deliver (or, with ``deliver=False``, drop) the held deletes; stop the timers."""
        if deliver:
            await self.flush()
            return
        async with self._lock:
            held, self._pending = self._pending, {}
            for p in held.values():
                p.task.cancel()
        await self._reap(held)

    async def _reap(self, held: dict[str, _Pending]) -> None:
        for p in held.values():
            if p.task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError):
                    await p.task

    # --- internals ------------------------------------------------------------

    async def _may_come_back(self, old: KeyValue | None) -> bool:
        """Whether the delete may be a lease revocation whose owner puts the key again."""
        if old is None:
            return False  # never seen by the consumer either: nothing to protect
        if old.lease == 0:
            return False  # no lease, so deleted on purpose
        if self._lease_alive is None or old.lease in self._dead:
            return True
        try:
            alive = await asyncio.wait_for(self._lease_alive(old.lease), LEASE_CHECK_TIMEOUT)
        except (KVStoreError, TimeoutError) as e:
            log.info(
                "%s: lease %#x of %s unknown (%r): holding its delete",
                self.name,
                old.lease,
                old.key,
                e,
            )
            return True
        if alive:
            return False  # the owner deleted it while holding its lease: on purpose
        self._dead[old.lease] = None
        while len(self._dead) > DEAD_LEASES_KEPT:
            self._dead.popitem(last=False)
        return True

    async def _deliver_later(self, key: str) -> None:
        await self._sleep(self.grace)
        async with self._lock:
            held = self._pending.get(key)
            if held is None or held.task is not asyncio.current_task():
                return
            del self._pending[key]
            self.delivered_late += 1
            await self._deliver(key, held.old)

    async def _deliver(self, key: str, old: KeyValue | None) -> None:
        try:
            await _call(self.handler.on_delete(key, old))
        except Exception:
            self.errors += 1
            log.exception("%s: handler on_delete(%r) failed", self.name, key)


def lease_check(client: KVClient) -> LeaseAlive:
    """``lease_alive`` for :class:`DeferredDeletes`: does etcd still hold this lease?"""

    async def alive(lease_id: int) -> bool:
        # -1: no such lease. 0 is a live lease with less than a second left (etcd
        # rounds down); by the time a watcher sees a revocation's deletes etcd has
        # already dropped the lease, so this never mistakes one for alive.
        return await client.lease_ttl(lease_id) >= 0

    return alive


def defer_deletes(
    handler: ReflectorHandler, client: KVClient, grace: float = DEFAULT_GRACE
) -> DeferredDeletes:
    """``handler`` with deletes held back ``grace`` seconds unless their lease still lives."""
    return DeferredDeletes(handler, grace, lease_alive=lease_check(client))
