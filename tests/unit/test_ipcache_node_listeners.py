"""IPCacheSync.on_nodes_changed: told when any cluster's nodes or node CIDRs change,
not for endpoint entries (glia.agent.egress re-plans on it)."""

from __future__ import annotations

from typing import Any

from test_ipcache_first_list import C2, LOCAL, FakeDatapath, entry, kv, run_dp

from glia.agent.egress import ClusterNodes, plan
from glia.agent.ipcache import IPCacheSync
from glia.kvstore import keys
from glia.model import codec
from glia.model.node import Node, PodCIDRAllocation


async def test_listeners_hear_node_changes_of_every_cluster_only() -> None:
    sync = IPCacheSync(FakeDatapath(), run_dp, LOCAL, "n1", "198.18.1.1")  # type: ignore[arg-type]
    calls: list[int] = []
    sync.on_nodes_changed(lambda: calls.append(1))
    for part in ("nodes", "podcidrs", "ip"):
        await sync.handler(part).on_synced()
    first = len(calls)
    assert first >= 1  # the first full view
    sync.add_source(C2)
    h: dict[str, Any] = {p: sync.handler(p, "c2") for p in ("nodes", "podcidrs", "ip")}
    for part in ("nodes", "podcidrs", "ip"):
        await h[part].on_synced()
    await h["nodes"].on_upsert(
        keys.node("c2", "n1"),
        kv(keys.node("c2", "n1"), codec.encode(Node("n1", "c2", 2, "198.18.2.1"))),
    )
    alloc = keys.podcidr_node("c2", "n1")
    await h["podcidrs"].on_upsert(
        alloc, kv(alloc, codec.encode(PodCIDRAllocation("n1", "10.2.1.0/24")))
    )
    after_nodes = len(calls)
    assert after_nodes > first
    key, value = entry(5)
    await h["ip"].on_upsert(key, kv(key, value))
    assert len(calls) == after_nodes  # an endpoint entry is no node change

    tables = sync.node_tables()
    clusters = [
        ClusterNodes(
            t.bounds.pod_pools,
            {n: (node.node_ip, t.cidrs.get(n)) for n, node in t.valid_nodes.items()},
        )
        for t in tables
    ]
    p = plan("10.1.1.0/24", "198.18.1.1", clusters)
    assert [str(r.cidr) for r in p.routes] == ["10.2.1.0/24"]
    assert [str(m) for m in p.mesh] == ["10.1.0.0/16", "10.2.0.0/16"]
