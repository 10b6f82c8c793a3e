"""What the agent wants in its ipcache map, and which identities GC may collect."""

from __future__ import annotations

from glia.agent.ipcache import Desired, desired_ipcache
from glia.model.identity import ReservedIdentity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node
from glia.operator.identity_gc import unreferenced


def _node(name: str, ip: str) -> Node:
    return Node(name=name, cluster="c1", cluster_id=1, node_ip=ip, pod_cidr=None)


def test_desired_ipcache_local_vs_remote() -> None:
    nodes = {"k1": _node("n1", "198.18.1.1"), "k2": _node("n2", "198.18.1.2")}
    entries = {
        "a": IPCacheEntry(
            ip="10.1.0.5", identity=65792, tunnel_endpoint="198.18.1.1", cluster_id=1, node="n1"
        ),
        "b": IPCacheEntry(
            ip="10.1.1.5", identity=65793, tunnel_endpoint="198.18.1.2", cluster_id=1, node="n2"
        ),
    }
    want = desired_ipcache(entries, nodes, "n1")
    assert want["198.18.1.1/32"] == Desired(int(ReservedIdentity.HOST), "", 1)
    assert want["198.18.1.2/32"] == Desired(int(ReservedIdentity.REMOTE_NODE), "", 1)
    assert want["10.1.0.5/32"] == Desired(65792, "", 1)  # local: no tunnel
    assert want["10.1.1.5/32"] == Desired(65793, "198.18.1.2", 1)
    assert len(want) == 4


def test_unreferenced() -> None:
    assert unreferenced({300: 7, 301: 9}, {300}) == {301: 9}
    assert unreferenced({}, {1}) == {}
