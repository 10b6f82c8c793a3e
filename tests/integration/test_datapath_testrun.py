"""Datapath tables: one packet in, verdict, packet out, counters and events.

Each case runs from_endpoint or from_overlay once with BPF_PROG_TEST_RUN
against maps in a private pin directory, inside a test network namespace.
Redirects are not carried out by the kernel in a test run; the verdict
(TC_ACT_REDIRECT) and the rewritten packet are what is checked. A test run
gives no tunnel metadata, so the overlay cases run from_overlay through the
tunnel key harness (bpf/test/tunnel_key.bpf.c): a decapsulated packet from a
chosen outer source with a chosen VNI, as glia_vxlan hands it over.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import netns_util as nu
import pytest

from glia.datapath.drop import Direction, Reason
from glia.datapath.events import DropEvent, EventReader
from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo, IPCacheInfo
from glia.datapath.packets import IP_DF, IP_MF, checksum, ipv4, mac, udp
from glia.datapath.testrun import (
    TC_ACT_OK,
    TC_ACT_REDIRECT,
    TC_ACT_SHOT,
    RunResult,
    TunnelKeyHarness,
    run_program,
)
from glia.model.identity import ReservedIdentity

NODE_IP = "198.18.0.1"
REMOTE_NODE_IP = "198.18.0.2"
OTHER_NODE_IP = "198.18.0.3"  # a third node of the cluster
FAR_NODE_IP = "198.18.0.4"  # a node of cluster 2
ROGUE_IP = "198.18.0.99"  # on the underlay, but no node
VXLAN_IFINDEX = 99
VXLAN_PORT = 8472
A = ("10.1.1.5", 10, 0x1012C, "02:00:00:00:0a:01", "02:00:00:00:0a:02")  # ip ifindex id mac node
B = ("10.1.1.6", 11, 0x1012D, "02:00:00:00:0b:01", "02:00:00:00:0b:02")
GONE = "10.1.1.7"  # in the ipcache on this node, but no endpoint
REMOTE_POD = "10.1.2.9"  # on REMOTE_NODE_IP (a /24 entry)
REMOTE_ID = 0x10130
OTHER_POD = "10.1.3.9"  # on OTHER_NODE_IP
FAR_POD, FAR_ID = "10.2.1.9", 0x20130  # on FAR_NODE_IP, cluster 2
WORLD = "203.0.113.5"  # in no ipcache entry
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD


def frame(ethertype: int, l3: bytes, *, dst: str = A[4], src: str = A[3]) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + l3


def arp(spa: str, sha: str = A[3], tpa: str = "10.1.1.1", oper: int = 1) -> bytes:
    """An ARP request (oper 1) or reply (2) for IPv4 over Ethernet, sender ``spa``."""
    head = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, oper)
    return head + mac(sha) + socket.inet_aton(spa) + bytes(6) + socket.inet_aton(tpa)


def routed(packet: bytes, *, dst: str | None = None, src: str | None = None) -> bytes:
    """What a router hop makes of ``packet``: TTL - 1, checksum recomputed, MACs set."""
    ip = bytearray(packet[14:34])
    ip[8] -= 1
    ip[10:12] = b"\0\0"
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    eth = (mac(dst) if dst else packet[0:6]) + (mac(src) if src else packet[6:12]) + packet[12:14]
    return eth + bytes(ip) + packet[34:]


@dataclass(frozen=True)
class Case:
    name: str
    program: str
    packet: bytes
    ingress_ifindex: int
    verdict: int
    reason: Reason
    expect: Callable[[bytes], bytes] | None = None  # packet out, from packet in; None: unchanged
    event: dict[str, object] | None = None  # fields of the expected drop event
    tunnel: tuple[str, int] | None = None  # from_overlay: (outer source, VNI) of the tunnel key


FROM_A = udp(40000, 53)
CASES = [
    Case(
        "local endpoint: TTL-1, gateway MAC -> pod MAC, redirect_peer",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], B[0], FROM_A)),
        A[1],
        TC_ACT_REDIRECT,
        Reason.FORWARDED,
        lambda p: routed(p, dst=B[3], src=B[4]),
    ),
    Case(
        "remote pod: TTL-1, into the VXLAN device, MACs untouched",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], REMOTE_POD, FROM_A)),
        A[1],
        TC_ACT_REDIRECT,
        Reason.FORWARDED,
        routed,
    ),
    Case(
        "node IP: to the stack unchanged",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], NODE_IP, FROM_A)),
        A[1],
        TC_ACT_OK,
        Reason.TO_STACK,
    ),
    Case(
        "ARP: to the stack",
        "from_endpoint",
        frame(ETH_P_ARP, arp(A[0]), dst="ff:ff:ff:ff:ff:ff"),
        A[1],
        TC_ACT_OK,
        Reason.TO_STACK,
    ),
    Case(
        "ARP probe (sender 0.0.0.0, RFC 5227): to the stack",
        "from_endpoint",
        frame(ETH_P_ARP, arp("0.0.0.0", tpa=A[0]), dst="ff:ff:ff:ff:ff:ff"),
        A[1],
        TC_ACT_OK,
        Reason.TO_STACK,
    ),
    Case(
        "ARP for another endpoint's address: spoofed",
        "from_endpoint",
        frame(ETH_P_ARP, arp(B[0], oper=2)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_SOURCE,
    ),
    Case(
        "ARP for an address of no endpoint (the gateway): spoofed",
        "from_endpoint",
        frame(ETH_P_ARP, arp("10.1.1.1", oper=2)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_SOURCE,
    ),
    Case(
        "ARP that is not IPv4 over Ethernet, or truncated",
        "from_endpoint",
        frame(ETH_P_ARP, bytes(28)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_PACKET,
    ),
    Case(
        "IPv6: dropped as unknown L3",
        "from_endpoint",
        frame(ETH_P_IPV6, bytes(40)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_UNKNOWN_L3,
        event={"l3_proto": ETH_P_IPV6, "ifindex": A[1]},
    ),
    Case(
        "source IP of no endpoint: spoofed",
        "from_endpoint",
        frame(ETH_P_IP, ipv4("10.1.1.99", B[0], udp(1111, 2222))),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_SOURCE,
        event={
            "saddr": "10.1.1.99",
            "daddr": B[0],
            "proto": 17,
            "sport": 1111,
            "dport": 2222,
            "ifindex": A[1],
            "direction": "egress",
            "src_identity": 0,
        },
    ),
    Case(
        "source IP of another endpoint's veth: spoofed",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], REMOTE_POD, FROM_A)),
        B[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_SOURCE,
        event={"saddr": A[0], "daddr": REMOTE_POD, "ifindex": B[1]},
    ),
    Case(
        # (A truncated header cannot be tested here: the kernel refuses to test-run
        # an IPv4 frame shorter than an IPv4 header.)
        "IP version other than 4 in an IPv4 frame",
        "from_endpoint",
        frame(ETH_P_IP, bytes([0x65]) + ipv4(A[0], B[0], FROM_A)[1:]),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_PACKET,
    ),
    Case(
        "IHL below 5",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], B[0], FROM_A, ihl=4)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_INVALID_PACKET,
    ),
    Case(
        "TTL 1 towards a local endpoint",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], B[0], FROM_A, ttl=1)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_TTL_EXCEEDED,
        event={"src_identity": A[2], "dst_identity": B[2]},
    ),
    Case(
        "ipcache places the IP on this node but no endpoint has it",
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], GONE, FROM_A)),
        A[1],
        TC_ACT_SHOT,
        Reason.DROP_NO_ENDPOINT,
        event={"daddr": GONE, "src_identity": A[2], "dst_identity": 0x10199},
    ),
    Case(
        "overlay without tunnel metadata",
        "from_overlay",
        frame(ETH_P_IP, ipv4(REMOTE_POD, B[0], FROM_A)),
        VXLAN_IFINDEX,
        TC_ACT_SHOT,
        Reason.DROP_INVALID_PACKET,
        event={"direction": "ingress", "saddr": REMOTE_POD},
    ),
    Case(
        "overlay: ARP is not carried",
        "from_overlay",
        frame(ETH_P_ARP, bytes(28)),
        VXLAN_IFINDEX,
        TC_ACT_SHOT,
        Reason.DROP_UNKNOWN_L3,
        event={"direction": "ingress"},
    ),
]


# --- the overlay accepts packets from nodes of the mesh only (overlay.h) ---------


def from_node(
    name: str,
    outer: str,
    vni: int,
    src: str,
    reason: Reason,
    event: dict[str, object] | None = None,
) -> Case:
    """A decapsulated UDP packet ``src`` -> B, sent by ``outer`` with ``vni``."""
    delivered = reason == Reason.FORWARDED
    return Case(
        name,
        "from_overlay",
        frame(ETH_P_IP, ipv4(src, B[0], udp(40000, 53))),
        VXLAN_IFINDEX,
        TC_ACT_REDIRECT if delivered else TC_ACT_SHOT,
        reason,
        (lambda p: routed(p, dst=B[3], src=B[4])) if delivered else None,
        None if delivered else {"tunnel_src": outer, "src_identity": vni, **(event or {})},
        tunnel=(outer, vni),
    )


_INIT, _HOST = int(ReservedIdentity.INIT), int(ReservedIdentity.HOST)
_NODE = int(ReservedIdentity.REMOTE_NODE)
_WORLD = int(ReservedIdentity.WORLD)  # no ipcache entry
_UNKNOWN_NODE, _NOT_OF_NODE = Reason.DROP_UNKNOWN_NODE, Reason.DROP_SOURCE_NOT_OF_NODE
_BAD_ID = Reason.DROP_IDENTITY_NOT_OF_NODE
OVERLAY_CASES = [
    from_node("overlay: a node's own pod: delivered", REMOTE_NODE_IP, REMOTE_ID, REMOTE_POD,
              Reason.FORWARDED),
    from_node("overlay: a node's pod still in init: delivered", REMOTE_NODE_IP, _INIT, REMOTE_POD,
              Reason.FORWARDED),
    from_node("overlay: a node of another cluster, its pod and identity: delivered",
              FAR_NODE_IP, FAR_ID, FAR_POD, Reason.FORWARDED),
    from_node("overlay: outer source on the underlay but no node", ROGUE_IP, REMOTE_ID,
              REMOTE_POD, _UNKNOWN_NODE, {"saddr": REMOTE_POD, "daddr": B[0], "dst_identity": 0}),
    from_node("overlay: outer source is a pod (its datagram reached the VXLAN socket)", A[0],
              REMOTE_ID, REMOTE_POD, _UNKNOWN_NODE),
    from_node("overlay: outer source is this node itself", NODE_IP, REMOTE_ID, REMOTE_POD,
              _UNKNOWN_NODE),
    from_node("overlay: a node sends for another node's pod", REMOTE_NODE_IP, REMOTE_ID,
              OTHER_POD, _NOT_OF_NODE, {"saddr": OTHER_POD}),
    from_node("overlay: a node sends for a pod of this node", REMOTE_NODE_IP, A[2], A[0],
              _NOT_OF_NODE),
    from_node("overlay: a node sends from an address the ipcache does not know",
              REMOTE_NODE_IP, REMOTE_ID, WORLD, _NOT_OF_NODE),
    from_node("overlay: a node sends from its own node IP (never tunnelled)", REMOTE_NODE_IP,
              _NODE, REMOTE_NODE_IP, _NOT_OF_NODE),
    from_node("overlay: a node sends from another node's IP", REMOTE_NODE_IP, _NODE,
              OTHER_NODE_IP, _NOT_OF_NODE),
    from_node("overlay: an identity of another cluster", REMOTE_NODE_IP, FAR_ID, REMOTE_POD,
              _BAD_ID),
    from_node("overlay: a cluster-2 node claims a cluster-1 identity", FAR_NODE_IP, REMOTE_ID,
              FAR_POD, _BAD_ID),
    from_node("overlay: a cluster's reserved index (below 256)", REMOTE_NODE_IP, 0x10005,
              REMOTE_POD, _BAD_ID),
    *(
        from_node(f"overlay: reserved identity {ident.name.lower()} in the VNI", REMOTE_NODE_IP,
                  int(ident), REMOTE_POD, _BAD_ID)
        for ident in ReservedIdentity
        if ident != ReservedIdentity.INIT
    ),
]  # fmt: skip


def to_node(
    name: str,
    dst: str,
    l4: bytes,
    reason: Reason,
    *,
    proto: int = 17,
    frag: int = IP_DF,
    dst_identity: int = 0,
) -> Case:
    """UDP (or ``proto``) from pod A to ``dst``."""
    verdicts = {Reason.TO_STACK: TC_ACT_OK, Reason.FORWARDED: TC_ACT_REDIRECT}
    expect = {REMOTE_POD: routed, B[0]: lambda p: routed(p, dst=B[3], src=B[4])}.get(dst)
    event = None
    if reason.is_drop:
        event = {"daddr": dst, "dport": VXLAN_PORT, "src_identity": A[2]}
        event |= {"dst_identity": dst_identity, "direction": "egress", "ifindex": A[1]}
    return Case(
        name,
        "from_endpoint",
        frame(ETH_P_IP, ipv4(A[0], dst, l4, proto=proto, frag=frag)),
        A[1],
        verdicts.get(reason, TC_ACT_SHOT),
        reason,
        expect,
        event,
    )


_PORT = Reason.DROP_OVERLAY_PORT
PORT_CASES = [
    to_node("pod to its node's VXLAN port", NODE_IP, udp(40000, VXLAN_PORT), _PORT,
            dst_identity=_HOST),
    to_node("pod to another node's VXLAN port", REMOTE_NODE_IP, udp(40000, VXLAN_PORT), _PORT,
            dst_identity=_NODE),
    to_node("pod to the VXLAN port outside the mesh", WORLD, udp(40000, VXLAN_PORT), _PORT,
            dst_identity=_WORLD),
    to_node("pod to the VXLAN port on the underlay broadcast", "198.19.255.255",
            udp(40000, VXLAN_PORT), _PORT, dst_identity=_WORLD),
    to_node("pod to its node, another UDP port", NODE_IP, udp(40000, 53), Reason.TO_STACK),
    to_node("pod to another node, another UDP port", REMOTE_NODE_IP, udp(40000, 4789),
            Reason.TO_STACK),
    to_node("pod to its node, TCP to the VXLAN port number", NODE_IP,
            struct.pack("!HHIIBBHHH", 40000, VXLAN_PORT, 1, 0, 0x50, 0x02, 64240, 0, 0),
            Reason.TO_STACK, proto=6),
    to_node("pod to its node, a later fragment (no port in it)", NODE_IP,
            udp(40000, VXLAN_PORT), Reason.TO_STACK, frag=IP_MF | 185),
    to_node("pod to a pod on another node, UDP to the VXLAN port number: tunnelled",
            REMOTE_POD, udp(40000, VXLAN_PORT), Reason.FORWARDED),
    to_node("pod to a pod on this node, UDP to the VXLAN port number: delivered", B[0],
            udp(40000, VXLAN_PORT), Reason.FORWARDED),
]  # fmt: skip
CASES += OVERLAY_CASES + PORT_CASES


@dataclass
class Rig:
    dp: Datapath
    events: EventReader
    ns: str
    overlay: TunnelKeyHarness

    def run(self, case: Case) -> RunResult:
        if case.tunnel is None:
            prog = self.dp.prog_fd(case.program)
            return nu.call_in(
                self.ns, run_program, prog, case.packet, ingress_ifindex=case.ingress_ifindex
            )
        outer, vni = case.tunnel
        return nu.call_in(
            self.ns,
            self.overlay.run,
            case.packet,
            outer_src=outer,
            vni=vni,
            outer_dst=NODE_IP,
            ingress_ifindex=case.ingress_ifindex,
        )


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    nu.require_bpffs()
    nu.cleanup_stale()
    ns = f"{nu.prefix()}-run"
    dp = Datapath(nu.pin_dir("testrun"), nu.bpf_objects())
    events: EventReader | None = None
    overlay: TunnelKeyHarness | None = None
    try:
        nu.add_netns(ns)
        dp.load()
        dp.configure(
            node_ip=NODE_IP, vxlan_ifindex=VXLAN_IFINDEX, cluster_id=1, vxlan_port=VXLAN_PORT
        )
        for ip, ifindex, identity, pod_mac, node_mac in (A, B):
            dp.endpoints.upsert(ip, EndpointInfo(ifindex, identity, pod_mac, node_mac))
        # As glia.agent.ipcache.plan_ipcache makes it: node IPs without a tunnel
        # endpoint (this node host, the others remote-node), pods at their node.
        dp.ipcache.upsert_many(
            {
                NODE_IP: IPCacheInfo(_HOST, None, 1),
                REMOTE_NODE_IP: IPCacheInfo(_NODE, None, 1),
                OTHER_NODE_IP: IPCacheInfo(_NODE, None, 1),
                FAR_NODE_IP: IPCacheInfo(_NODE, None, 2),
                "10.1.2.0/24": IPCacheInfo(REMOTE_ID, REMOTE_NODE_IP, 1),
                OTHER_POD: IPCacheInfo(0x10131, OTHER_NODE_IP, 1),
                FAR_POD: IPCacheInfo(FAR_ID, FAR_NODE_IP, 2),
                GONE: IPCacheInfo(0x10199, NODE_IP, 1),
                A[0]: IPCacheInfo(A[2], NODE_IP, 1),
            }
        )
        events = EventReader(dp.pin_dir)
        overlay = TunnelKeyHarness(nu.bpf_objects(), dp.prog_fd("from_overlay"))
        yield Rig(dp, events, ns, overlay)
    finally:
        if overlay is not None:
            overlay.close()
        if events is not None:
            events.close()
        dp.close()
        unpin(dp.pin_dir)
        nu.del_netns(ns)


def _counters(dp: Datapath) -> dict[tuple[Reason, str], int]:
    return {(row.reason, row.direction): row.packets for row in dp.metrics.read()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_datapath_table(rig: Rig, case: Case) -> None:
    rig.events.poll()  # drain
    before = _counters(rig.dp)
    result = rig.run(case)

    assert result.retval == case.verdict
    expected = case.expect(case.packet) if case.expect else case.packet
    assert result.packet.hex() == expected.hex()

    after = _counters(rig.dp)
    direction = "egress" if case.program == "from_endpoint" else "ingress"
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert changed == {(case.reason, direction): 1}

    drops = nu.collect_events(rig.events, lambda evs: bool(evs), timeout=2) if case.event else []
    drops += rig.events.poll()
    if not case.reason.is_drop:
        assert drops == []
        return
    assert [ev.reason for ev in drops] == [case.reason]
    ev: DropEvent = drops[0]
    assert ev.length == len(case.packet)
    for name, value in (case.event or {}).items():
        assert getattr(ev, name) == value, name


def test_forwarded_checksum_is_valid(rig: Rig) -> None:
    packet = frame(ETH_P_IP, ipv4(A[0], B[0], FROM_A, ttl=200))
    out = nu.call_in(
        rig.ns, run_program, rig.dp.prog_fd("from_endpoint"), packet, ingress_ifindex=A[1]
    ).packet
    assert out[22] == 199
    assert checksum(out[14:34]) == 0


def test_metrics_count_bytes(rig: Rig) -> None:
    packet = frame(ETH_P_IP, ipv4(A[0], NODE_IP, udp(1, 2, b"x" * 100)))
    packets, nbytes = rig.dp.metrics.get(Reason.TO_STACK, Direction.EGRESS)
    nu.call_in(rig.ns, run_program, rig.dp.prog_fd("from_endpoint"), packet, ingress_ifindex=A[1])
    assert rig.dp.metrics.get(Reason.TO_STACK, Direction.EGRESS) == (
        packets + 1,
        nbytes + len(packet),
    )
