"""LeasedPublisher.publish_many / withdraw_many against a real etcd.

An endpoint's ipcache and endpoint keys are published and withdrawn together:
one transaction each way (one revision), on the publisher's lease. The
publisher's guarantees hold for the batch as for one key: only keys on its
own leases are deleted, and while etcd does not answer a failed put is
retried and a withdrawal finishes in the background.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest
from etcd_pause import paused
from waiting import until

from glia.kvstore.client import KVClient
from glia.kvstore.errors import KVStoreUnavailable
from glia.kvstore.publisher import TXN_BATCH, LeasedPublisher
from glia.lab.etcd import RW_USER, EtcdServer

TTL = 10  # longer than any pause here: the lease survives, no re-grant


@pytest.fixture
async def kv(etcd: EtcdServer) -> AsyncIterator[KVClient]:
    client = await KVClient.connect(etcd.client_config(RW_USER))
    yield client
    await client.close()


@pytest.fixture
async def pub(kv: KVClient) -> AsyncIterator[LeasedPublisher]:
    p = LeasedPublisher(kv, TTL)
    await p.start()
    yield p
    await p.stop(revoke=True)


async def test_two_keys_appear_and_go_together(
    kv: KVClient, pub: LeasedPublisher, etcd_prefix: str
) -> None:
    ipcache, endpoint = etcd_prefix + "ipcache/10.1.0.7", etcd_prefix + "endpoints/default/web"
    await pub.publish_many({ipcache: b"ip", endpoint: b"ep"})
    a, b = await kv.get(ipcache), await kv.get(endpoint)
    assert a is not None and b is not None
    assert pub.lease is not None
    assert (a.value, b.value) == (b"ip", b"ep")
    assert a.lease == b.lease == pub.lease.id
    assert a.mod_revision == b.mod_revision, "put in two transactions"
    assert set(pub.published()) == {ipcache, endpoint}

    before = await kv.revision()
    assert await pub.withdraw_many([ipcache, endpoint]) is True
    assert await kv.get(ipcache) is None and await kv.get(endpoint) is None
    assert await kv.revision() == before + 1, "deleted in more than one transaction"
    assert pub.published() == {} and pub.pending() == {}


async def test_withdraw_many_deletes_only_what_is_on_its_lease(
    kv: KVClient, pub: LeasedPublisher, etcd_prefix: str
) -> None:
    mine, foreign = etcd_prefix + "mine", etcd_prefix + "foreign"
    await pub.publish_many({mine: b"1", foreign: b"2"})
    await kv.put(foreign, b"another writer's")  # the same key, now on no lease of ours
    missing = etcd_prefix + "never-put"
    assert await pub.withdraw_many([mine, foreign, missing]) is True
    assert await kv.get(mine) is None
    kept = await kv.get(foreign)
    assert kept is not None and kept.value == b"another writer's"
    assert pub.pending() == {}


async def test_more_keys_than_one_transaction_takes_are_refused(pub: LeasedPublisher) -> None:
    many = {f"glia/state/test-many/{i}": b"x" for i in range(TXN_BATCH + 1)}
    with pytest.raises(ValueError, match=f"at most {TXN_BATCH} keys"):
        await pub.publish_many(many)
    with pytest.raises(ValueError, match=f"at most {TXN_BATCH} keys"):
        await pub.withdraw_many(many)
    assert pub.published() == {}


async def test_while_etcd_is_away_puts_are_retried_and_withdrawals_finish_later(
    etcd_factory: Callable[[], EtcdServer], etcd_prefix: str
) -> None:
    srv = etcd_factory()
    # A short call budget, so calls made while etcd is stopped fail within the test.
    cfg = dataclasses.replace(srv.client_config(RW_USER), dial_timeout=1.0)
    owner = await KVClient.connect(cfg, retry_timeout=2.0)
    reader = await KVClient.connect(cfg)
    pub = LeasedPublisher(owner, TTL, settle=0.5)
    await pub.start()
    p = etcd_prefix
    try:
        await pub.publish_many({p + "old/ip": b"1", p + "old/ep": b"2"})
        with paused(srv):
            with pytest.raises(KVStoreUnavailable):
                await pub.publish_many({p + "new/ip": b"3", p + "new/ep": b"4"})
            assert await pub.withdraw_many([p + "old/ip", p + "old/ep"]) is False
            assert pub.pending() == {
                p + "new/ep": "put",
                p + "new/ip": "put",
                p + "old/ep": "delete",
                p + "old/ip": "delete",
            }
        await until(lambda: pub.pending() == {}, "the repairs to finish", 20)
        stored, _ = await reader.list(p)
        assert pub.lease is not None and pub.regrants == 0
        assert [(kv.key, kv.value, kv.lease) for kv in stored] == [
            (p + "new/ep", b"4", pub.lease.id),
            (p + "new/ip", b"3", pub.lease.id),
        ]
        # Withdrawn while etcd was away, and a withdrawal after it: never back.
        assert await pub.withdraw_many([p + "new/ip", p + "new/ep"]) is True
        await asyncio.sleep(1.0)
        assert (await reader.list(p))[0] == []
    finally:
        await pub.stop(revoke=True)
        await owner.close()
        await reader.close()
