"""IPCacheSync writes a source's first list in one batch at its end, later events one by one.

A remote cluster of 100,000 endpoints used to cost a map write (and a hop to the
datapath thread) per entry while its list arrived; bench/mesh.py measures the
import, this checks the shape of the writes without a kernel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from glia.agent.ipcache import IPCacheSync
from glia.datapath.nodemaps import IPCacheInfo
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node, PodCIDRAllocation
from glia.validate.bounds import ClusterBounds

T = TypeVar("T")
LOCAL = ClusterBounds.of("c1", 1, "10.1.0.0/16", "100.64.0.0/15")
C2 = ClusterBounds.of("c2", 2, "10.2.0.0/16", "100.66.0.0/15")
C2_ID = 2 << 16 | 300


class RecordingMap:
    def __init__(self) -> None:
        self.entries: dict[str, IPCacheInfo] = {}
        self.writes: list[int] = []  # entries per upsert_many call

    def upsert_many(self, entries: dict[str, IPCacheInfo]) -> None:
        self.writes.append(len(entries))
        self.entries.update(entries)

    def delete(self, prefix: str) -> bool:
        return self.entries.pop(prefix, None) is not None

    def items(self) -> list[tuple[str, IPCacheInfo]]:
        return list(self.entries.items())


class FakeDatapath:
    def __init__(self) -> None:
        self.ipcache = RecordingMap()


async def run_dp(fn: Callable[[], T]) -> T:
    return fn()


def kv(key: str, value: bytes, rev: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1, 0)


def entry(i: int) -> tuple[str, bytes]:
    ip = f"10.2.1.{i}"
    return keys.ipcache("c2", "n1", ip), codec.encode(
        IPCacheEntry(ip, C2_ID, "198.18.2.1", 2, "n1")
    )


async def test_a_first_list_is_one_batch_and_later_events_apply_at_once() -> None:
    dp = FakeDatapath()
    sync = IPCacheSync(dp, run_dp, LOCAL, "n1", "198.18.1.1")  # type: ignore[arg-type]
    for part in ("nodes", "podcidrs", "ip"):
        await sync.handler(part).on_synced()
    sync.add_source(C2)
    h: dict[str, Any] = {p: sync.handler(p, "c2") for p in ("nodes", "podcidrs", "ip")}
    await h["nodes"].on_upsert(
        keys.node("c2", "n1"),
        kv(keys.node("c2", "n1"), codec.encode(Node("n1", "c2", 2, "198.18.2.1"))),
    )
    await h["nodes"].on_synced()
    alloc = keys.podcidr_node("c2", "n1")
    await h["podcidrs"].on_upsert(
        alloc, kv(alloc, codec.encode(PodCIDRAllocation("n1", "10.2.1.0/24")))
    )
    await h["podcidrs"].on_synced()
    before = list(dp.ipcache.writes)

    for i in range(2, 102):  # the ip part's first list
        key, value = entry(i)
        await h["ip"].on_upsert(key, kv(key, value))
    assert dp.ipcache.writes == before, "nothing written while the first list arrives"
    await h["ip"].on_synced()
    assert dp.ipcache.writes == [*before, 100]
    assert dp.ipcache.entries["10.2.1.101/32"] == IPCacheInfo(C2_ID, "198.18.2.1", 2)

    key, value = entry(200)  # a watch event after the list: written at once
    await h["ip"].on_upsert(key, kv(key, value, 2))
    assert dp.ipcache.writes == [*before, 100, 1]
    await h["ip"].on_delete(key, None)
    assert "10.2.1.200/32" not in dp.ipcache.entries
