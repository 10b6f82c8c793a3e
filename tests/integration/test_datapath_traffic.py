"""Real traffic through glia's datapath, in network namespaces.

An underlay namespace with a bridge, two node namespaces each with a loaded
and configured Datapath and glia_vxlan, and pods as plain namespaces plumbed
with create_endpoint_veth from inside their node. Maps are programmed directly
(as the agent would). Checks ping and TCP on one node and across nodes, that
the node's IP stack does not forward pod traffic (redirect_peer, forwarding
off), that traffic stops without the programs, anti-spoofing with its drop
event, and that pinned maps outlive the loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import netns_util as nu
import pytest

from glia.datapath import netlink, tc
from glia.datapath.drop import Direction, Reason
from glia.datapath.events import EventReader
from glia.datapath.loader import Datapath, unpin
from glia.datapath.maps import EndpointInfo, IPCacheInfo
from glia.model import make_cluster_identity

CLUSTER_ID = 1
POD_MTU = 1450


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    gateway: str
    pin: Path
    dp: Datapath
    vxlan_ifindex: int


@dataclass
class Pod:
    name: str
    ns: str
    node: str
    ip: str
    identity: int
    veth: netlink.VethInfo


@dataclass
class Mesh:
    obj_dir: Path
    namespaces: list[str] = field(default_factory=list)  # to delete, created or not
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)


def _add_node(mesh: Mesh, underlay: str, name: str, index: int) -> Node:
    ns = f"{nu.prefix()}-{name}"
    mesh.namespaces.append(ns)
    ip = f"198.18.0.{index}"
    vxlan = nu.plumb_node(underlay, ns, name, ip)
    dp = Datapath(nu.pin_dir(name), mesh.obj_dir)
    node = Node(name, ns, ip, f"10.{CLUSTER_ID}.{index}.1", dp.pin_dir, dp, vxlan)
    mesh.nodes[name] = node
    dp.load()
    dp.configure(node_ip=ip, vxlan_ifindex=vxlan, cluster_id=CLUSTER_ID)
    nu.call_in(ns, dp.attach_overlay, vxlan)
    return node


def _add_pod(mesh: Mesh, name: str, node: Node, ip: str, n: int) -> Pod:
    ns = f"{nu.prefix()}-{name}"
    mesh.namespaces.append(ns)
    veth = nu.plumb_pod(node.ns, ns, ip, node.gateway, POD_MTU)
    pod = Pod(name, ns, node.name, ip, make_cluster_identity(CLUSTER_ID, n), veth)
    mesh.pods[name] = pod
    node.dp.endpoints.upsert(
        ip, EndpointInfo(veth.host_ifindex, pod.identity, veth.container_mac, veth.host_mac)
    )
    nu.call_in(node.ns, node.dp.attach_endpoint, veth.host_ifindex)
    return pod


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    nu.require_bpffs()
    nu.cleanup_stale()
    mesh = Mesh(nu.bpf_objects())
    underlay = f"{nu.prefix()}-u"
    mesh.namespaces.append(underlay)
    try:
        nu.add_underlay(underlay)
        n1 = _add_node(mesh, underlay, "n1", 1)
        n2 = _add_node(mesh, underlay, "n2", 2)
        _add_pod(mesh, "p1", n1, "10.1.1.5", 300)
        _add_pod(mesh, "p2", n1, "10.1.1.6", 301)
        _add_pod(mesh, "p3", n2, "10.1.2.5", 302)
        # Every node learns every pod, its own included (as the agent's ipcache sync does).
        entries = {
            pod.ip: IPCacheInfo(pod.identity, mesh.nodes[pod.node].ip, CLUSTER_ID)
            for pod in mesh.pods.values()
        }
        for node in mesh.nodes.values():
            node.dp.ipcache.upsert_many(entries)
        yield mesh
    finally:
        for node in mesh.nodes.values():
            node.dp.close()
        for name in reversed(mesh.namespaces):
            nu.del_netns(name)
        for node in mesh.nodes.values():
            unpin(node.pin)


def _count(node: Node, reason: Reason, direction: Direction) -> int:
    return node.dp.metrics.get(reason, direction)[0]


def test_same_node_pods_talk_without_the_node_stack(mesh: Mesh) -> None:
    n1, p1, p2 = mesh.nodes["n1"], mesh.pods["p1"], mesh.pods["p2"]
    forwarded = _count(n1, Reason.FORWARDED, Direction.EGRESS)
    ip_forwarded = nu.netstat_counter(n1.ns, "Ip", "ForwDatagrams")
    p2_host_tx = nu.link_stats(n1.ns, p2.veth.host_ifname)["tx"]["packets"]

    assert nu.ping(p1.ns, p2.ip, count=3)
    with nu.echo_server(p2.ns, p2.ip, 7001):
        assert nu.tcp_exchange(p1.ns, p2.ip, 7001, "hello same node") == "HELLO SAME NODE"

    assert _count(n1, Reason.FORWARDED, Direction.EGRESS) >= forwarded + 6
    # redirect_peer hands packets to the pod's eth0 directly: the node neither
    # routes them nor transmits them on the host-side veth.
    assert nu.netstat_counter(n1.ns, "Ip", "ForwDatagrams") == ip_forwarded
    assert nu.link_stats(n1.ns, p2.veth.host_ifname)["tx"]["packets"] == p2_host_tx
    assert nu.run(nu.in_node(n1.ns, "sysctl", "-n", "net.ipv4.ip_forward")).stdout.strip() == "0"
    for pod in (p1, p2):
        key = f"net.ipv4.conf.{pod.veth.host_ifname}.forwarding"
        assert nu.run(nu.in_node(n1.ns, "sysctl", "-n", key)).stdout.strip() == "0"


def test_pods_on_different_nodes_talk_over_vxlan(mesh: Mesh) -> None:
    n1, n2, p1, p3 = mesh.nodes["n1"], mesh.nodes["n2"], mesh.pods["p1"], mesh.pods["p3"]
    out1 = _count(n1, Reason.FORWARDED, Direction.EGRESS)
    in2 = _count(n2, Reason.FORWARDED, Direction.INGRESS)
    vxlan_tx = nu.link_stats(n1.ns, netlink.VXLAN_NAME)["tx"]["packets"]

    assert nu.ping(p1.ns, p3.ip, count=3)
    with nu.echo_server(p3.ns, p3.ip, 7002):
        assert nu.tcp_exchange(p1.ns, p3.ip, 7002, "hello other node") == "HELLO OTHER NODE"

    assert _count(n1, Reason.FORWARDED, Direction.EGRESS) >= out1 + 3
    assert _count(n2, Reason.FORWARDED, Direction.INGRESS) >= in2 + 3
    assert nu.link_stats(n1.ns, netlink.VXLAN_NAME)["tx"]["packets"] >= vxlan_tx + 3
    assert nu.netstat_counter(n2.ns, "Ip", "ForwDatagrams") == 0


def test_node_reaches_its_own_pods(mesh: Mesh) -> None:
    n1, p1 = mesh.nodes["n1"], mesh.pods["p1"]
    to_stack = _count(n1, Reason.TO_STACK, Direction.EGRESS)
    assert (
        nu.run(nu.in_node(n1.ns, "busybox", "ping", "-q", "-c", "1", "-W", "1", p1.ip)).returncode
        == 0
    )
    assert _count(n1, Reason.TO_STACK, Direction.EGRESS) > to_stack  # the echo reply


def test_traffic_stops_without_the_programs(mesh: Mesh) -> None:
    n1, n2 = mesh.nodes["n1"], mesh.nodes["n2"]
    p1, p2, p3 = mesh.pods["p1"], mesh.pods["p2"], mesh.pods["p3"]
    host = p1.veth.host_ifindex
    try:
        assert nu.call_in(n1.ns, n1.dp.detach, host)
        assert nu.call_in(n1.ns, tc.ingress_prog_id, host) is None
        assert not nu.ping(p1.ns, p2.ip)
        assert not nu.ping(p1.ns, p3.ip)
    finally:
        nu.call_in(n1.ns, n1.dp.attach_endpoint, host)
    assert nu.ping(p1.ns, p2.ip)
    assert nu.ping(p1.ns, p3.ip)

    try:
        assert nu.call_in(n2.ns, n2.dp.detach, n2.vxlan_ifindex)
        assert not nu.ping(p1.ns, p3.ip)
    finally:
        nu.call_in(n2.ns, n2.dp.attach_overlay, n2.vxlan_ifindex)
    assert nu.ping(p1.ns, p3.ip)


def test_spoofed_source_is_dropped_and_reported(mesh: Mesh) -> None:
    n1, p1, p2, p3 = mesh.nodes["n1"], mesh.pods["p1"], mesh.pods["p2"], mesh.pods["p3"]
    forged = "10.1.1.99"
    drops = _count(n1, Reason.DROP_INVALID_SOURCE, Direction.EGRESS)
    with EventReader(n1.pin) as events:
        events.poll()  # whatever earlier tests left
        # An address nobody owns; then p2's address sent from p1's veth.
        for addr, dst in ((forged, p2.ip), (p2.ip, p3.ip)):
            nu.run(nu.in_pod(p1.ns, "ip", "addr", "add", f"{addr}/32", "dev", "eth0"))
            try:
                assert not nu.ping(p1.ns, dst, src=addr)
            finally:
                nu.run(nu.in_pod(p1.ns, "ip", "addr", "del", f"{addr}/32", "dev", "eth0"))
        seen = nu.collect_events(
            events, lambda evs: {forged, p2.ip} <= {ev.saddr for ev in evs}, timeout=5
        )
    assert _count(n1, Reason.DROP_INVALID_SOURCE, Direction.EGRESS) >= drops + 2
    spoofed = [ev for ev in seen if ev.reason == Reason.DROP_INVALID_SOURCE]
    first = next(ev for ev in spoofed if ev.saddr == forged)
    assert (first.daddr, first.proto, first.ifindex, first.direction) == (
        p2.ip,
        1,
        p1.veth.host_ifindex,
        "egress",
    )
    assert any(ev.saddr == p2.ip and ev.daddr == p3.ip for ev in spoofed)
    # Real traffic from p1 still flows.
    assert nu.ping(p1.ns, p2.ip)


def test_maps_outlive_the_loader(mesh: Mesh) -> None:
    n1, p1, p2, p3 = mesh.nodes["n1"], mesh.pods["p1"], mesh.pods["p2"], mesh.pods["p3"]
    endpoints = n1.dp.endpoints.items()
    ipcache = n1.dp.ipcache.items()
    forwarded = _count(n1, Reason.FORWARDED, Direction.EGRESS)
    old_prog = nu.call_in(n1.ns, tc.ingress_prog_id, p1.veth.host_ifindex)

    n1.dp.close()  # like an agent exit: attached programs and pins stay
    assert nu.ping(p1.ns, p2.ip)
    assert nu.ping(p1.ns, p3.ip)

    n1.dp = Datapath(n1.pin, mesh.obj_dir)
    n1.dp.load()
    assert n1.dp.endpoints.items() == endpoints
    assert n1.dp.ipcache.items() == ipcache
    assert n1.dp.config.get().node_ip == n1.ip
    assert _count(n1, Reason.FORWARDED, Direction.EGRESS) >= forwarded + 2

    # Re-attaching the new load replaces the old program in place.
    for pod in (p1, p2):
        nu.call_in(n1.ns, n1.dp.attach_endpoint, pod.veth.host_ifindex)
    nu.call_in(n1.ns, n1.dp.attach_overlay, n1.vxlan_ifindex)
    new_prog = nu.call_in(n1.ns, tc.ingress_prog_id, p1.veth.host_ifindex)
    assert new_prog is not None and new_prog != old_prog
    assert nu.ping(p1.ns, p2.ip)
    assert nu.ping(p3.ns, p1.ip)
