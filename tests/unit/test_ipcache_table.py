"""ClusterTable: event by event, it always equals plan_ipcache computed from scratch."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from glia.agent.ipcache import plan_ipcache
from glia.agent.ipcache_table import ClusterTable, Desired
from glia.kvstore import keys
from glia.model.identity import ReservedIdentity
from glia.validate.bounds import ClusterBounds

B = ClusterBounds.of("c1", 1, "10.1.0.0/16", "10.96.0.0/16")
SELF, SELF_IP = "n1", "198.18.1.1"
NODES = ["n1", "n2", "n3"]
NODE_IPS = ["198.18.1.1", "198.18.1.2", "198.18.1.3"]
BLOCKS = ["10.1.0.0/24", "10.1.1.0/24", "10.1.1.0/25", "10.1.2.0/24", "10.2.0.0/24"]
IPS = ["10.1.0.5", "10.1.1.5", "10.1.1.200", "10.1.2.7", "198.18.1.2", "10.1.0.0"]


def _node(name: str, ip: str) -> bytes:
    return json.dumps({"name": name, "cluster": "c1", "cluster_id": 1, "node_ip": ip}).encode()


def _entry(node: str, ip: str, tunnel: str, identity: int) -> bytes:
    value = {"ip": ip, "identity": identity, "tunnel_endpoint": tunnel, "cluster_id": 1}
    return json.dumps({**value, "node": node}).encode()


def _alloc(node: str, cidr: str) -> bytes:
    return json.dumps({"node": node, "cidr": cidr}).encode()


node_event = st.tuples(
    st.just("nodes"),
    st.sampled_from(NODES),
    st.one_of(st.sampled_from(NODE_IPS), st.just("not-an-ip")),
    st.booleans(),
)
alloc_event = st.tuples(
    st.just("podcidrs"), st.sampled_from(NODES), st.sampled_from(BLOCKS), st.booleans()
)
ip_event = st.tuples(
    st.just("ip"),
    st.sampled_from([*NODES, "ghost"]),
    st.tuples(
        st.sampled_from(IPS),
        st.sampled_from(NODE_IPS),
        st.sampled_from([65792, 65800, 5, 2]),
    ),
    st.booleans(),
)


def _apply(t: ClusterTable, ev: tuple[Any, ...], rev: int) -> None:
    part, node, payload, delete = ev
    if part == "nodes":
        key, value = keys.node("c1", node), _node(node, payload)
    elif part == "podcidrs":
        key, value = keys.podcidr_node("c1", node), _alloc(node, payload)
    else:
        ip, tunnel, identity = payload
        key, value = keys.ipcache("c1", node, ip), _entry(node, ip, tunnel, identity)
    if delete:
        t.delete(part, key)
    else:
        t.upsert(part, key, value, rev)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(node_event, alloc_event, ip_event), max_size=40))
def test_incremental_equals_from_scratch(events: list[tuple[Any, ...]]) -> None:
    t = ClusterTable(B, SELF, SELF_IP)
    dirty: set[str] = set()
    seen = dict(t.wanted())
    for rev, ev in enumerate(events, start=1):
        _apply(t, ev, rev)
        # Every prefix whose wanted value changed was reported dirty.
        now = t.wanted()
        dirty = t.take_dirty()
        assert {p for p in now.keys() | seen.keys() if now.get(p) != seen.get(p)} <= dirty
        seen = now
    plan = plan_ipcache(t.entries, t.nodes, t.allocs, B, SELF, SELF_IP)
    assert t.wanted() == plan.desired
    shape = {k: r for k, r in t.rejected().items() if k not in plan.rejected}
    assert {k: r for k, r in t.rejected().items() if k in plan.rejected} == plan.rejected
    # What the table refused on arrival is exactly what is absent from its inputs.
    for key in shape:
        assert key not in t.entries
    assert t.valid_nodes == plan.nodes and t.cidrs == plan.cidrs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(node_event, alloc_event, ip_event, st.just(None)), max_size=40))
def test_nodes_claiming_taken_addresses_are_refused_as_from_scratch(
    events: list[tuple[Any, ...] | None],
) -> None:
    # A remote cluster's table: addresses another cluster owns (here the set
    # `ours`, which changes: the None events) may not be its nodes' IPs.
    ours: set[str] = {NODE_IPS[2]}

    def taken(ip: str) -> str | None:
        return "ours" if ip in ours else None

    t = ClusterTable(B, SELF, SELF_IP, taken=taken)
    for rev, ev in enumerate(events, start=1):
        if ev is None:
            ours ^= {NODE_IPS[1]}
            t.recheck_nodes()
        else:
            _apply(t, ev, rev)
    plan = plan_ipcache(t.entries, t.nodes, t.allocs, B, SELF, SELF_IP, taken)
    assert t.wanted() == plan.desired
    assert {k: r for k, r in t.rejected().items() if k in plan.rejected} == plan.rejected
    assert t.valid_nodes == plan.nodes
    assert not {n.node_ip for n in t.valid_nodes.values()} & ours
    for name, n in t.nodes.items():
        if n.node.node_ip in ours:
            reason = t.rejected()[keys.node("c1", name)]
            assert reason == f"node_ip {n.node.node_ip} is ours"


def test_a_block_moving_between_nodes_in_one_event() -> None:
    t = ClusterTable(B, SELF, SELF_IP)
    t.upsert("nodes", keys.node("c1", "n2"), _node("n2", "198.18.1.2"), 1)
    t.upsert("nodes", keys.node("c1", "n3"), _node("n3", "198.18.1.3"), 2)
    t.upsert("podcidrs", keys.podcidr_node("c1", "n2"), _alloc("n2", "10.1.1.0/24"), 3)
    t.upsert("podcidrs", keys.podcidr_node("c1", "n3"), _alloc("n3", "10.1.1.0/25"), 4)
    t.upsert(
        "ip", keys.ipcache("c1", "n2", "10.1.1.5"), _entry("n2", "10.1.1.5", "198.18.1.2", 65792), 5
    )
    t.upsert(
        "ip", keys.ipcache("c1", "n3", "10.1.1.5"), _entry("n3", "10.1.1.5", "198.18.1.3", 65800), 6
    )
    assert t.want("10.1.1.5/32") == Desired(65792, "198.18.1.2", 1)
    # n2's block goes: n3's (refused as overlapping until now) becomes valid.
    t.delete("podcidrs", keys.podcidr_node("c1", "n2"))
    assert t.want("10.1.1.5/32") == Desired(65800, "198.18.1.3", 1)
    assert t.want("198.18.1.2/32") == Desired(int(ReservedIdentity.REMOTE_NODE), "", 1)
