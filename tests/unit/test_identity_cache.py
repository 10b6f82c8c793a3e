"""The agent's identity cache: validated per cluster, rejections counted, events passed on."""

from __future__ import annotations

import asyncio

from glia.agent.identities import IdentityCache
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.identity import Identity
from glia.validate.bounds import ClusterBounds


def _kv(key: str, value: bytes) -> KeyValue:
    return KeyValue(key, value, 1, 1, 1, 0)


class Seen:
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_upsert(self, key: str, kv: KeyValue) -> None:
        self.events.append(f"upsert {key}")

    async def on_delete(self, key: str, old: KeyValue | None) -> None:
        self.events.append(f"delete {key}")

    def on_synced(self) -> None:
        self.events.append("synced")


def test_cache_keeps_valid_identities_and_reports_the_rest() -> None:
    cache = IdentityCache(ClusterBounds("c1", 1))
    also = Seen()
    h = cache.handler(also=also)
    good = keys.identity_id("c1", 65800)
    forged = keys.identity_id("c1", 70000 << 8)  # another cluster's range

    async def run() -> None:
        await h.on_upsert(good, _kv(good, codec.encode(Identity(65800, {"app": "web"}))))
        await h.on_upsert(forged, _kv(forged, codec.encode(Identity(70000 << 8, {}))))
        await h.on_synced()
        assert cache.get(65800) == Identity(65800, {"app": "web"})
        assert cache.get(70000 << 8) is None
        st = cache.status()
        assert st["identities"] == 1 and st["synced"] and st["rejected"] == 1
        assert forged in st["rejected_keys"]
        await h.on_upsert(good, _kv(good, b"{junk"))
        assert cache.get(65800) is None  # a value gone bad is not kept
        await h.on_delete(forged, None)
        assert cache.status()["rejected"] == 1  # only the junk one now

    asyncio.run(run())
    assert also.events == [f"upsert {good}", f"upsert {forged}", "synced", f"upsert {good}",
                           f"delete {forged}"]  # fmt: skip


def test_listener_hears_real_changes_once_with_the_minting_cluster() -> None:
    cache = IdentityCache(ClusterBounds("c1", 1))
    heard: list[tuple[str, int, dict[str, str] | None]] = []
    t1 = cache.tables["c1"]
    k1 = keys.identity_id("c1", 65800)
    t1.upsert(k1, codec.encode(Identity(65800, {"app": "web"})))
    cache.listen(lambda c, n, i: heard.append((c, n, None if i is None else i.labels)))
    assert heard == [("c1", 65800, {"app": "web"})]  # what was held, at once
    t1.upsert(k1, codec.encode(Identity(65800, {"app": "web"})))  # a re-list: unchanged
    assert len(heard) == 1
    t1.upsert(k1, codec.encode(Identity(65800, {"app": "db"})))
    assert heard[-1] == ("c1", 65800, {"app": "db"})
    t1.upsert(k1, b"{junk")  # gone bad: gone
    assert heard[-1] == ("c1", 65800, None)
    t1.delete(k1)  # already gone: nothing to hear
    assert len(heard) == 3
    c2 = cache.add_source(ClusterBounds("c2", 2))
    k2 = keys.identity_id("c2", 2 << 16 | 300)
    c2.upsert(k2, codec.encode(Identity(2 << 16 | 300, {"app": "client"})))
    assert heard[-1] == ("c2", 2 << 16 | 300, {"app": "client"})
    cache.remove_source("c2")
    assert heard[-1] == ("c2", 2 << 16 | 300, None)
    cache.remove_source("c1")  # the local cluster is never removed
    assert len(heard) == 5
