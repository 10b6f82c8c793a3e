"""Host ports in eBPF with real traffic: a client outside the node reaches a pod
through NODE_IP:HOST_PORT.

Harness: an underlay namespace with a bridge; a client namespace and a node
namespace on it (the node's eth0 holds the node IP and runs from_netdev);
one backend pod plumbed into the node as the agent does, running the Python
server of test_datapath_lb_traffic. The node's forwarding is on (the FIB
lookup of the replies asks as if they came in on the pod's veth); the node
has no NAT rule and no portmap: the DNAT and its reverse are the datapath's.
The lb4 maps are written directly (planning host ports is the control
plane's part).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import netns_util as nu
import pytest
from test_datapath_lb_traffic import _CLIENT, _SERVER

from glia.datapath.ct import CT_F_HOSTPORT, ct_entries
from glia.datapath.drop import Direction, Reason
from glia.datapath.lbtypes import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    LB_F_HOSTPORT,
    BackendAddr,
    Frontend,
    MapChanges,
    MapContents,
    RevNat,
    ServiceEntry,
)
from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo, IPCacheInfo
from glia.model import make_cluster_identity

NODE_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
POD_IP = "10.1.1.6"
GATEWAY = "10.1.1.1"
POD_MTU = 1450
TCP_TARGET, UDP_TARGET = 8080, 5353  # where the server listens in the pod
TCP_HOSTPORT, UDP_HOSTPORT = 18080, 15353


@dataclass
class Rig:
    dp: Datapath
    client_ns: str
    node_ns: str
    pod_ns: str
    namespaces: list[str] = field(default_factory=list)

    def client(self, mode: str, port: int, n: int = 1) -> dict[str, Any]:
        argv = nu.in_pod(self.client_ns, sys.executable, "-c", _CLIENT, mode, NODE_IP, str(port))
        done = nu.run([*argv, str(n)], check=False, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"client {mode} failed: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result


def _ifindex(ns: str, dev: str) -> int:
    return int(json.loads(nu.run(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)[0]["ifindex"])


def _host_ports() -> MapChanges:
    return MapChanges(
        upsert=MapContents(
            services={
                Frontend(NODE_IP, TCP_HOSTPORT, IPPROTO_TCP): ServiceEntry(1, 1, LB_F_HOSTPORT, 0),
                Frontend(NODE_IP, UDP_HOSTPORT, IPPROTO_UDP): ServiceEntry(2, 1, LB_F_HOSTPORT, 0),
            },
            slots={(1, 0): 1, (2, 0): 2},
            backends={
                1: BackendAddr(POD_IP, TCP_TARGET, IPPROTO_TCP),
                2: BackendAddr(POD_IP, UDP_TARGET, IPPROTO_UDP),
            },
            revnat={1: RevNat(NODE_IP, TCP_HOSTPORT), 2: RevNat(NODE_IP, UDP_HOSTPORT)},
        )
    )


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    nu.require_bpffs()
    nu.cleanup_stale()
    underlay = f"{nu.prefix()}-hpu"
    client_ns, node_ns, pod_ns = (f"{nu.prefix()}-{n}" for n in ("hpcl", "hpnd", "hppod"))
    dp = Datapath(nu.pin_dir("hptraffic"), nu.bpf_objects())
    rig = Rig(dp, client_ns, node_ns, pod_ns, [underlay, client_ns, node_ns, pod_ns])
    server: subprocess.Popen[str] | None = None
    try:
        nu.add_underlay(underlay)
        nu.plumb_host(underlay, client_ns, "hpcl", CLIENT_IP)
        nu.plumb_host(underlay, node_ns, "hpnd", NODE_IP)
        nu.run(nu.in_node(node_ns, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"))
        veth = nu.plumb_pod(node_ns, pod_ns, POD_IP, GATEWAY, POD_MTU)
        identity = make_cluster_identity(1, 500)
        dp.load()
        dp.configure(node_ip=NODE_IP, vxlan_ifindex=0, cluster_id=1, vxlan_port=0)
        dp.endpoints.upsert(
            POD_IP, EndpointInfo(veth.host_ifindex, identity, veth.container_mac, veth.host_mac)
        )
        dp.ipcache.upsert(f"{POD_IP}/32", IPCacheInfo(identity, None, 1))
        nu.call_in(node_ns, dp.attach_endpoint, veth.host_ifindex)
        nu.call_in(node_ns, dp.attach_netdev, _ifindex(node_ns, "eth0"))
        dp.lb.apply(_host_ports())
        server = subprocess.Popen(
            nu.in_pod(
                pod_ns, sys.executable, "-c", _SERVER, "pod", str(TCP_TARGET), str(UDP_TARGET)
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None and server.stderr is not None
        if server.stdout.readline().strip() != "ready":
            raise AssertionError(f"server did not start: {server.stderr.read()}")
        yield rig
    finally:
        if server is not None:
            if server.poll() is None:
                server.kill()
            server.wait(timeout=5)
        dp.close()
        for ns in reversed(rig.namespaces):
            nu.del_netns(ns)
        unpin(dp.pin_dir)


def test_tcp_to_the_host_port_reaches_the_pod(rig: Rig) -> None:
    out = rig.client("tcp-peer", TCP_HOSTPORT)
    assert out == {"name": "pod", "peer": [NODE_IP, TCP_HOSTPORT]}
    assert rig.client("tcp", TCP_HOSTPORT, 5) == {"pod": 5}
    ingress = [
        r
        for r in ct_entries(rig.dp)
        if r.kind == "ingress" and (r.src, r.dst, r.dport) == (CLIENT_IP, POD_IP, TCP_TARGET)
    ]
    assert ingress and all(r.flags & CT_F_HOSTPORT for r in ingress)
    # The replies left by the FIB redirect, not by the node's stack.
    assert rig.dp.metrics.get(Reason.FORWARDED, Direction.EGRESS)[0] > 0


def test_udp_answers_come_from_the_host_port(rig: Rig) -> None:
    out = rig.client("udp-unconnected", UDP_HOSTPORT, 3)
    assert out == {f"pod@{NODE_IP}:{UDP_HOSTPORT}": 3}
    assert rig.client("udp", UDP_HOSTPORT, 2) == {"pod": 2}  # connected: other sources discarded


def test_other_ports_of_the_node_are_not_served(rig: Rig) -> None:
    out = rig.client("tcp-refused", TCP_TARGET)  # the container port itself: the node's, closed
    assert out["error"] == "ECONNREFUSED"
