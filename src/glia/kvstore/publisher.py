"""Keys a process owns on its lease, re-published whenever the lease is lost.

The agent publishes its node, endpoints, ipcache entries and identity
references on one lease, so they vanish when the agent dies (TTL). The desired
set lives here and the kvstore is its mirror; one writer: only the owning
process publishes its keys.

- :meth:`LeasedPublisher.publish` adds a key to the desired set and puts it. If
  the put fails (etcd unreachable) it raises, and the key, still desired, is put
  again in the background until it is there.
- :meth:`LeasedPublisher.withdraw` forgets the key *first*, then deletes it; if
  etcd does not answer, the delete is retried in the background until it
  succeeds or the key is published again. It never raises, so a rollback (a
  failed CNI ADD withdrawing what it published) cannot leave a key behind, not
  even across a lease re-grant. A key whose put failed may still reach etcd
  later (a request etcd had already received); its withdrawal checks once more
  ``SETTLE`` seconds after etcd answered. Only keys on one of this publisher's
  leases are deleted, so a late retry never removes another writer's key.
- :meth:`LeasedPublisher.publish_many` and :meth:`LeasedPublisher.withdraw_many`
  do the same for several keys in one transaction (an endpoint's ipcache and
  endpoint keys appear and go together, in one round trip).
- If the lease is lost while the process lives (etcd down longer than the TTL:
  on resuming etcd revokes it and deletes every key on it) the publisher grants
  a new lease and puts every desired key again, in batched transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from glia.aiotasks import cancel_and_wait
from glia.kvstore.client import Compare, Delete, KVClient, Lease, Put
from glia.kvstore.errors import KVStoreError, KVStoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

TXN_BATCH = 100  # puts per transaction when re-publishing (etcd allows 128)
ATTEMPT_TIMEOUT = 2.0  # one background attempt, and a withdrawal's first one
SETTLE = 2.0  # after etcd answers again, requests it had queued are applied by then
BACKOFF_MIN = 0.5
BACKOFF_MAX = 5.0
LEASE_GONE = "requested lease not found"


@dataclass(slots=True)
class _Repair:
    """A key whose kvstore state may differ from the desired set."""

    due: float  # loop time of the next attempt
    backoff: float = BACKOFF_MIN
    # A write of this key failed, so etcd may still apply it: a withdrawal
    # is done only once a check SETTLE seconds after etcd answered finds it gone.
    unsure: bool = False
    answered_at: float | None = None  # first successful check since the last failure


class LeasedPublisher:
    def __init__(self, client: KVClient, ttl: int, *, settle: float = SETTLE) -> None:
        self._client = client
        self._ttl = ttl
        self._settle = settle
        self._desired: dict[str, bytes] = {}
        self._repairs: dict[str, _Repair] = {}  # desired: put it; not desired: delete it
        self._leases: set[int] = set()  # every lease this publisher granted
        self._lease: Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self._repair_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.regrants = 0

    @property
    def lease(self) -> Lease | None:
        return self._lease

    async def start(self) -> None:
        lease = await self._client.grant_lease(self._ttl)
        self._leases.add(lease.id)
        self._lease = lease
        self._task = asyncio.create_task(self._watch_lease(), name="lease-watch")
        self._repair_task = asyncio.create_task(self._repair_loop(), name="publisher-repair")

    async def stop(self, *, revoke: bool = False) -> None:
        """Stop keeping the lease alive; ``revoke`` deletes every key at once."""
        for task in (self._task, self._repair_task):
            if task:
                await cancel_and_wait(task)
        if self._lease is not None:
            if revoke:
                with contextlib.suppress(KVStoreError):
                    await self._lease.revoke()
            else:
                await self._lease.stop_keepalive()

    async def publish(self, key: str, value: bytes) -> None:
        """Desire ``key`` = ``value`` and put it; raises if etcd did not take it (yet)."""
        await self.publish_many({key: value})

    async def publish_many(self, items: Mapping[str, bytes]) -> None:
        """:meth:`publish` for several keys, put in one transaction: readers see all
        or none of them. At most ``TXN_BATCH`` keys."""
        _check_batch(items)
        async with self._lock:
            self._desired.update(items)
            assert self._lease is not None, "publisher not started"
            lease = self._lease
            try:
                if len(items) == 1:
                    [(key, value)] = items.items()
                    await self._client.put(key, value, lease=lease)
                else:
                    await self._client.txn([], [Put(k, v, lease) for k, v in items.items()])
            except KVStoreError as e:
                for key in items:
                    self._failed(key, e)
                raise
            for key in items:
                self._repairs.pop(key, None)

    async def withdraw(self, key: str) -> bool:
        """Forget ``key`` and delete it; True if it is gone now, False if the delete
        goes on in the background (etcd did not answer). Never raises."""
        return await self.withdraw_many([key])

    async def withdraw_many(self, keys: Iterable[str]) -> bool:
        """:meth:`withdraw` for several keys; True if all are gone now. Never raises.

        Keys on the current lease with no repair pending (the usual case) go in
        one transaction, all or none; any other case key by key, as
        :meth:`withdraw` always did. At most ``TXN_BATCH`` keys.
        """
        names = list(dict.fromkeys(keys))
        _check_batch(names)
        async with self._lock:
            for key in names:
                self._desired.pop(key, None)
            lease = self._lease
            if lease is not None and names and not any(k in self._repairs for k in names):
                try:
                    # Only keys on our lease are deleted: the same guarantee as
                    # _check_deleted's, in one round trip instead of two per key.
                    if await self._bounded(
                        self._client.txn(
                            [Compare(k, "lease", "==", lease.id) for k in names],
                            [Delete(k) for k in names],
                        )
                    ):
                        return True
                except KVStoreError as e:
                    log.warning("withdrawing %s: %s; retrying in the background", names, e)
                    for key in names:
                        self._failed(key, e)
                    return False
            done = True
            for key in names:
                done = await self._withdraw_locked(key) and done
            return done

    async def _withdraw_locked(self, key: str) -> bool:
        r = self._repairs.setdefault(key, _Repair(due=0.0))
        r.due = 0.0
        try:
            done = await self._check_deleted(key, r)
        except KVStoreError as e:
            log.warning("withdrawing %s: %s; retrying in the background", key, e)
            self._failed(key, e)
            return False
        if done:
            del self._repairs[key]
        else:
            self._wake.set()
        return done

    def published(self) -> dict[str, bytes]:
        return dict(self._desired)

    def pending(self) -> dict[str, str]:
        """Keys not yet mirrored in etcd: ``"put"`` or ``"delete"`` each."""
        return {k: "put" if k in self._desired else "delete" for k in sorted(self._repairs)}

    # --- repairs ----------------------------------------------------------------

    def _failed(self, key: str, err: KVStoreError) -> None:
        """A write of ``key`` failed: retry it in the background (lock held)."""
        loop = asyncio.get_running_loop()
        r = self._repairs.setdefault(key, _Repair(due=0.0))
        r.due = loop.time() + r.backoff
        r.backoff = min(r.backoff * 2, BACKOFF_MAX)
        r.unsure, r.answered_at = True, None
        if LEASE_GONE in str(err) and self._lease is not None:
            self._lease.lost.set()  # etcd dropped it: re-grant and re-publish now
        self._wake.set()

    async def _check_deleted(self, key: str, r: _Repair) -> bool:
        """Delete ``key`` if it is on one of our leases; whether the withdrawal is done."""
        kv = await self._bounded(self._client.get(key))
        if (
            kv is not None
            and kv.lease in self._leases
            and not await self._bounded(self._client.delete_if(key, mod_revision=kv.mod_revision))
        ):
            r.due = 0.0  # changed in between: look again
            return False
        if not r.unsure:
            return True
        now = asyncio.get_running_loop().time()
        if r.answered_at is None:
            r.answered_at = now
        if now - r.answered_at >= self._settle:
            return True
        r.due = r.answered_at + self._settle
        return False

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(call, ATTEMPT_TIMEOUT)
        except TimeoutError:
            raise KVStoreUnavailable(f"etcd did not answer within {ATTEMPT_TIMEOUT} s") from None

    async def _repair_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = min((r.due for r in self._repairs.values()), default=None)
            timeout = None if due is None else max(0.0, due - loop.time())
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            async with self._lock:
                await self._repair_due(loop.time())

    async def _repair_due(self, now: float) -> None:
        """One pass over the repairs that are due; stops at the first failure (lock held)."""
        for key in sorted(k for k, r in self._repairs.items() if r.due <= now):
            r = self._repairs[key]
            try:
                if key in self._desired:
                    assert self._lease is not None
                    await self._bounded(
                        self._client.put(key, self._desired[key], lease=self._lease)
                    )
                    done = True
                else:
                    done = await self._check_deleted(key, r)
            except KVStoreError as e:
                log.info("kvstore repair of %s failed: %s", key, e)
                self._failed(key, e)
                return  # etcd is unreachable: no use trying the others now
            if done:
                del self._repairs[key]
                log.info("kvstore repair of %s done", key)
            else:
                r.backoff = BACKOFF_MIN

    # --- lease loss -----------------------------------------------------------------

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
        delay = BACKOFF_MIN
        while True:
            try:
                async with self._lock:
                    old = self._lease
                    lease = await self._client.grant_lease(self._ttl)
                    self._leases.add(lease.id)
                    items = sorted(self._desired.items())
                    try:
                        for i in range(0, len(items), TXN_BATCH):
                            batch = items[i : i + TXN_BATCH]
                            await self._client.txn([], [Put(k, v, lease) for k, v in batch])
                    except KVStoreError:
                        # Abandoned: it expires, and the next attempt moves every
                        # key that made it onto the next lease.
                        await lease.stop_keepalive()
                        raise
                    self._lease = lease
                    for key, _ in items:
                        self._repairs.pop(key, None)
                    for r in self._repairs.values():  # etcd answers again: retry now
                        r.due, r.backoff = 0.0, BACKOFF_MIN
                    self._wake.set()
                    self.regrants += 1
                if old is not None:
                    await old.stop_keepalive()
                return
            except KVStoreError as e:
                log.warning("re-publishing after lease loss failed: %s (retry in %.1fs)", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def _check_batch(keys: Collection[str]) -> None:
    if len(keys) > TXN_BATCH:
        raise ValueError(f"at most {TXN_BATCH} keys per call, got {len(keys)}")
