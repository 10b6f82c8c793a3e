"""List + watch of one prefix into a local cache, reporting changes to a handler.

Every consumer of kvstore state uses one: the agent (nodes, ipcache,
identities, services of its cluster), clustermesh (the same prefixes of each
remote cluster, read-only), the operator. The handler sees each key's
current value once per change, never a flood: after a compaction (or any
failure that needs a new list) the reflector lists again and delivers only
the difference from its cache (:func:`diff`).

Handler callbacks may be plain functions or coroutines. An exception in one
is logged and counted in :attr:`Reflector.errors`; the reflector carries on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Mapping, Sequence
from typing import Protocol

from glia.aiotasks import cancel_and_wait
from glia.kvstore.client import Event, EventKind, KeyValue, KVClient
from glia.kvstore.errors import Compacted, KVStoreError, KVStoreUnavailable

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.2
BACKOFF_MAX = 10.0


class ReflectorHandler(Protocol):
    def on_upsert(self, key: str, kv: KeyValue) -> Awaitable[None] | None: ...

    def on_delete(self, key: str, old: KeyValue | None) -> Awaitable[None] | None: ...

    def on_synced(self) -> Awaitable[None] | None: ...


def diff(
    cache: Mapping[str, KeyValue], listed: Sequence[KeyValue], *, by_value: bool = False
) -> tuple[list[KeyValue], list[KeyValue]]:
    """``(deleted, upserted)`` turning ``cache`` into ``listed``, each sorted by key.

    A key counts as changed when its ``mod_revision`` differs: etcd bumps it on
    every put, including a delete and re-create. ``by_value``: when its value
    differs instead (``cache`` came over another connection, whose revisions
    say nothing about these).
    """
    now = {kv.key: kv for kv in listed}
    deleted = [cache[k] for k in sorted(cache) if k not in now]
    if by_value:
        upserted = [
            kv for k, kv in sorted(now.items()) if k not in cache or cache[k].value != kv.value
        ]
    else:
        upserted = [
            kv
            for k, kv in sorted(now.items())
            if k not in cache or cache[k].mod_revision != kv.mod_revision
        ]
    return deleted, upserted


class Reflector:
    def __init__(
        self,
        client: KVClient,
        prefix: str,
        handler: ReflectorHandler,
        *,
        name: str | None = None,
        first_list_fatal: bool = True,
        seed: Mapping[str, KeyValue] | None = None,
    ) -> None:
        """``first_list_fatal=False``: a failing first list is retried in the
        background like any later one (a remote cluster's etcd that is down when
        the agent starts must not stop it); :meth:`start` then returns at once.

        ``seed``: what the handler already holds of this prefix, from a
        reflector over another connection (clustermesh replacing a remote
        cluster's connection): the first list then delivers only the keys
        whose value differs and deletes the seeded keys it does not list, so
        the handler never loses what both connections have.
        """
        self.client = client
        self.first_list_fatal = first_list_fatal
        self.prefix = prefix
        self.handler = handler
        self.name = name or prefix
        self.items: dict[str, KeyValue] = dict(seed or {})
        self._seeded = seed is not None
        self.synced = asyncio.Event()
        self.revision = 0  # last revision applied to ``items``
        self.resyncs = 0  # lists after the first one (compaction, failures)
        self.reconnects = 0  # watch streams re-established
        self.errors = 0  # handler exceptions and kvstore failures
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float | None = None) -> None:
        """Start; return once the first list reached the handler, or raise why not.

        Without ``first_list_fatal`` it returns at once; :attr:`synced` tells when
        the first list arrived.
        """
        if self._task is not None:
            raise RuntimeError(f"reflector {self.name} already started")
        self._task = asyncio.create_task(self._run(), name=f"reflector {self.name}")
        if not self.first_list_fatal:
            return
        synced = asyncio.create_task(self.synced.wait())
        try:
            done, _ = await asyncio.wait(
                {self._task, synced}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            synced.cancel()
        if self._task in done:
            task, self._task = self._task, None
            task.result()  # raises the first list's failure
            raise KVStoreError(f"reflector {self.name} ended before its first sync")
        if not done:
            await self.stop()
            raise KVStoreUnavailable(f"reflector {self.name}: no first sync within {timeout} s")

    def status(self) -> dict[str, object]:
        """Counters for ``glia status`` and metrics."""
        return {
            "prefix": self.prefix,
            "synced": self.synced.is_set(),
            "keys": len(self.items),
            "revision": self.revision,
            "resyncs": self.resyncs,
            "reconnects": self.reconnects,
            "errors": self.errors,
            "last_error": self.last_error,
        }

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            try:
                kvs, rev = await self.client.list(self.prefix)
            except KVStoreError as e:
                if not self.synced.is_set() and self.first_list_fatal:
                    raise  # start() reports it
                self._failed(f"list failed: {e}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            await self._apply_list(kvs, rev)
            try:
                async for ev in self.client.watch(
                    self.prefix, start_revision=rev + 1, on_reconnect=self._reconnected
                ):
                    await self._apply_event(ev)
                    delay = BACKOFF_MIN
            except Compacted as e:
                log.info("reflector %s: %s; listing again", self.name, e)
            except KVStoreError as e:
                self._failed(f"watch failed: {e}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def _failed(self, msg: str) -> None:
        self.errors += 1
        self.last_error = msg
        log.warning("reflector %s: %s", self.name, msg)

    def _reconnected(self, reason: str) -> None:
        self.reconnects += 1

    async def _apply_list(self, kvs: list[KeyValue], rev: int) -> None:
        deleted, upserted = diff(self.items, kvs, by_value=self._seeded)
        if self._seeded:
            # Unchanged keys get this connection's revisions without a delivery.
            self._seeded = False
            self.items.update({kv.key: kv for kv in kvs if kv.key in self.items})
        for old in deleted:
            del self.items[old.key]
            await self._call("on_delete", old.key, old)
        for kv in upserted:
            self.items[kv.key] = kv
            await self._call("on_upsert", kv.key, kv)
        self.revision = rev
        if not self.synced.is_set():
            await self._call("on_synced")
            self.synced.set()
        else:
            # Counted once the difference reached the handler, so a caller that
            # sees the count also sees what the re-list changed.
            self.resyncs += 1

    async def _apply_event(self, ev: Event) -> None:
        if ev.kind is EventKind.PUT:
            kv = ev.as_kv()
            self.items[ev.key] = kv
            await self._call("on_upsert", ev.key, kv)
        else:
            old = self.items.pop(ev.key, None)
            await self._call("on_delete", ev.key, old)
        self.revision = ev.mod_revision

    async def _call(self, method: str, *args: object) -> None:
        try:
            result = getattr(self.handler, method)(*args)
            if inspect.isawaitable(result):
                await result
        except Exception as e:
            self.errors += 1
            self.last_error = f"handler {method} failed: {e!r}"
            log.exception("reflector %s: handler %s%r failed", self.name, method, args[:1])
