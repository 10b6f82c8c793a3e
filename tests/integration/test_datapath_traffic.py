"""Real traffic through glia's datapath, in network namespaces.

An underlay namespace with a bridge, two node namespaces each with a loaded
and configured Datapath and glia_vxlan, and pods as plain namespaces plumbed
with create_endpoint_veth from inside their node. Maps are programmed directly
(as the agent would). Checks ping and TCP on one node and across nodes, that
the node's IP stack does not forward pod traffic (redirect_peer, forwarding
off), that traffic stops without the programs, anti-spoofing with its drop
event, that pinned maps outlive the loader, and that the overlay takes
packets only from nodes of the mesh: crafted VXLAN sent with an ordinary UDP
socket from a host on the underlay, from a node for addresses not its own,
or from a pod to a node's VXLAN port delivers nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import netns_util as nu
import pytest

from glia.datapath import netlink, packets, tc
from glia.datapath.drop import Direction, Reason
from glia.datapath.events import DropEvent, EventReader
from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo
from glia.model import make_cluster_identity

CLUSTER_ID = 1
POD_MTU = 1450
ROGUE_IP = "198.18.0.99"  # a host on the underlay that is no node
LISTEN_PORT = 9000


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
    rogue: str = ""  # namespace of ROGUE_IP


def _add_node(mesh: Mesh, underlay: str, name: str, index: int) -> Node:
    ns = f"{nu.prefix()}-{name}"
    mesh.namespaces.append(ns)
    ip = f"198.18.0.{index}"
    vxlan = nu.plumb_node(underlay, ns, name, ip)
    dp = Datapath(nu.pin_dir(name), mesh.obj_dir)
    node = Node(name, ns, ip, f"10.{CLUSTER_ID}.{index}.1", dp.pin_dir, dp, vxlan)
    mesh.nodes[name] = node
    dp.load()
    _configure(node, netlink.VXLAN_PORT)
    nu.call_in(ns, dp.attach_overlay, vxlan)
    return node


def _configure(node: Node, vxlan_port: int) -> None:
    node.dp.configure(
        node_ip=node.ip,
        vxlan_ifindex=node.vxlan_ifindex,
        cluster_id=CLUSTER_ID,
        vxlan_port=vxlan_port,
    )


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
        mesh.rogue = f"{nu.prefix()}-rogue"
        mesh.namespaces.append(mesh.rogue)
        nu.plumb_host(underlay, mesh.rogue, "rogue", ROGUE_IP)
        # Every node learns every node and pod, as the agent's ipcache sync does.
        node_ips = {node.name: node.ip for node in mesh.nodes.values()}
        pods = [(pod.ip, pod.identity, pod.node) for pod in mesh.pods.values()]
        for node in mesh.nodes.values():
            node.dp.ipcache.upsert_many(nu.agent_ipcache(CLUSTER_ID, node_ips, pods, node.name))
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


# --- the overlay takes packets from nodes of the mesh only (bpf/include/overlay.h) ---


def _forged(vni: int, src: str, dst: str, text: str) -> bytes:
    """A VXLAN datagram's payload: a UDP packet ``src`` -> ``dst``:LISTEN_PORT
    carrying ``text``, with ``vni`` as the sender's identity."""
    inner = packets.ipv4(src, dst, packets.udp(40000, LISTEN_PORT, text.encode()))
    frame = packets.ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", packets.ETH_P_IP, inner)
    return packets.vxlan(vni, frame)


def _drops(events: EventReader, *reasons: Reason) -> list[DropEvent]:
    """The drop events seen until one per entry of ``reasons`` has arrived, in order
    of ``reasons`` (others are ignored)."""
    wanted = Counter(reasons)

    def enough(evs: list[DropEvent]) -> bool:
        got = Counter(ev.reason for ev in evs)
        return all(got[r] >= n for r, n in wanted.items())

    seen = nu.collect_events(events, enough, timeout=5)
    return sorted(
        (ev for ev in seen if ev.reason in wanted), key=lambda ev: reasons.index(ev.reason)
    )


def test_vxlan_from_a_host_that_is_no_node_is_dropped(mesh: Mesh) -> None:
    """A host on the underlay sends VXLAN to n2 for p3, claiming p1's address and
    identity: nothing arrives, and the drop names the real sender."""
    n2, p1, p3 = mesh.nodes["n2"], mesh.pods["p1"], mesh.pods["p3"]
    drops = _count(n2, Reason.DROP_UNKNOWN_NODE, Direction.INGRESS)
    with nu.udp_listener(p3.ns, p3.ip, LISTEN_PORT) as got, EventReader(n2.pin) as events:
        events.poll()
        forged = _forged(p1.identity, p1.ip, p3.ip, "forged")
        nu.udp_send(mesh.rogue, n2.ip, netlink.VXLAN_PORT, forged)
        (ev,) = _drops(events, Reason.DROP_UNKNOWN_NODE)
        nu.udp_send(p1.ns, p3.ip, LISTEN_PORT, b"real")
        assert got.wait_for(f"{p1.ip} real") == [f"{p1.ip} real"]
    assert _count(n2, Reason.DROP_UNKNOWN_NODE, Direction.INGRESS) == drops + 1
    assert (ev.tunnel_src, ev.saddr, ev.daddr, ev.src_identity, ev.direction) == (
        ROGUE_IP,
        p1.ip,
        p3.ip,
        p1.identity,
        "ingress",
    )


def test_a_node_cannot_send_for_what_is_not_its_own(mesh: Mesh) -> None:
    """n1 itself (a node of the mesh) sends VXLAN to n2 from an ordinary socket: for
    its own pod, delivered (so the crafted packets are sound); from an address the
    ipcache does not place on n1, and for its pod with another cluster's identity,
    dropped."""
    n1, n2, p1, p3 = mesh.nodes["n1"], mesh.nodes["n2"], mesh.pods["p1"], mesh.pods["p3"]
    not_of_node = _count(n2, Reason.DROP_SOURCE_NOT_OF_NODE, Direction.INGRESS)
    bad_identity = _count(n2, Reason.DROP_IDENTITY_NOT_OF_NODE, Direction.INGRESS)
    with nu.udp_listener(p3.ns, p3.ip, LISTEN_PORT) as got, EventReader(n2.pin) as events:
        events.poll()
        crafted = _forged(p1.identity, p1.ip, p3.ip, "crafted")
        nu.udp_send(n1.ns, n2.ip, netlink.VXLAN_PORT, crafted, src=n1.ip)
        assert got.wait_for(f"{p1.ip} crafted") == [f"{p1.ip} crafted"]
        for forged in (
            _forged(p1.identity, "10.1.9.9", p3.ip, "stranger"),
            _forged(make_cluster_identity(2, 300), p1.ip, p3.ip, "other cluster"),
        ):
            nu.udp_send(n1.ns, n2.ip, netlink.VXLAN_PORT, forged, src=n1.ip)
        stranger, foreign = _drops(
            events, Reason.DROP_SOURCE_NOT_OF_NODE, Reason.DROP_IDENTITY_NOT_OF_NODE
        )
        nu.udp_send(p1.ns, p3.ip, LISTEN_PORT, b"real")
        assert got.wait_for(f"{p1.ip} real") == [f"{p1.ip} crafted", f"{p1.ip} real"]
    assert _count(n2, Reason.DROP_SOURCE_NOT_OF_NODE, Direction.INGRESS) == not_of_node + 1
    assert _count(n2, Reason.DROP_IDENTITY_NOT_OF_NODE, Direction.INGRESS) == bad_identity + 1
    assert (stranger.tunnel_src, stranger.saddr) == (n1.ip, "10.1.9.9")
    assert (foreign.tunnel_src, foreign.src_identity) == (n1.ip, make_cluster_identity(2, 300))


def test_a_pod_cannot_reach_the_vxlan_port(mesh: Mesh) -> None:
    """p1 sends crafted VXLAN (p3 talking to p2) to its own node's VXLAN port and
    to the other node's: dropped as it leaves p1; ordinary UDP to another port of
    its node still arrives."""
    n1, p1, p2, p3 = mesh.nodes["n1"], mesh.pods["p1"], mesh.pods["p2"], mesh.pods["p3"]
    drops = _count(n1, Reason.DROP_OVERLAY_PORT, Direction.EGRESS)
    forged = _forged(p3.identity, p3.ip, p2.ip, "forged")
    with (
        nu.udp_listener(p2.ns, p2.ip, LISTEN_PORT) as got,
        nu.udp_listener(n1.ns, n1.ip, LISTEN_PORT) as node_got,
        EventReader(n1.pin) as events,
    ):
        events.poll()
        for node in mesh.nodes.values():
            nu.udp_send(p1.ns, node.ip, netlink.VXLAN_PORT, forged)
        seen = _drops(events, Reason.DROP_OVERLAY_PORT, Reason.DROP_OVERLAY_PORT)
        nu.udp_send(p1.ns, n1.ip, LISTEN_PORT, b"ordinary")
        assert node_got.wait_for(f"{p1.ip} ordinary") == [f"{p1.ip} ordinary"]
        nu.udp_send(p3.ns, p2.ip, LISTEN_PORT, b"real")
        assert got.wait_for(f"{p3.ip} real") == [f"{p3.ip} real"]
    assert _count(n1, Reason.DROP_OVERLAY_PORT, Direction.EGRESS) == drops + 2
    assert sorted((ev.daddr, ev.dport, ev.saddr) for ev in seen) == [
        (node.ip, netlink.VXLAN_PORT, p1.ip) for node in mesh.nodes.values()
    ]


def test_without_the_port_guard_the_overlay_still_refuses_a_pod(mesh: Mesh) -> None:
    """With n1's VXLAN port unknown to its programs (no guard on the sending side),
    p1's crafted VXLAN reaches n1's VXLAN socket, as the issue found; from_overlay
    refuses it, since p1 is no node."""
    n1, p1, p2, p3 = mesh.nodes["n1"], mesh.pods["p1"], mesh.pods["p2"], mesh.pods["p3"]
    drops = _count(n1, Reason.DROP_UNKNOWN_NODE, Direction.INGRESS)
    _configure(n1, 0)
    try:
        with nu.udp_listener(p2.ns, p2.ip, LISTEN_PORT) as got, EventReader(n1.pin) as events:
            events.poll()
            nu.udp_send(p1.ns, n1.ip, netlink.VXLAN_PORT, _forged(p3.identity, p3.ip, p2.ip, "x"))
            (ev,) = _drops(events, Reason.DROP_UNKNOWN_NODE)
            nu.udp_send(p3.ns, p2.ip, LISTEN_PORT, b"real")
            assert got.wait_for(f"{p3.ip} real") == [f"{p3.ip} real"]
    finally:
        _configure(n1, netlink.VXLAN_PORT)
    assert _count(n1, Reason.DROP_UNKNOWN_NODE, Direction.INGRESS) == drops + 1
    assert (ev.tunnel_src, ev.saddr, ev.src_identity) == (p1.ip, p3.ip, p3.identity)
