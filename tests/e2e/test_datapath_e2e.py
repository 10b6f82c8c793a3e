"""Pod traffic goes through glia's BPF programs: counters, detaching, anti-spoofing.

Uses the session lab: containers on c1/n1 (a, c and the forger s) and c1/n2
(b). Shown here, with real podman containers and real packets:

- ping and TCP across nodes and on one node move the datapath's FORWARDED
  counters (``glia bpf metrics``) on the nodes they cross;
- with glia's tc programs removed from the endpoint veths and the VXLAN
  devices, that traffic stops (the node's own IP stack does not route pods);
  restarting the agents re-attaches them and the traffic is back;
- a container that forges its source address (an unallocated IP of its node,
  or another endpoint's IP) gets nothing through: the peer's listener and IP
  stack see nothing, and the drop is counted as DROP_INVALID_SOURCE.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from labhelpers import (
    all_of,
    detach_all,
    glia_devices,
    http,
    ingress_program,
    metric_delta,
    metrics,
    ping,
    recorded_hits,
    recorder_command,
    restart_agents,
    snmp,
    tcp_send,
    wait_for,
)

from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NODES = ["c1/n1", "c1/n2"]
FORWARDED = "FORWARDED"
INVALID_SOURCE = "DROP_INVALID_SOURCE"


@dataclass
class Pods:
    a: Container  # c1/n1
    b: Container  # c1/n2
    c: Container  # c1/n1
    s: Container  # c1/n1, NET_ADMIN: forges source addresses


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[Pods]:
    tag = uuid.uuid4().hex[:6]
    started: list[Container] = []
    try:
        for node, role in [("c1/n1", "a"), ("c1/n2", "b"), ("c1/n1", "c")]:
            name = f"glia-dp-{role}-{tag}"
            started.append(
                lab.run_container(node, name, labels={"app": role}, command=recorder_command(name))
            )
        started.append(
            lab.run_container(
                "c1/n1", f"glia-dp-s-{tag}", labels={"app": "forger"}, cap_add=["NET_ADMIN"]
            )
        )
        pods = Pods(*started)
        # Remote entries reach the other node's ipcache through etcd: wait once here.
        for src, dst in [(pods.a, pods.b), (pods.b, pods.a), (pods.a, pods.c), (pods.s, pods.b)]:
            wait_for(f"ping {src.name} -> {dst.name}", lambda s=src, d=dst: ping(lab, s, _ip(d)))
        yield pods
    finally:
        for ctr in started:
            lab.remove_container(ctr.node, ctr.name)


def _traffic(lab: Lab, src: Container, dst: Container, pings: int) -> None:
    assert ping(lab, src, _ip(dst), count=pings), f"ping {src.name} -> {dst.name}"
    assert http(lab, src, _ip(dst)) == dst.name, f"HTTP {src.name} -> {dst.name}"


def test_cross_node_traffic_moves_both_nodes_counters(lab: Lab, pods: Pods) -> None:
    before = {n: metrics(lab, n) for n in NODES}
    _traffic(lab, pods.a, pods.b, pings=3)
    _traffic(lab, pods.b, pods.a, pings=3)
    after = {n: metrics(lab, n) for n in NODES}
    for node in NODES:
        # Each node sent 3 echo requests and 3 replies into the tunnel
        # (egress) and delivered as many from it (ingress), plus the TCP.
        for direction in ("egress", "ingress"):
            moved = metric_delta(before[node], after[node], FORWARDED, direction)
            assert moved >= 6, f"{node}: FORWARDED {direction} moved by {moved}"


def test_same_node_traffic_moves_the_counters(lab: Lab, pods: Pods) -> None:
    before = metrics(lab, "c1/n1")
    _traffic(lab, pods.a, pods.c, pings=3)
    _traffic(lab, pods.c, pods.a, pings=3)
    after = metrics(lab, "c1/n1")
    # Requests and replies, both ways, each redirected by from_endpoint.
    moved = metric_delta(before, after, FORWARDED, "egress")
    assert moved >= 12, f"c1/n1: FORWARDED egress moved by {moved}"


def _probes(lab: Lab, pods: Pods) -> dict[str, bool]:
    pairs = {"a->b": (pods.a, pods.b), "b->a": (pods.b, pods.a), "a->c": (pods.a, pods.c)}
    probes = {}
    for what, (src, dst) in pairs.items():
        probes[f"ping {what}"] = lambda s=src, d=dst: ping(lab, s, _ip(d), count=2)
        probes[f"tcp {what}"] = lambda s=src, d=dst: http(lab, s, _ip(d), timeout=2) == d.name
    return all_of(probes)


def test_traffic_stops_without_the_programs_and_returns_with_them(lab: Lab, pods: Pods) -> None:
    assert all(_probes(lab, pods).values())
    try:
        for node in NODES:
            assert detach_all(lab, node), f"{node}: no glia device found"
            for dev in glia_devices(lab, node):
                assert ingress_program(lab, node, dev) is None, f"{node}/{dev} still attached"
        # The node's IP stack does not route pod traffic: nothing gets through.
        results = _probes(lab, pods)
        assert not any(results.values()), f"traffic without glia's programs: {results}"
    finally:
        # A restarted agent re-attaches its programs when it adopts its endpoints.
        restart_agents(lab, NODES)
    for node in NODES:
        for dev in glia_devices(lab, node):
            want = "from_overlay" if dev == "glia_vxlan" else "from_endpoint"
            assert ingress_program(lab, node, dev) == want, f"{node}/{dev}"
    wait_for("traffic back after re-attaching", lambda: all(_probes(lab, pods).values()))


def _gateway(lab: Lab, ctr: Container) -> str:
    out = lab.exec(f"{ctr.node}/{ctr.name}", ["ip", "route", "show", "default"], check=True)
    words = out.stdout.split()
    return words[words.index("via") + 1]


def test_forged_source_addresses_get_nothing_through(lab: Lab, pods: Pods) -> None:
    s, peers = pods.s, [pods.b, pods.c]  # a peer on the other node and one on the same
    target = f"{s.node}/{s.name}"
    # Positive control: the forger's own address works, and the listeners record.
    for peer in peers:
        hits = recorded_hits(lab, peer)
        assert ping(lab, s, _ip(peer)) and tcp_send(lab, s, _ip(peer))
        wait_for(
            f"{peer.name} records a connection", lambda p=peer, h=hits: recorded_hits(lab, p) > h
        )
    gateway = _gateway(lab, s)
    unallocated = _ip(s).rsplit(".", 1)[0] + ".250"
    taken = {ep["ip"] for n in NODES for ep in lab.agent(n).endpoints()}
    assert unallocated not in taken
    for forged in (unallocated, _ip(pods.a)):  # nobody's IP; another endpoint's IP
        lab.exec(target, ["ip", "addr", "add", f"{forged}/32", "dev", "eth0"], check=True)
        for peer in peers:
            route = [f"{_ip(peer)}/32", "via", gateway, "dev", "eth0", "onlink", "src", forged]
            lab.exec(target, ["ip", "route", "replace", *route], check=True)
        before = metrics(lab, s.node)
        seen = {p.name: (recorded_hits(lab, p), snmp(lab, p)) for p in peers}
        probes = {}
        for peer in peers:
            probes[f"ping {peer.name}"] = lambda p=peer: ping(lab, s, _ip(p), count=3)
            probes[f"tcp {peer.name}"] = lambda p=peer: tcp_send(lab, s, _ip(p))
        got = all_of(probes)
        assert not any(got.values()), f"answers to source {forged}: {got}"
        after = metrics(lab, s.node)
        for peer in peers:
            hits, counters = seen[peer.name]
            now = snmp(lab, peer)
            assert recorded_hits(lab, peer) == hits, f"{peer.name} accepted a forged connection"
            for counter in ("Icmp.InMsgs", "Icmp.InEchos", "Tcp.InSegs", "Tcp.PassiveOpens"):
                assert now[counter] == counters[counter], f"{peer.name}: {counter} from {forged}"
        # 3 echo requests and at least one SYN per peer, dropped by from_endpoint.
        dropped = metric_delta(before, after, INVALID_SOURCE, "egress")
        assert dropped >= 8, f"{INVALID_SOURCE} moved by {dropped} for source {forged}"
        for peer in peers:
            lab.exec(target, ["ip", "route", "del", f"{_ip(peer)}/32"], check=True)
        lab.exec(target, ["ip", "addr", "del", f"{forged}/32", "dev", "eth0"], check=True)
    # Its own address still works: only the forged packets were dropped.
    for peer in peers:
        hits = recorded_hits(lab, peer)
        assert ping(lab, s, _ip(peer)) and tcp_send(lab, s, _ip(peer))
        wait_for(f"{peer.name} records again", lambda p=peer, h=hits: recorded_hits(lab, p) > h)
