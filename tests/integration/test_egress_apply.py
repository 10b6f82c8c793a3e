"""glia.agent.egress applied to a real network namespace (never the host's).

A namespace of the test's own with one veth addressed in 192.0.2.0/24 (so
node routes have an on-link next hop): ``apply`` turns forwarding on, loads
table ``ip glia_egress`` and installs the node routes with protocol 200; a
second plan replaces the table whole and removes routes it no longer names,
leaving routes of other protocols alone.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from ipaddress import IPv4Network

import netns_util as nu
import pytest

from glia.agent import egress
from glia.agent.egress import ClusterNodes

pytestmark = pytest.mark.root

_serial = itertools.count()


@pytest.fixture
def node() -> Iterator[str]:
    nu.cleanup_stale()
    name = f"{nu.prefix()}-eg{next(_serial)}"
    try:
        nu.add_netns(name)
        nu.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"])
        nu.run(["ip", "-n", name, "addr", "add", "192.0.2.1/24", "dev", "eth0"])
        for dev in ("eth0", "eth1"):
            nu.run(["ip", "-n", name, "link", "set", dev, "up"])
        nu.run(["ip", "-n", name, "route", "add", "10.9.0.0/24", "via", "192.0.2.9"])  # not ours
        yield name
    finally:
        nu.del_netns(name)


def _routes(ns: str) -> dict[str, tuple[str, str]]:
    out = nu.run(["ip", "-n", ns, "-j", "route", "show"]).stdout
    return {r["dst"]: (r.get("gateway", ""), str(r.get("protocol", ""))) for r in json.loads(out)}


def _cluster(nodes: dict[str, tuple[str, str]]) -> ClusterNodes:
    return ClusterNodes(
        pools=(IPv4Network("10.1.0.0/16"),),
        nodes={n: (ip, IPv4Network(cidr)) for n, (ip, cidr) in nodes.items()},
    )


def test_apply_then_replace(node: str) -> None:
    first = egress.plan(
        "10.1.1.0/24",
        "192.0.2.1",
        [_cluster({"a": ("192.0.2.1", "10.1.1.0/24"), "b": ("192.0.2.2", "10.1.2.0/24"),
                   "c": ("192.0.2.3", "10.1.3.0/24")})],
    )  # fmt: skip
    assert nu.call_in(node, egress.apply, first) == []
    fwd = nu.run(nu.in_node(node, "sysctl", "-n", "net.ipv4.ip_forward")).stdout.strip()
    assert fwd == "1"
    table = nu.run(nu.in_node(node, "nft", "list", "table", "ip", egress.TABLE)).stdout
    assert "masquerade" in table and "192.0.2.2" in table and "10.1.0.0/16" in table
    routes = _routes(node)
    assert routes["10.1.2.0/24"][0] == "192.0.2.2" and routes["10.1.3.0/24"][0] == "192.0.2.3"
    assert routes["10.9.0.0/24"][0] == "192.0.2.9"

    # Node c left, b moved: one transaction for the table, routes follow.
    second = egress.plan(
        "10.1.1.0/24",
        "192.0.2.1",
        [_cluster({"a": ("192.0.2.1", "10.1.1.0/24"), "b": ("192.0.2.4", "10.1.2.0/24")})],
    )
    assert nu.call_in(node, egress.apply, second) == []
    table = nu.run(nu.in_node(node, "nft", "list", "table", "ip", egress.TABLE)).stdout
    assert "192.0.2.4" in table and "192.0.2.3" not in table
    assert table.count("table ip glia_egress") == 1
    routes = _routes(node)
    assert routes["10.1.2.0/24"][0] == "192.0.2.4"
    assert "10.1.3.0/24" not in routes
    assert routes["10.9.0.0/24"][0] == "192.0.2.9"  # another protocol's: left alone


def test_an_unreachable_next_hop_is_reported_not_raised(node: str) -> None:
    p = egress.plan("10.1.1.0/24", "192.0.2.1", [_cluster({"x": ("203.0.113.7", "10.1.7.0/24")})])
    problems = nu.call_in(node, egress.apply, p)
    assert len(problems) == 1 and "10.1.7.0/24 via 203.0.113.7" in problems[0]
    assert "203.0.113.7" in nu.run(nu.in_node(node, "nft", "list", "set", "ip", egress.TABLE,
                                              "nodes")).stdout  # fmt: skip
