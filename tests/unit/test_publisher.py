"""LeasedPublisher while etcd does not answer: withdraw forgets first, deletes later.

An in-memory stand-in for etcd that can be taken "down": calls then fail as
the real client's do (KVStoreUnavailable), and optionally the puts are kept
and applied when it comes back, as a paused etcd does with the requests already
in its socket. The real etcd (SIGSTOP) is in tests/integration/test_etcd_pause.py.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from glia.kvstore.client import Compare, Delete, KeyValue, Put
from glia.kvstore.errors import KVStoreError, KVStoreUnavailable
from glia.kvstore.publisher import LeasedPublisher

SETTLE = 0.2


class FakeLease:
    def __init__(self, lease_id: int) -> None:
        self.id = lease_id
        self.ttl = 15
        self.lost = asyncio.Event()

    async def stop_keepalive(self) -> None:
        return None

    async def revoke(self) -> None:
        return None


class FakeEtcd:
    def __init__(self) -> None:
        self.data: dict[str, KeyValue] = {}
        self.leases: dict[int, FakeLease] = {}
        self.rev = 0
        self.down = False
        self.queue_puts = False  # while down: keep puts and apply them on up()
        self.queued: list[tuple[str, bytes, int]] = []
        self._ids = itertools.count(0x100)

    def _answer(self) -> None:
        if self.down:
            raise KVStoreUnavailable("etcd at fake unavailable during the test")

    def _store(self, key: str, value: bytes, lease: int) -> None:
        if lease and lease not in self.leases:
            raise KVStoreError("etcd at fake failed put: NOT_FOUND: requested lease not found")
        self.rev += 1
        old = self.data.get(key)
        create, version = (old.create_revision, old.version + 1) if old else (self.rev, 1)
        self.data[key] = KeyValue(key, value, create, self.rev, version, lease)

    def up(self, *, apply_queued: bool = True) -> None:
        self.down = False
        if apply_queued:
            self.apply_queued()

    def apply_queued(self) -> None:
        for key, value, lease in self.queued:
            if lease in self.leases or not lease:
                self._store(key, value, lease)
        self.queued.clear()

    def revoke(self, lease_id: int) -> None:
        """What etcd does on resuming after the TTL: the lease and its keys go."""
        lease = self.leases.pop(lease_id)
        for key in [k for k, kv in self.data.items() if kv.lease == lease_id]:
            del self.data[key]
        lease.lost.set()

    def value(self, key: str) -> bytes | None:
        kv = self.data.get(key)
        return kv.value if kv else None

    # --- the part of KVClient the publisher uses --------------------------------

    async def grant_lease(self, ttl: int) -> FakeLease:
        self._answer()
        lease = FakeLease(next(self._ids))
        self.leases[lease.id] = lease
        return lease

    async def put(self, key: str, value: bytes, *, lease: Any = None) -> int:
        lease_id = lease.id if lease else 0
        if self.down:
            if self.queue_puts:
                self.queued.append((key, value, lease_id))
            self._answer()
        self._store(key, value, lease_id)
        return self.rev

    async def get(self, key: str) -> KeyValue | None:
        self._answer()
        return self.data.get(key)

    async def delete_if(self, key: str, *, mod_revision: int) -> bool:
        self._answer()
        kv = self.data.get(key)
        if kv is None or kv.mod_revision != mod_revision:
            return False
        del self.data[key]
        self.rev += 1
        return True

    async def txn(self, compares: list[Compare], ops: list[Put | Delete]) -> bool:
        self._answer()
        if not all(self._holds(c) for c in compares):
            return False
        for op in ops:
            if isinstance(op, Delete):
                if self.data.pop(op.key, None) is not None:
                    self.rev += 1
            else:
                self._store(op.key, op.value, op.lease.id if op.lease else 0)
        return True

    def _holds(self, c: Compare) -> bool:
        assert c.op == "==", c
        kv = self.data.get(c.key)
        fields = {
            "lease": kv.lease if kv else 0,
            "mod": kv.mod_revision if kv else 0,
            "create": kv.create_revision if kv else 0,
            "version": kv.version if kv else 0,
        }
        return fields[c.target] == c.value


@pytest.fixture
def etcd() -> FakeEtcd:
    return FakeEtcd()


@pytest.fixture
async def pub(etcd: FakeEtcd) -> AsyncIterator[LeasedPublisher]:
    p = LeasedPublisher(etcd, 15, settle=SETTLE)  # type: ignore[arg-type]
    await p.start()
    yield p
    await p.stop()


async def until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_withdraw_while_down_forgets_at_once_and_deletes_later(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("k", b"1")
    etcd.down = True
    assert await pub.withdraw("k") is False  # no exception: a rollback must not fail
    assert "k" not in pub.published()
    assert pub.pending() == {"k": "delete"}
    assert etcd.value("k") == b"1"
    etcd.up()
    await until(lambda: etcd.value("k") is None, "the background delete")
    await until(lambda: pub.pending() == {}, "the withdrawal to be done")


async def test_a_failed_add_leaves_no_key_even_if_etcd_applies_its_put_late(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    """publish fails while etcd is down, the rollback withdraws; etcd then applies
    the put it had received *after* the first successful check."""
    etcd.down, etcd.queue_puts = True, True
    with pytest.raises(KVStoreUnavailable):
        await pub.publish("ep", b"1")
    assert await pub.withdraw("ep") is False
    etcd.up(apply_queued=False)
    await until(lambda: etcd.value("ep") is None and not etcd.down, "etcd back")
    await asyncio.sleep(SETTLE / 4)  # the first check has found nothing by now
    etcd.apply_queued()  # the late put lands
    assert etcd.value("ep") == b"1"
    await until(lambda: etcd.value("ep") is None, "the settle check to delete the late put")
    await until(lambda: pub.pending() == {}, "the withdrawal to be done")


async def test_a_withdrawn_key_is_not_republished_by_a_regrant(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("keep", b"k")
    await pub.publish("gone", b"g")
    etcd.down = True
    await pub.withdraw("gone")
    etcd.up()
    assert pub.lease is not None
    first = pub.lease.id
    etcd.revoke(first)  # etcd resumed past the TTL
    await until(lambda: pub.regrants == 1, "the re-grant")
    assert pub.lease.id != first
    assert etcd.value("keep") == b"k" and etcd.data["keep"].lease == pub.lease.id
    await until(lambda: pub.pending() == {}, "the withdrawal to be done")
    assert etcd.value("gone") is None


async def test_publishing_again_cancels_a_pending_delete(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("k", b"1")
    etcd.down = True
    await pub.withdraw("k")
    with pytest.raises(KVStoreUnavailable):
        await pub.publish("k", b"2")  # desired again; put again in the background
    assert pub.pending() == {"k": "put"}
    etcd.up()
    await until(lambda: etcd.value("k") == b"2", "the background put")
    await until(lambda: pub.pending() == {}, "nothing pending")
    await asyncio.sleep(SETTLE * 2)
    assert etcd.value("k") == b"2"


async def test_a_failed_publish_is_put_in_the_background(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("k", b"1")
    etcd.down = True
    with pytest.raises(KVStoreUnavailable):
        await pub.publish("k", b"2")
    assert pub.published() == {"k": b"2"}
    etcd.up()
    await until(lambda: etcd.value("k") == b"2", "the new value in etcd")


async def test_withdraw_never_deletes_another_writers_key(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("k", b"mine")
    etcd.down = True
    await pub.withdraw("k")
    etcd.up()
    etcd._store("k", b"theirs", 0)  # someone else wrote it before the retry ran
    await until(lambda: pub.pending() == {}, "the withdrawal to be done")
    assert etcd.value("k") == b"theirs"


async def test_a_put_on_a_lease_etcd_dropped_triggers_a_regrant(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("a", b"1")
    assert pub.lease is not None
    old = pub.lease
    etcd.leases.pop(old.id)  # revoked, and the keep-alive has not noticed yet
    with pytest.raises(KVStoreError, match="lease not found"):
        await pub.publish("b", b"2")
    await until(lambda: pub.regrants == 1, "the re-grant")
    assert etcd.value("a") == b"1" and etcd.value("b") == b"2"
    assert etcd.data["b"].lease == pub.lease.id != old.id


async def test_withdraw_when_etcd_answers_deletes_before_returning(
    etcd: FakeEtcd, pub: LeasedPublisher
) -> None:
    await pub.publish("k", b"1")
    assert await pub.withdraw("k") is True
    assert etcd.value("k") is None and pub.pending() == {}
    assert await pub.withdraw("never-published") is True
