"""Endpoint veths and the VXLAN device, plumbed for real in test namespaces.

What create_endpoint_veth leaves on both sides is read back with ``ip -j``;
failures must roll back; deletion and ensure_vxlan are idempotent.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import netns_util as nu
import pytest

from glia.datapath import netlink
from glia.datapath.errors import DatapathError

POD_IP = "10.1.1.5"
GATEWAY = "10.1.1.1"


@dataclass
class Pair:
    node: str
    pod: str


_serial = itertools.count()


@pytest.fixture
def pair() -> Iterator[Pair]:
    nu.cleanup_stale()
    tag = next(_serial)
    names = Pair(f"{nu.prefix()}-nl{tag}", f"{nu.prefix()}-nlp{tag}")
    try:
        nu.add_netns(names.node)
        nu.add_netns(names.pod)
        yield names
    finally:
        nu.del_netns(names.pod)
        nu.del_netns(names.node)


def ip_json(ns: str, *args: str) -> Any:
    return json.loads(nu.run(["ip", "-n", ns, "-j", *args]).stdout or "[]")


def create(pair: Pair, host_ifname: str | None = None, **overrides: Any) -> netlink.VethInfo:
    kwargs: dict[str, Any] = {
        "netns_path": nu.ns_path(pair.pod),
        "ifname": "eth0",
        "host_ifname": host_ifname or netlink.host_ifname_for(pair.pod, "eth0"),
        "ip": POD_IP,
        "gateway": GATEWAY,
        "mtu": 1450,
    } | overrides
    return nu.call_in(pair.node, netlink.create_endpoint_veth, **kwargs)


def test_endpoint_veth_is_plumbed_on_both_sides(pair: Pair) -> None:
    info = create(pair)

    pod_link = ip_json(pair.pod, "link", "show", "eth0")[0]
    assert (pod_link["ifindex"], pod_link["address"]) == (
        info.container_ifindex,
        info.container_mac,
    )
    assert pod_link["mtu"] == 1450 and "UP" in pod_link["flags"]
    addrs = ip_json(pair.pod, "-4", "addr", "show", "eth0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [(POD_IP, 32)]
    routes = {
        (r["dst"], r.get("gateway"), tuple(r.get("flags", []))) for r in ip_json(pair.pod, "route")
    }
    assert routes == {("default", GATEWAY, ("onlink",)), (GATEWAY, None, ())}
    neigh = ip_json(pair.pod, "neigh", "show", "dev", "eth0")
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [
        (GATEWAY, info.host_mac, ["PERMANENT"])
    ]
    v6 = nu.run(nu.in_pod(pair.pod, "sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6"))
    assert v6.stdout.strip() == "1"

    host = info.host_ifname
    host_link = ip_json(pair.node, "link", "show", host)[0]
    assert (host_link["ifindex"], host_link["address"]) == (info.host_ifindex, info.host_mac)
    assert host_link["mtu"] == 1450 and "UP" in host_link["flags"]
    assert [(r["dst"], r["dev"], r.get("scope")) for r in ip_json(pair.node, "route")] == [
        (POD_IP, host, "link")
    ]
    neigh = ip_json(pair.node, "neigh", "show", "dev", host)
    assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [
        (POD_IP, info.container_mac, ["PERMANENT"])
    ]
    fwd = nu.run(nu.in_node(pair.node, "sysctl", "-n", f"net.ipv4.conf.{host}.forwarding"))
    assert fwd.stdout.strip() == "0"
    assert nu.call_in(pair.node, netlink.list_links, netlink.HOST_PREFIX) == [
        (host, info.host_ifindex)
    ]


def test_failure_after_the_pod_side_rolls_back_the_pair(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection at the last step: the pod side is configured by then,
    # so the rollback has to remove a fully plumbed pair from both namespaces.
    def fail(*args: Any) -> None:
        raise DatapathError("configuring host side: injected failure")

    monkeypatch.setattr(netlink, "configure_host_side", fail)
    with pytest.raises(DatapathError, match="injected failure"):
        create(pair)
    assert nu.call_in(pair.node, netlink.list_links, netlink.HOST_PREFIX) == []
    assert [link["ifname"] for link in ip_json(pair.pod, "link")] == ["lo"]


def test_existing_pod_routes_are_replaced(pair: Pair) -> None:
    # Something in the pod namespace got there first (a route, or a neighbour
    # entry made by early traffic): the plumbing takes over instead of failing.
    nu.run(["ip", "-n", pair.pod, "route", "add", f"{GATEWAY}/32", "dev", "lo"])
    info = create(pair)
    routes = {r["dst"]: r.get("dev") for r in ip_json(pair.pod, "route")}
    assert routes[GATEWAY] == "eth0"
    assert nu.call_in(pair.node, netlink.list_links, netlink.HOST_PREFIX) == [
        (info.host_ifname, info.host_ifindex)
    ]


def test_existing_host_name_is_refused_and_left_alone(pair: Pair) -> None:
    first = create(pair, host_ifname="gliaetest0")
    with pytest.raises(DatapathError, match="already exists"):
        create(pair, host_ifname="gliaetest0", ifname="eth1", ip="10.1.1.6")
    assert nu.call_in(pair.node, netlink.list_links, "gliaetest") == [
        ("gliaetest0", first.host_ifindex)
    ]


def test_bad_pod_namespace_is_reported(pair: Pair) -> None:
    with pytest.raises(DatapathError, match="cannot open pod network namespace"):
        create(pair, netns_path=f"/run/netns/{nu.prefix()}-missing")
    assert nu.call_in(pair.node, netlink.list_links, netlink.HOST_PREFIX) == []


def test_delete_is_idempotent(pair: Pair) -> None:
    info = create(pair)
    assert nu.call_in(pair.node, netlink.delete_endpoint_veth, info.host_ifname)
    assert not nu.call_in(pair.node, netlink.delete_endpoint_veth, info.host_ifname)
    assert [link["ifname"] for link in ip_json(pair.pod, "link")] == ["lo"]
    assert ip_json(pair.node, "route") == []


def test_ensure_vxlan_is_idempotent_and_fixes_settings(pair: Pair) -> None:
    first = nu.call_in(pair.node, netlink.ensure_vxlan)
    assert nu.call_in(pair.node, netlink.ensure_vxlan) == first
    link = ip_json(pair.node, "-d", "link", "show", netlink.VXLAN_NAME)[0]
    data = link["linkinfo"]["info_data"]
    assert (data["external"], data["port"], data["learning"]) == (True, 8472, False)
    assert link["ifindex"] == first and link["mtu"] == 1500 and "UP" in link["flags"]

    replaced = nu.call_in(pair.node, netlink.ensure_vxlan, port=4789, mtu=1450)
    link = ip_json(pair.node, "-d", "link", "show", netlink.VXLAN_NAME)[0]
    assert (link["ifindex"], link["mtu"]) == (replaced, 1450)
    assert link["linkinfo"]["info_data"]["port"] == 4789
    # The sweep prefix for endpoint veths never matches the VXLAN device.
    assert nu.call_in(pair.node, netlink.list_links, netlink.HOST_PREFIX) == []
    assert nu.call_in(pair.node, netlink.list_links, "glia") == [(netlink.VXLAN_NAME, replaced)]
