"""What the agent wants in its ipcache map, which records it refuses, and identity GC."""

from __future__ import annotations

import ipaddress

from glia.agent.ipcache import Desired, plan_ipcache
from glia.kvstore import keys
from glia.model.identity import ReservedIdentity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node
from glia.operator.identity_gc import unreferenced
from glia.validate.bounds import ClusterBounds
from glia.validate.ipcache import KeyedEntry
from glia.validate.nodes import Allocation, NodeEntry

BOUNDS = ClusterBounds.of("c1", 1, "10.1.0.0/16", "10.96.0.0/16")
HOST = int(ReservedIdentity.HOST)
REMOTE = int(ReservedIdentity.REMOTE_NODE)


def _node(name: str, ip: str, rev: int = 1) -> NodeEntry:
    return NodeEntry(Node(name=name, cluster="c1", cluster_id=1, node_ip=ip), rev)


def _entry(node: str, ip: str, tunnel: str, identity: int = 65792) -> tuple[str, KeyedEntry]:
    e = IPCacheEntry(ip=ip, identity=identity, tunnel_endpoint=tunnel, cluster_id=1, node=node)
    return keys.ipcache("c1", node, ip), KeyedEntry(node, e)


NODES = {"n1": _node("n1", "198.18.1.1"), "n2": _node("n2", "198.18.1.2")}
ALLOCS = {
    "n1": Allocation(ipaddress.IPv4Network("10.1.0.0/24"), 5),
    "n2": Allocation(ipaddress.IPv4Network("10.1.1.0/24"), 6),
}


def test_local_vs_remote() -> None:
    entries = dict(
        [_entry("n1", "10.1.0.5", "198.18.1.1"), _entry("n2", "10.1.1.5", "198.18.1.2", 65793)]
    )
    plan = plan_ipcache(entries, NODES, ALLOCS, BOUNDS, "n1", "198.18.1.1")
    want = plan.desired
    assert want["198.18.1.1/32"] == Desired(HOST, "", 1)
    assert want["198.18.1.2/32"] == Desired(REMOTE, "", 1)
    assert want["10.1.0.5/32"] == Desired(65792, "", 1)  # local: no tunnel
    assert want["10.1.1.5/32"] == Desired(65793, "198.18.1.2", 1)
    assert len(want) == 4
    assert plan.rejected == {}
    assert plan.cidrs == {n: a.cidr for n, a in ALLOCS.items()}


def test_a_node_can_claim_only_its_own_addresses() -> None:
    good = _entry("n2", "10.1.1.5", "198.18.1.2")
    bad = {
        # n2 claims an IP of n1's block: hijack of another node's pod.
        _entry("n2", "10.1.0.7", "198.18.1.2"),
        # etcd's address, a public one, the network address of its block.
        _entry("n2", "198.18.0.2", "198.18.1.2"),
        _entry("n2", "8.8.8.8", "198.18.1.2"),
        _entry("n2", "10.1.1.0", "198.18.1.2"),
        # tunnelled to another node than itself.
        _entry("n2", "10.1.1.9", "198.18.1.1"),
        # a node without a record, a node without a CIDR.
        _entry("n9", "10.1.9.1", "198.18.1.9"),
    }
    entries = dict([good, *bad])
    nodes = {**NODES, "n3": _node("n3", "198.18.1.3")}
    plan = plan_ipcache(entries, nodes, ALLOCS, BOUNDS, "n1", "198.18.1.1")
    assert set(plan.rejected) == {k for k, _ in bad} | set()
    assert "10.1.1.5/32" in plan.desired
    assert not {"10.1.0.7/32", "198.18.0.2/32", "8.8.8.8/32", "10.1.1.0/32", "10.1.1.9/32"} & set(
        plan.desired
    )
    assert "pod CIDR" in plan.rejected[keys.ipcache("c1", "n2", "10.1.0.7")]
    assert "has no valid node record" in plan.rejected[keys.ipcache("c1", "n9", "10.1.9.1")]


def test_overlapping_allocations_and_shared_node_ips_older_wins() -> None:
    allocs = {**ALLOCS, "n3": Allocation(ipaddress.IPv4Network("10.1.1.0/25"), 9)}
    nodes = {**NODES, "n3": _node("n3", "198.18.1.2", rev=99)}
    entries = dict([_entry("n3", "10.1.1.6", "198.18.1.2")])
    plan = plan_ipcache(entries, nodes, allocs, BOUNDS, "n1", "198.18.1.1")
    assert "overlaps node n2" in plan.rejected[keys.podcidr_node("c1", "n3")]
    assert "already node n2's" in plan.rejected[keys.node("c1", "n3")]
    assert keys.ipcache("c1", "n3", "10.1.1.6") in plan.rejected
    assert "n3" not in plan.cidrs and "n3" not in plan.nodes


def test_own_address_comes_from_configuration() -> None:
    plan = plan_ipcache({}, {}, {}, BOUNDS, "n1", "198.18.1.1")
    assert plan.desired == {"198.18.1.1/32": Desired(HOST, "", 1)}


def test_unreferenced() -> None:
    assert unreferenced({300: 7, 301: 9}, {300}) == {301: 9}
    assert unreferenced({}, {1}) == {}
