"""The overlay takes packets only from nodes of the mesh, sending for their own pods.

Uses the session lab: the sender ``a`` and the target ``t1`` on c1/n1, the
target ``t2`` and the bystander ``u2`` (whose address gets forged) on c1/n2.
Crafted VXLAN (a valid header and VNI, an inner Ethernet + IPv4 + UDP packet
with a forged source, to a target's UDP listener) is sent with an ordinary UDP
socket:

- from inside pod ``a``'s network namespace, to its own node's VXLAN port and
  to the other node's: dropped as it leaves the pod (DROP_OVERLAY_PORT);
- from c1/n1's own namespace (a real node) for ``u2``, a pod of c1/n2: dropped
  by c1/n2 (DROP_SOURCE_NOT_OF_NODE);
- from the cluster's etcd namespace, a host on the underlay that is no node:
  dropped by c1/n2 (DROP_UNKNOWN_NODE).

Each time the target's listener receives nothing of it, while an ordinary
datagram sent right after from pod ``a`` arrives, and the drop is counted
with its reason in ``glia bpf metrics``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from labhelpers import (
    LineReader,
    endpoint_named,
    metric_delta,
    metrics,
    netns_python,
    netns_python_argv,
    wait_for,
)

from glia.datapath import packets
from glia.lab import netns
from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

N1, N2 = "c1/n1", "c1/n2"
LISTEN_PORT = 9100

# Prints "ready", then "source-ip payload" per datagram.
UDP_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    print(peer[0], data.decode(errors="replace"), flush=True)
"""

# One datagram (hex payload) from an ordinary UDP socket.
UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
"""


@dataclass
class Pod:
    ctr: Container
    ip: str
    identity: int


@dataclass
class Pods:
    a: Pod  # c1/n1: sends the crafted VXLAN and the real datagrams
    t1: Pod  # c1/n1: target
    t2: Pod  # c1/n2: target
    u2: Pod  # c1/n2: its address and identity are forged


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[Pods]:
    tag = uuid.uuid4().hex[:6]
    started: list[Container] = []
    try:
        for node, role in [(N1, "a"), (N1, "t1"), (N2, "t2"), (N2, "u2")]:
            started.append(
                lab.run_container(node, f"glia-ov-{role}-{tag}", labels={"app": f"overlay-{role}"})
            )
        found = []
        for ctr in started:
            ep = wait_for(
                f"endpoint {ctr.name} with its identity", lambda c=ctr: endpoint_named(lab, c)
            )
            assert ctr.ip, ctr.name
            found.append(Pod(ctr, ctr.ip, int(ep["identity"])))
        pods = Pods(*found)
        # Remote entries reach the other node's ipcache through etcd: wait once here.
        for dst in (pods.t1, pods.t2):
            with listener(dst) as got:
                wait_for(
                    f"a datagram from {pods.a.ctr.name} to {dst.ctr.name}",
                    lambda d=dst, g=got: _send_real(pods.a, d, g, "warm-up", wait=False),
                )
        yield pods
    finally:
        for ctr in started:
            lab.remove_container(ctr.node, ctr.name)


@contextmanager
def listener(pod: Pod) -> Iterator[LineReader]:
    """A UDP listener on LISTEN_PORT in ``pod``'s namespace, ready when yielded."""
    proc = subprocess.Popen(
        netns_python_argv(pod.ctr, UDP_LISTENER, str(LISTEN_PORT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        got = LineReader(proc)
        got.wait_more(0, 1)
        assert got.all() == ["ready"], got.all()
        yield got
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _received(got: LineReader) -> list[str]:
    return [line for line in got.all() if line != "ready"]


def _send_real(src: Pod, dst: Pod, got: LineReader, text: str, *, wait: bool = True) -> bool:
    """An ordinary datagram from ``src`` to ``dst``'s listener; whether it arrived."""
    netns_python(src.ctr, UDP_SEND, dst.ip, str(LISTEN_PORT), text.encode().hex())
    line = f"{src.ip} {text}"
    if wait:
        wait_for(f"{text!r} at {dst.ctr.name}", lambda: line in _received(got), timeout=5)
    else:
        time.sleep(0.3)
    return line in _received(got)


def _crafted(vni: int, src: str, dst: Pod, text: str) -> bytes:
    """A VXLAN datagram's payload: UDP ``src`` -> ``dst``:LISTEN_PORT with ``text``."""
    inner = packets.ipv4(src, dst.ip, packets.udp(40000, LISTEN_PORT, text.encode()))
    frame = packets.ethernet("02:00:00:00:00:02", "02:00:00:00:00:01", packets.ETH_P_IP, inner)
    return packets.vxlan(vni, frame)


def _vxlan_port(lab: Lab, node: str) -> int:
    """The agent's vxlan_port setting: the port of its node's glia_vxlan."""
    return lab.agent_config(node).vxlan_port


def _send_from_namespace(ns: str, ip: str, port: int, payload: bytes) -> None:
    """One datagram to ``ip``:``port`` from an ordinary socket in namespace ``ns``."""
    argv = netns.nsenter_argv(ns, [sys.executable, "-c", UDP_SEND, ip, str(port)])
    subprocess.run([*argv, payload.hex()], check=True, capture_output=True, timeout=30)


def _wait_counted(lab: Lab, node: str, before: dict[tuple[str, str], int], reason: str,
                  direction: str, count: int) -> None:  # fmt: skip
    wait_for(
        f"{count} {reason} {direction} on {node}",
        lambda: metric_delta(before, metrics(lab, node), reason, direction) >= count,
        timeout=10,
    )
    assert metric_delta(before, metrics(lab, node), reason, direction) == count


def test_a_pod_cannot_send_vxlan_to_any_node(lab: Lab, pods: Pods) -> None:
    n1_ip, n2_ip = (str(lab.node(n).ip) for n in (N1, N2))
    before = metrics(lab, N1)
    with listener(pods.t1) as got1, listener(pods.t2) as got2:
        # To its own node: u2 (on c1/n2) "talking" to t1; to the other node: t1 to t2.
        for node_ip, forged_src, dst in ((n1_ip, pods.u2, pods.t1), (n2_ip, pods.t1, pods.t2)):
            crafted = _crafted(forged_src.identity, forged_src.ip, dst, "forged")
            port = _vxlan_port(lab, N1 if node_ip == n1_ip else N2)
            netns_python(pods.a.ctr, UDP_SEND, node_ip, str(port), crafted.hex())
        _wait_counted(lab, N1, before, "DROP_OVERLAY_PORT", "egress", 2)
        assert _send_real(pods.a, pods.t1, got1, "real-1")
        assert _send_real(pods.a, pods.t2, got2, "real-2")
        assert _received(got1) == [f"{pods.a.ip} real-1"]
        assert _received(got2) == [f"{pods.a.ip} real-2"]


def test_a_node_cannot_send_for_another_nodes_pod(lab: Lab, pods: Pods) -> None:
    before = metrics(lab, N2)
    n1, n2_ip = lab.node(N1), str(lab.node(N2).ip)
    with listener(pods.t2) as got:
        crafted = _crafted(pods.u2.identity, pods.u2.ip, pods.t2, "forged")
        _send_from_namespace(n1.netns, n2_ip, _vxlan_port(lab, N2), crafted)
        _wait_counted(lab, N2, before, "DROP_SOURCE_NOT_OF_NODE", "ingress", 1)
        assert _send_real(pods.a, pods.t2, got, "real")
        assert _received(got) == [f"{pods.a.ip} real"]


def test_a_host_that_is_no_node_cannot_send_vxlan(lab: Lab, pods: Pods) -> None:
    before = metrics(lab, N2)
    etcd_ns, n2_ip = lab.topo.cluster("c1").etcd_netns, str(lab.node(N2).ip)
    with listener(pods.t2) as got:
        # The sender claims a pod of c1/n1 (address and identity), as n1 would.
        crafted = _crafted(pods.a.identity, pods.a.ip, pods.t2, "forged")
        _send_from_namespace(etcd_ns, n2_ip, _vxlan_port(lab, N2), crafted)
        _wait_counted(lab, N2, before, "DROP_UNKNOWN_NODE", "ingress", 1)
        assert _send_real(pods.a, pods.t2, got, "real")
        assert _received(got) == [f"{pods.a.ip} real"]
