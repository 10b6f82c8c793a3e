"""DeferredDeletes: deletes that may be lease revocations wait, and a return cancels them."""

from __future__ import annotations

import asyncio

import pytest

from glia.kvstore.client import KeyValue
from glia.kvstore.errors import KVStoreUnavailable
from glia.kvstore.grace import DeferredDeletes

LEASE = 0x1234


class FakeClock:
    """``sleep`` for the wrapper's timers; time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._waiting: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((self.now + seconds, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        await settle()  # timers just created start sleeping at the current time
        self.now += seconds
        for at, fut in list(self._waiting):
            if at <= self.now:
                self._waiting.remove((at, fut))
                if not fut.done():
                    fut.set_result(None)
        await settle()


async def settle() -> None:
    """Let every runnable task run until it waits again."""
    for _ in range(10):
        await asyncio.sleep(0)


class Recorder:
    """A handler that records every call it gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes | None]] = []

    async def on_upsert(self, key: str, kv: KeyValue) -> None:
        self.calls.append(("upsert", key, kv.value))

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        self.calls.append(("delete", key, old.value if old else None))

    def on_synced(self) -> None:  # a plain function is a valid handler method too
        self.calls.append(("synced", "", None))


class Leases:
    """``lease_alive``: which leases etcd still holds, counting lookups."""

    def __init__(self, alive: set[int] | None = None, *, fail: bool = False) -> None:
        self.alive = alive or set()
        self.fail = fail
        self.lookups = 0

    async def __call__(self, lease: int) -> bool:
        self.lookups += 1
        if self.fail:
            raise KVStoreUnavailable("etcd unreachable")
        return lease in self.alive


def kv(key: str, value: bytes = b"v", lease: int = LEASE, rev: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1, lease)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def wrap(
    handler: Recorder, clock: FakeClock, leases: Leases | None = None, grace: float = 5.0
) -> DeferredDeletes:
    return DeferredDeletes(handler, grace, lease_alive=leases, sleep=clock.sleep)


async def test_a_revoked_key_put_back_unchanged_is_never_seen_gone(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, Leases())
    await d.on_upsert("k", kv("k", b"a"))
    await d.on_delete("k", kv("k", b"a"))  # its lease is gone: revoked
    assert d.pending() == ["k"]
    await clock.advance(1.0)
    await d.on_upsert("k", kv("k", b"a", lease=0x99, rev=7))  # the owner's new lease
    await clock.advance(10.0)
    assert h.calls == [("upsert", "k", b"a")]
    assert d.pending() == []
    assert (d.deferred, d.cancelled, d.delivered_late) == (1, 1, 0)


async def test_a_key_put_back_with_another_value_is_one_upsert(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, Leases())
    await d.on_upsert("k", kv("k", b"a"))
    await d.on_delete("k", kv("k", b"a"))
    await d.on_upsert("k", kv("k", b"b", rev=3))
    await clock.advance(10.0)
    assert h.calls == [("upsert", "k", b"a"), ("upsert", "k", b"b")]


async def test_a_key_that_stays_gone_is_deleted_after_the_grace(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, Leases())
    await d.on_delete("k", kv("k", b"a"))
    await clock.advance(4.9)
    assert h.calls == []
    await clock.advance(0.2)
    assert h.calls == [("delete", "k", b"a")]
    assert d.pending() == [] and d.delivered_late == 1
    # Gone for good: a later put is an ordinary upsert, a later delete held again.
    await d.on_upsert("k", kv("k", b"c"))
    await d.on_delete("k", kv("k", b"c"))
    assert d.pending() == ["k"]


async def test_deletes_that_cannot_be_revocations_pass_at_once(clock: FakeClock) -> None:
    h = Recorder()
    leases = Leases(alive={LEASE})
    d = wrap(h, clock, leases)
    await d.on_delete("unleased", kv("unleased", lease=0))  # nothing could revoke it
    await d.on_delete("explicit", kv("explicit"))  # its owner still holds the lease
    await d.on_delete("unknown", None)  # never seen, so nothing to protect
    assert [c[1] for c in h.calls] == ["unleased", "explicit", "unknown"]
    assert d.pending() == [] and d.deferred == 0
    assert leases.lookups == 1


async def test_without_a_lease_check_every_leased_delete_waits(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, None)
    await d.on_delete("k", kv("k"))
    await d.on_delete("u", kv("u", lease=0))
    assert d.pending() == ["k"]
    assert h.calls == [("delete", "u", b"v")]


async def test_an_unanswered_lease_lookup_holds_the_delete(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, Leases(fail=True))
    await d.on_delete("k", kv("k"))
    assert d.pending() == ["k"] and h.calls == []


async def test_one_lookup_per_dead_lease(clock: FakeClock) -> None:
    h = Recorder()
    leases = Leases()
    d = wrap(h, clock, leases)
    for i in range(50):  # a revoked agent lease takes all its keys at once
        await d.on_delete(f"k{i}", kv(f"k{i}"))
    assert len(d.pending()) == 50
    assert leases.lookups == 1


async def test_stop_delivers_or_drops_what_is_held(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, Leases())
    await d.on_delete("b", kv("b"))
    await d.on_delete("a", kv("a"))
    await d.stop()
    assert h.calls == [("delete", "a", b"v"), ("delete", "b", b"v")]
    await clock.advance(10.0)  # the timers are gone: nothing twice
    assert len(h.calls) == 2

    h2 = Recorder()
    d2 = wrap(h2, clock, Leases())
    await d2.on_delete("a", kv("a"))
    await d2.stop(deliver=False)
    await clock.advance(10.0)
    assert h2.calls == [] and d2.pending() == []


async def test_grace_zero_passes_everything_at_once(clock: FakeClock) -> None:
    h = Recorder()
    d = wrap(h, clock, Leases(), grace=0.0)
    await d.on_delete("k", kv("k"))
    await d.on_synced()
    assert h.calls == [("delete", "k", b"v"), ("synced", "", None)]
    with pytest.raises(ValueError, match="grace"):
        DeferredDeletes(h, -1.0)


async def test_the_handler_sees_one_call_at_a_time() -> None:
    """A late delete fired by its timer waits for a handler call in progress."""
    active = 0
    overlaps = 0
    seen: list[str] = []

    class Slow:
        async def on_upsert(self, key: str, kv: KeyValue) -> None:
            nonlocal active, overlaps
            active += 1
            overlaps += active > 1
            await asyncio.sleep(0.05)
            seen.append(f"upsert {key}")
            active -= 1

        async def on_delete(self, key: str, old: KeyValue | None) -> None:
            nonlocal active, overlaps
            active += 1
            overlaps += active > 1
            await asyncio.sleep(0.01)
            seen.append(f"delete {key}")
            active -= 1

        def on_synced(self) -> None:
            return None

    d = DeferredDeletes(Slow(), 0.02)  # real timers, short grace
    await d.on_delete("gone", kv("gone"))
    await d.on_upsert("other", kv("other"))  # still running when "gone"'s timer fires
    await asyncio.sleep(0.1)
    assert seen == ["upsert other", "delete gone"]
    assert overlaps == 0


async def test_a_failing_handler_on_a_late_delete_is_counted(clock: FakeClock) -> None:
    class Failing(Recorder):
        async def on_delete(self, key: str, old: KeyValue | None) -> None:
            raise RuntimeError("boom")

    d = wrap(Failing(), clock, Leases())
    await d.on_delete("k", kv("k"))
    await clock.advance(6.0)
    assert d.errors == 1 and d.pending() == []
