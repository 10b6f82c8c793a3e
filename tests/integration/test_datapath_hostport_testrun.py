"""Host ports in eBPF, one packet at a time (BPF_PROG_TEST_RUN).

from_netdev (the node's underlay device) on crafted packets from clients
outside the node: a GLIA_LB_F_HOSTPORT frontend is DNATed to its local
backend and delivered (SERVICE, REPLY and a HOSTPORT-marked INGRESS conntrack
entry), judged by the backend's ingress policy with the client's ipcache
identity; other frontends, unrelated traffic and non-IPv4 pass untouched and
uncounted; no ready backend drops. from_endpoint then reverse-NATs the
backend's replies (source = the host port's address) and sends them out by
the FIB (bpf_fib_lookup + bpf_redirect_neigh: the test namespace has a real
underlay device and route, so the lookup answers; the redirect itself is not
carried out by a test run, only its verdict returned) or into the tunnel.

The lb4 maps are written directly (glia.datapath.lbmaps): planning host port
frontends is the control plane's part.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import netns_util as nu
import pytest
from test_datapath_lb_testrun import TCP_ACK, TCP_SYN, frame, mac, parse, tcp, udp

from glia.datapath.ct import CT_F_HOSTPORT, CTRow, ct_entries
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
from glia.datapath.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, RunResult, run_program
from glia.policy.entries import Action, EndpointPolicy, PolicyKey, PolicyValue
from glia.policy.model import Direction as PolicyDirection

NODE_IP = "198.18.0.1"
REMOTE_NODE_IP = "198.18.0.2"
VXLAN_IFINDEX = 99
VXLAN_PORT = 8472
CLIENT_IP = "198.18.0.50"  # on the underlay's subnet: the FIB answers for it
CLIENT_ID = 6  # remote-node, as the ipcache says
WORLD_IP = "203.0.113.9"  # no ipcache entry (world), no route in the namespace
REMOTE_POD = "10.1.2.9"  # a pod of another node (ipcache: tunnel endpoint)
BACKEND_ID = 0x1012D
BACKEND_IP = "10.1.1.6"
BACKEND_MAC, BACKEND_GW_MAC = "02:00:00:00:0b:01", "02:00:00:00:0b:02"
CLUSTERIP = "10.96.0.10"
NODE_MAC, CLIENT_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02"
HTTP = 8080  # host port -> BACKEND_IP:80
DNS = 5353  # host port -> BACKEND_IP:53/udp
EMPTY = 8081  # host port without a ready backend
ELSEWHERE = 8082  # host port whose backend is no local endpoint (maps gone wrong)


def from_client(l3: bytes) -> bytes:
    """As the underlay delivers it: to the node's MAC."""
    return mac(NODE_MAC) + mac(CLIENT_MAC) + b"\x08\x00" + l3


def from_backend(l3: bytes) -> bytes:
    return frame(l3, (BACKEND_IP, 0, 0, BACKEND_MAC, BACKEND_GW_MAC))


def lb_changes() -> MapChanges:
    svc: dict[Frontend, ServiceEntry] = {
        Frontend(NODE_IP, HTTP, IPPROTO_TCP): ServiceEntry(1, 1, LB_F_HOSTPORT, 0),
        Frontend(NODE_IP, DNS, IPPROTO_UDP): ServiceEntry(2, 1, LB_F_HOSTPORT, 0),
        Frontend(NODE_IP, EMPTY, IPPROTO_TCP): ServiceEntry(3, 0, LB_F_HOSTPORT, 0),
        Frontend(NODE_IP, ELSEWHERE, IPPROTO_TCP): ServiceEntry(4, 1, LB_F_HOSTPORT, 0),
        # Not a host port: a ClusterIP, and one that happens to use the node's address.
        Frontend(CLUSTERIP, 80, IPPROTO_TCP): ServiceEntry(5, 1, 0, 0),
        Frontend(NODE_IP, 9090, IPPROTO_TCP): ServiceEntry(6, 1, 0, 0),
    }
    backends = {
        1: BackendAddr(BACKEND_IP, 80, IPPROTO_TCP),
        2: BackendAddr(BACKEND_IP, 53, IPPROTO_UDP),
        3: BackendAddr("10.1.2.77", 80, IPPROTO_TCP),
    }
    slots = {(1, 0): 1, (2, 0): 2, (4, 0): 3, (5, 0): 1, (6, 0): 1}
    revnat = {e.svc_id: RevNat(f.vip, f.port) for f, e in svc.items()}
    return MapChanges(
        upsert=MapContents(services=svc, slots=slots, backends=backends, revnat=revnat)
    )


@dataclass
class Rig:
    dp: Datapath
    ns: str
    underlay: int  # ifindex of the node's underlay device in ns
    backend_veth: int  # ifindex of the backend's host-side veth in ns
    policy: EndpointPolicy | None = None  # what the policy map holds for the backend

    def netdev(self, packet: bytes) -> RunResult:
        return nu.call_in(
            self.ns,
            run_program,
            self.dp.prog_fd("from_netdev"),
            packet,
            ingress_ifindex=self.underlay,
            ifindex=self.underlay,
        )

    def reply(self, packet: bytes) -> RunResult:
        return nu.call_in(
            self.ns,
            run_program,
            self.dp.prog_fd("from_endpoint"),
            packet,
            ingress_ifindex=self.backend_veth,
            ifindex=self.backend_veth,
        )

    def counters(self) -> dict[tuple[Reason, str], int]:
        return {(r.reason, r.direction): r.packets for r in self.dp.metrics.read()}

    def ct(self) -> dict[tuple[str, str, int, str, int], CTRow]:
        return {(r.kind, r.src, r.sport, r.dst, r.dport): r for r in ct_entries(self.dp)}

    def deny_all_but(self, *identities: int) -> None:
        """The backend's ingress: default deny, allowed from ``identities`` only."""
        entries = {
            PolicyKey(PolicyDirection.INGRESS, i, 0, 0, 65535): PolicyValue(Action.ALLOW)
            for i in identities
        }
        self.set_policy(EndpointPolicy(True, False, entries))

    def set_policy(self, new: EndpointPolicy | None) -> None:
        self.dp.policy.apply(BACKEND_ID, self.policy, new)
        self.policy = new


def _ifindex(ns: str, dev: str) -> int:
    return int(json.loads(nu.run(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)[0]["ifindex"])


@pytest.fixture(scope="module")
def module_rig() -> Iterator[Rig]:
    nu.require_bpffs()
    nu.cleanup_stale()
    ns = f"{nu.prefix()}-hprun"
    dp = Datapath(nu.pin_dir("hprun"), nu.bpf_objects())
    try:
        nu.add_netns(ns)
        # The node as the FIB sees it: its underlay device with the node IP,
        # the backend's host-side veth, forwarding on (bpf_fib_lookup asks
        # as if the reply came in on the veth).
        # (a veth pair: this kernel has no dummy devices)
        nu.run(["ip", "-n", ns, "link", "add", "gliahpu", "type", "veth", "peer", "gliahpup"])
        nu.run(["ip", "-n", ns, "addr", "add", f"{NODE_IP}/24", "dev", "gliahpu"])
        nu.run(["ip", "-n", ns, "link", "add", "gliahpv0", "type", "veth", "peer", "gliahpv1"])
        for dev in ("gliahpu", "gliahpup", "gliahpv0", "gliahpv1"):
            nu.run(["ip", "-n", ns, "link", "set", dev, "up"])
        nu.run(nu.in_node(ns, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"))
        underlay, veth = _ifindex(ns, "gliahpu"), _ifindex(ns, "gliahpv0")
        dp.load()
        dp.configure(
            node_ip=NODE_IP, vxlan_ifindex=VXLAN_IFINDEX, cluster_id=1, vxlan_port=VXLAN_PORT
        )
        dp.endpoints.upsert(BACKEND_IP, EndpointInfo(veth, BACKEND_ID, BACKEND_MAC, BACKEND_GW_MAC))
        dp.ipcache.upsert(f"{CLIENT_IP}/32", IPCacheInfo(CLIENT_ID, None, 1))
        dp.ipcache.upsert("10.1.2.0/24", IPCacheInfo(0x10200, REMOTE_NODE_IP, 1))
        dp.lb.apply(lb_changes())
        yield Rig(dp, ns, underlay, veth)
    finally:
        dp.close()
        unpin(dp.pin_dir)
        nu.del_netns(ns)


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.dp.ct.flush()
    yield module_rig
    module_rig.dp.ct.flush()
    module_rig.set_policy(None)


# --- from_netdev ----------------------------------------------------------------


def test_a_host_port_is_dnated_to_its_local_backend_and_delivered(rig: Rig) -> None:
    before = rig.counters()
    packet = from_client(tcp(CLIENT_IP, NODE_IP, 40001, HTTP, TCP_SYN, seq=77))
    result = rig.netdev(packet)
    assert result.retval == TC_ACT_REDIRECT  # redirect_peer into the backend's pod
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (CLIENT_IP, 40001, BACKEND_IP, 80)
    assert out.ttl == 63
    assert result.packet[:12] == mac(BACKEND_MAC) + mac(BACKEND_GW_MAC)
    assert out.l4[4:16] == parse(packet).l4[4:16]  # seq, ack, flags untouched
    forwarded = (Reason.FORWARDED, "ingress")
    assert rig.counters()[forwarded] == before.get(forwarded, 0) + 1

    ct = rig.ct()
    svc = ct["service", CLIENT_IP, 40001, NODE_IP, HTTP]
    assert (svc.nat_addr, svc.nat_port, svc.svc_id) == (BACKEND_IP, 80, 1)
    reply = ct["reply", BACKEND_IP, 80, CLIENT_IP, 40001]
    assert (reply.nat_addr, reply.nat_port, reply.svc_id) == (NODE_IP, HTTP, 1)
    ingress = ct["ingress", CLIENT_IP, 40001, BACKEND_IP, 80]
    assert ingress.flags & CT_F_HOSTPORT
    assert ingress.to_dict()["hostport"] is True
    assert not svc.flags & CT_F_HOSTPORT and not reply.flags & CT_F_HOSTPORT

    # The connection's next packet follows its entry.
    again = rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40001, HTTP, TCP_ACK, seq=78)))
    assert again.retval == TC_ACT_REDIRECT
    assert parse(again.packet).dst == BACKEND_IP


def test_a_udp_host_port_is_dnated_too(rig: Rig) -> None:
    result = rig.netdev(from_client(udp(CLIENT_IP, NODE_IP, 40002, DNS)))
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.proto, out.dst, out.dport, out.l4[8:]) == (IPPROTO_UDP, BACKEND_IP, 53, b"query")
    ct = rig.ct()
    assert ct["ingress", CLIENT_IP, 40002, BACKEND_IP, 53].flags & CT_F_HOSTPORT
    assert ct["reply", BACKEND_IP, 53, CLIENT_IP, 40002].nat_port == DNS


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(from_client(tcp(CLIENT_IP, CLUSTERIP, 40003, 80, TCP_SYN)), id="clusterip"),
        pytest.param(
            from_client(tcp(CLIENT_IP, NODE_IP, 40003, 9090, TCP_SYN)), id="not-a-host-port"
        ),
        pytest.param(from_client(tcp(CLIENT_IP, NODE_IP, 40003, 22, TCP_SYN)), id="no-frontend"),
        pytest.param(from_client(udp(CLIENT_IP, NODE_IP, 40003, HTTP)), id="other-protocol"),
        pytest.param(from_client(udp(REMOTE_NODE_IP, NODE_IP, 40003, VXLAN_PORT)), id="vxlan"),
        pytest.param(mac(NODE_MAC) + mac(CLIENT_MAC) + b"\x08\x06" + bytes(28), id="arp"),
        pytest.param(mac(NODE_MAC) + mac(CLIENT_MAC) + b"\x86\xdd" + bytes(40), id="ipv6"),
        pytest.param(
            from_client(tcp(CLIENT_IP, NODE_IP, 40003, HTTP, TCP_SYN))[:34], id="no-l4-header"
        ),
    ],
)
def test_everything_else_passes_untouched_and_uncounted(rig: Rig, packet: bytes) -> None:
    before = rig.counters()
    result = rig.netdev(packet)
    assert result.retval == TC_ACT_OK
    assert result.packet == packet
    assert rig.counters() == before
    assert rig.ct() == {}


def test_an_icmp_packet_to_the_node_passes(rig: Rig) -> None:
    from test_datapath_lb_testrun import ipv4

    packet = from_client(ipv4(CLIENT_IP, NODE_IP, 1, bytes([8, 0, 0xF7, 0xFF, 0, 0, 0, 0])))
    result = rig.netdev(packet)
    assert (result.retval, result.packet) == (TC_ACT_OK, packet)


def test_no_ready_backend_drops(rig: Rig) -> None:
    before = rig.dp.metrics.get(Reason.DROP_NO_SERVICE, Direction.INGRESS)[0]
    result = rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40004, EMPTY, TCP_SYN)))
    assert result.retval == TC_ACT_SHOT
    assert rig.dp.metrics.get(Reason.DROP_NO_SERVICE, Direction.INGRESS)[0] == before + 1
    assert rig.ct() == {}


def test_a_backend_that_is_no_local_endpoint_drops(rig: Rig) -> None:
    before = rig.dp.metrics.get(Reason.DROP_NO_ENDPOINT, Direction.INGRESS)[0]
    result = rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40005, ELSEWHERE, TCP_SYN)))
    assert result.retval == TC_ACT_SHOT
    assert rig.dp.metrics.get(Reason.DROP_NO_ENDPOINT, Direction.INGRESS)[0] == before + 1


def test_ingress_policy_judges_the_clients_identity(rig: Rig) -> None:
    rig.deny_all_but(CLIENT_ID)  # remote-node allowed; world is not
    before = rig.dp.metrics.get(Reason.DROP_POLICY, Direction.INGRESS)[0]
    denied = rig.netdev(from_client(tcp(WORLD_IP, NODE_IP, 40006, HTTP, TCP_SYN)))
    assert denied.retval == TC_ACT_SHOT
    assert rig.dp.metrics.get(Reason.DROP_POLICY, Direction.INGRESS)[0] == before + 1
    assert ("ingress", WORLD_IP, 40006, BACKEND_IP, 80) not in rig.ct()

    allowed = rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40006, HTTP, TCP_SYN)))
    assert allowed.retval == TC_ACT_REDIRECT

    rig.deny_all_but()  # nobody
    again = rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40007, HTTP, TCP_SYN)))
    assert again.retval == TC_ACT_SHOT


# --- replies, from_endpoint -------------------------------------------------------


def test_replies_get_the_host_port_back_and_go_out_by_the_fib(rig: Rig) -> None:
    assert rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40010, HTTP, TCP_SYN))).retval == (
        TC_ACT_REDIRECT
    )
    before = rig.counters()
    reply = from_backend(tcp(BACKEND_IP, CLIENT_IP, 80, 40010, TCP_SYN | TCP_ACK, ack=1001))
    result = rig.reply(reply)
    # The FIB knows the client (connected route on the underlay device), so
    # the reply is redirected there (bpf_redirect_neigh: the test run only
    # returns the verdict; the MACs are filled when the kernel sends it).
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (NODE_IP, HTTP, CLIENT_IP, 40010)
    assert out.ttl == 63
    assert out.l4[4:16] == parse(reply).l4[4:16]
    forwarded = (Reason.FORWARDED, "egress")
    assert rig.counters()[forwarded] == before.get(forwarded, 0) + 1
    assert rig.counters().get((Reason.TO_STACK, "egress"), 0) == before.get(
        (Reason.TO_STACK, "egress"), 0
    )


def test_udp_replies_come_from_the_host_port(rig: Rig) -> None:
    assert rig.netdev(from_client(udp(CLIENT_IP, NODE_IP, 40011, DNS))).retval == TC_ACT_REDIRECT
    result = rig.reply(from_backend(udp(BACKEND_IP, CLIENT_IP, 53, 40011, b"answer")))
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (NODE_IP, DNS, CLIENT_IP, 40011)
    assert out.l4[8:] == b"answer"


def test_a_reply_without_a_route_goes_to_the_stack_rewritten(rig: Rig) -> None:
    assert rig.netdev(from_client(tcp(WORLD_IP, NODE_IP, 40012, HTTP, TCP_SYN))).retval == (
        TC_ACT_REDIRECT
    )
    result = rig.reply(from_backend(tcp(BACKEND_IP, WORLD_IP, 80, 40012, TCP_SYN | TCP_ACK)))
    assert result.retval == TC_ACT_OK  # the FIB has no answer: the stack's to route
    out = parse(result.packet)
    assert (out.src, out.sport) == (NODE_IP, HTTP)


def test_a_reply_to_a_pod_of_another_node_goes_into_the_tunnel(rig: Rig) -> None:
    assert rig.netdev(from_client(tcp(REMOTE_POD, NODE_IP, 40013, HTTP, TCP_SYN))).retval == (
        TC_ACT_REDIRECT
    )
    result = rig.reply(from_backend(tcp(BACKEND_IP, REMOTE_POD, 80, 40013, TCP_SYN | TCP_ACK)))
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (NODE_IP, HTTP, REMOTE_POD, 40013)
    assert rig.dp.metrics.get(Reason.FORWARDED, Direction.EGRESS)[0] > 0


def test_replies_of_other_connections_are_left_alone(rig: Rig) -> None:
    # A connection to the pod's own address (the node's stack delivered it:
    # to_endpoint keeps its INGRESS entry, without the host port flag).
    syn = from_client(tcp(CLIENT_IP, BACKEND_IP, 40014, 80, TCP_SYN))
    delivered = nu.call_in(
        rig.ns, run_program, rig.dp.prog_fd("to_endpoint"), syn, ifindex=rig.backend_veth
    )
    assert delivered.retval == TC_ACT_OK
    entry = rig.ct()["ingress", CLIENT_IP, 40014, BACKEND_IP, 80]
    assert not entry.flags & CT_F_HOSTPORT
    # A host port connection from another port of the same client.
    assert rig.netdev(from_client(tcp(CLIENT_IP, NODE_IP, 40015, HTTP, TCP_SYN))).retval == (
        TC_ACT_REDIRECT
    )
    reply = from_backend(tcp(BACKEND_IP, CLIENT_IP, 80, 40014, TCP_SYN | TCP_ACK))
    result = rig.reply(reply)
    assert result.retval == TC_ACT_OK  # to the stack, as before host ports in eBPF
    assert result.packet == reply
