"""Service load-balancing in BPF, one packet at a time (BPF_PROG_TEST_RUN).

The lb4 maps are programmed through the real planner (glia.service.lbplan)
and glia.datapath.lbmaps; each case runs from_endpoint on a crafted packet
and checks the verdict, the rewritten packet (checksums recomputed here from
scratch), the conntrack entries and the counters: VIP hit -> DNAT, VIP miss
-> untouched, no backend -> RST or ICMP built in BPF, conntrack keeps a
connection's backend when the slots change, replies get the VIP back,
Maglev and affinity picks, expiry and garbage collection.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import netns_util as nu
import pytest

from glia.datapath.addrs import ip_to_be32
from glia.datapath.ct import (
    CT_F_CLOSING,
    CT_F_HAIRPIN,
    CT_F_SEEN_REPLY,
    HAIRPIN_IP,
    CTRow,
    ct_entries,
    ct_gc,
)
from glia.datapath.drop import Direction, Reason
from glia.datapath.events import EventReader
from glia.datapath.lbtypes import IPPROTO_TCP, IPPROTO_UDP, BackendAddr, Frontend
from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo, IPCacheInfo
from glia.datapath.structs import (
    LB_MAGLEV_M,
    glia_lb4_aff_key,
    glia_lb4_affinity,
    glia_lb4_affm,
    glia_lb4_affm_key,
)
from glia.datapath.testrun import TC_ACT_OK, TC_ACT_REDIRECT, RunResult, run_program
from glia.model.service import Backend, ClusterService, LBAlgorithm, Protocol, ServicePort
from glia.service import lbdiff, lbplan
from glia.service.lbstate import LBState

NODE_IP = "198.18.0.1"
REMOTE_NODE_IP = "198.18.0.2"
VXLAN_IFINDEX = 99
VXLAN_PORT = 8472
# ip, ifindex, identity, pod mac, node (gateway) mac
CLIENT = ("10.1.1.5", 10, 0x1012C, "02:00:00:00:0a:01", "02:00:00:00:0a:02")
LOCAL_BE = ("10.1.1.6", 11, 0x1012D, "02:00:00:00:0b:01", "02:00:00:00:0b:02")
LOCAL_BE2 = ("10.1.1.7", 12, 0x1012E, "02:00:00:00:0c:01", "02:00:00:00:0c:02")
REMOTE_BE = "10.1.2.9"
VIP = "10.96.0.10"
ETH_P_IP = 0x0800
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def lb_ct(dp: Datapath) -> list[CTRow]:
    """The service conntrack entries (not the policy ones every connection has)."""
    return [r for r in ct_entries(dp) if r.kind in ("service", "reply")]


# --- packets ------------------------------------------------------------------


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def l4_csum(src: str, dst: str, proto: int, segment: bytes) -> int:
    pseudo = (
        socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, len(segment))
    )
    return csum(pseudo + segment)


def ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x4321,
        0x4000,
        ttl,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header[:10] + struct.pack("!H", csum(header)) + header[12:] + payload


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: int,
    *,
    seq: int = 1000,
    ack: int = 0,
    data: bytes = b"",
) -> bytes:
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    check = l4_csum(src, dst, IPPROTO_TCP, head + data)
    return ipv4(src, dst, IPPROTO_TCP, head[:16] + struct.pack("!H", check) + head[18:] + data)


def udp(
    src: str, dst: str, sport: int, dport: int, data: bytes = b"query", *, zero_csum: bool = False
) -> bytes:
    head = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    check = 0 if zero_csum else (l4_csum(src, dst, IPPROTO_UDP, head + data) or 0xFFFF)
    return ipv4(src, dst, IPPROTO_UDP, head[:6] + struct.pack("!H", check) + data)


def frame(l3: bytes, sender: tuple[str, int, int, str, str] = CLIENT) -> bytes:
    """As a pod sends it: to its gateway's MAC, from its own."""
    return mac(sender[4]) + mac(sender[3]) + struct.pack("!H", ETH_P_IP) + l3


@dataclass(frozen=True)
class Parsed:
    src: str
    dst: str
    proto: int
    ttl: int
    sport: int
    dport: int
    l4: bytes  # the L4 segment with its payload


def parse(packet: bytes) -> Parsed:
    """Decode and verify: IP header checksum and L4 checksum must be right."""
    ip = packet[14:34]
    assert ip[0] == 0x45
    assert csum(ip) == 0, "IPv4 header checksum"
    total = struct.unpack("!H", ip[2:4])[0]
    assert len(packet) >= 14 + total
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    seg = packet[34 : 14 + total]
    proto = ip[9]
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        stored = struct.unpack("!H", seg[16:18] if proto == IPPROTO_TCP else seg[6:8])[0]
        if not (proto == IPPROTO_UDP and stored == 0):
            assert l4_csum(src, dst, proto, seg) == 0, f"L4 checksum of {src} -> {dst}"
        sport, dport = struct.unpack("!HH", seg[:4])
    else:
        assert csum(seg) == 0, "ICMP checksum"
        sport = dport = 0
    return Parsed(src, dst, proto, ip[8], sport, dport, seg)


# --- the rig ------------------------------------------------------------------


def backend(
    ip: str, port: int, proto: Protocol = Protocol.TCP, *, fport: int = 80, ready: bool = True
) -> Backend:
    return Backend(ip, port, proto, "", fport, "n1", "c1", f"default/{ip}", ready)


def service(
    name: str, ports: list[ServicePort], backends: list[Backend], **kw: object
) -> ClusterService:
    return ClusterService("default", name, "c1", 1, VIP, ports, backends, **kw)  # type: ignore[arg-type]


@dataclass
class Rig:
    dp: Datapath
    ns: str
    state: LBState | None = None

    def program(self, services: list[ClusterService]) -> LBState:
        new = lbplan.plan(services, self.state)
        self.dp.lb.apply(lbdiff.diff(self.state, new))
        self.state = new
        return new

    def run(self, packet: bytes, sender: tuple[str, int, int, str, str] = CLIENT) -> RunResult:
        return nu.call_in(
            self.ns,
            run_program,
            self.dp.prog_fd("from_endpoint"),
            packet,
            ingress_ifindex=sender[1],
        )

    def counters(self) -> dict[tuple[Reason, str], int]:
        return {(r.reason, r.direction): r.packets for r in self.dp.metrics.read()}

    def ct(self) -> dict[tuple[str, str, int, str, int], CTRow]:
        return {(r.kind, r.src, r.sport, r.dst, r.dport): r for r in ct_entries(self.dp)}


@pytest.fixture(scope="module")
def module_rig() -> Iterator[Rig]:
    nu.require_bpffs()
    nu.cleanup_stale()
    ns = f"{nu.prefix()}-lbrun"
    dp = Datapath(nu.pin_dir("lbrun"), nu.bpf_objects())
    try:
        nu.add_netns(ns)
        dp.load()
        dp.configure(
            node_ip=NODE_IP, vxlan_ifindex=VXLAN_IFINDEX, cluster_id=1, vxlan_port=VXLAN_PORT
        )
        for ip, ifindex, identity, pod_mac, node_mac in (CLIENT, LOCAL_BE, LOCAL_BE2):
            dp.endpoints.upsert(ip, EndpointInfo(ifindex, identity, pod_mac, node_mac))
        dp.ipcache.upsert("10.1.2.0/24", IPCacheInfo(0x10200, REMOTE_NODE_IP, 1))
        yield Rig(dp, ns)
    finally:
        dp.close()
        unpin(dp.pin_dir)
        nu.del_netns(ns)


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.dp.ct.flush()
    yield module_rig
    module_rig.program([])
    module_rig.dp.lb.flush_affinity(range(1, 1000))
    module_rig.dp.ct.flush()


WEB = ServicePort(80, 8080)
DNS = ServicePort(53, 5353, Protocol.UDP)


def ct_pair(rig: Rig, sport: int, vport: int = 80) -> tuple[CTRow, CTRow]:
    rows = [r for r in ct_entries(rig.dp) if sport in (r.sport, r.dport)]
    svc = next(r for r in rows if r.kind == "service")
    reply = next(r for r in rows if r.kind == "reply")
    assert (svc.src, svc.sport, svc.dst, svc.dport) == (CLIENT[0], sport, VIP, vport)
    assert (reply.src, reply.sport) == (svc.nat_addr, svc.nat_port)
    assert (reply.dst, reply.dport, reply.nat_addr, reply.nat_port) == (
        CLIENT[0],
        sport,
        VIP,
        vport,
    )
    return svc, reply


# --- cases --------------------------------------------------------------------


def test_vip_hit_dnats_tcp_to_a_local_backend(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(LOCAL_BE[0], 8080)])])
    packet = frame(tcp(CLIENT[0], VIP, 40001, 80, TCP_SYN, seq=77))
    before = rig.counters()
    result = rig.run(packet)
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (CLIENT[0], 40001, LOCAL_BE[0], 8080)
    assert out.ttl == 63
    assert result.packet[:12] == mac(LOCAL_BE[3]) + mac(LOCAL_BE[4])  # to the backend pod
    assert out.l4[4:16] == parse(packet).l4[4:16]  # seq, ack, flags untouched
    assert (
        rig.counters()[(Reason.FORWARDED, "egress")]
        == before.get((Reason.FORWARDED, "egress"), 0) + 1
    )

    svc, reply = ct_pair(rig, 40001)
    assert (svc.nat_addr, svc.nat_port, svc.proto) == (LOCAL_BE[0], 8080, IPPROTO_TCP)
    assert svc.svc_id == reply.svc_id == rig.state.frontends[Frontend(VIP, 80, IPPROTO_TCP)].svc_id  # type: ignore[union-attr]
    now = time.monotonic_ns()
    assert 50e9 < svc.expires_ns - now <= 60e9  # SYN: short until a reply is seen
    assert svc.tcp_flags == TCP_SYN


def test_vip_hit_to_a_remote_backend_goes_into_the_tunnel(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(REMOTE_BE, 9090)])])
    result = rig.run(frame(tcp(CLIENT[0], VIP, 40002, 80, TCP_SYN)))
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.dst, out.dport) == (REMOTE_BE, 9090)


def test_udp_dnat_fixes_the_checksum_and_keeps_a_zero_one(rig: Rig) -> None:
    rig.program([service("dns", [DNS], [backend(LOCAL_BE[0], 5353, Protocol.UDP, fport=53)])])
    out = parse(rig.run(frame(udp(CLIENT[0], VIP, 40003, 53))).packet)
    assert (out.proto, out.dst, out.dport) == (IPPROTO_UDP, LOCAL_BE[0], 5353)
    assert out.l4[8:] == b"query"
    zero = rig.run(frame(udp(CLIENT[0], VIP, 40004, 53, zero_csum=True)))
    out = parse(zero.packet)
    assert out.dport == 5353 and out.l4[6:8] == b"\0\0"  # "no checksum" stays so


def test_vip_miss_leaves_the_packet_alone(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(LOCAL_BE[0], 8080)])])
    # Right VIP, other port; other protocol on the service port: no service.
    for packet in (
        frame(tcp(CLIENT[0], VIP, 40005, 81, TCP_SYN)),
        frame(udp(CLIENT[0], VIP, 40005, 80)),
    ):
        result = rig.run(packet)
        assert result.retval == TC_ACT_OK  # the VIP is no endpoint: the node's stack
        assert result.packet == packet
    assert lb_ct(rig.dp) == []


def test_no_backend_tcp_syn_gets_a_reset(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(LOCAL_BE[0], 8080, ready=False)])])
    entry = rig.state.frontends[Frontend(VIP, 80, IPPROTO_TCP)].entry  # type: ignore[union-attr]
    assert entry.ready_count == 0
    packet = frame(tcp(CLIENT[0], VIP, 40006, 80, TCP_SYN, seq=0xFFFFFFF0))
    drops = rig.dp.metrics.get(Reason.DROP_NO_SERVICE, Direction.EGRESS)[0]
    with EventReader(rig.dp.pin_dir) as events:
        events.poll()
        result = rig.run(packet)
        seen = nu.collect_events(events, lambda evs: bool(evs), timeout=2)
    assert result.retval == TC_ACT_REDIRECT  # back into the client pod
    assert len(result.packet) == 14 + 40
    assert result.packet[:12] == mac(CLIENT[3]) + mac(CLIENT[4])  # to the pod, from its gateway
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (VIP, 80, CLIENT[0], 40006)
    assert out.ttl == 64
    seq, ack, off, flags = struct.unpack("!IIBB", out.l4[4:14])
    assert (seq, ack, off >> 4, flags) == (0, 0xFFFFFFF1, 5, TCP_RST | TCP_ACK)
    assert rig.dp.metrics.get(Reason.DROP_NO_SERVICE, Direction.EGRESS)[0] == drops + 1
    assert [(e.reason, e.daddr, e.dport) for e in seen] == [(Reason.DROP_NO_SERVICE, VIP, 80)]
    assert lb_ct(rig.dp) == []


def test_no_backend_tcp_segment_with_ack_gets_a_reset_at_its_ack(rig: Rig) -> None:
    rig.program([service("web", [WEB], [])])
    packet = frame(
        tcp(CLIENT[0], VIP, 40007, 80, TCP_ACK | TCP_PSH, seq=5, ack=123456, data=b"GET /")
    )
    out = parse(rig.run(packet).packet)
    seq, ack, _, flags = struct.unpack("!IIBB", out.l4[4:14])
    assert (seq, ack, flags) == (123456, 0, TCP_RST)
    # A reset is never answered.
    assert rig.run(frame(tcp(CLIENT[0], VIP, 40007, 80, TCP_RST))).retval == 2  # TC_ACT_SHOT


def test_no_backend_udp_gets_icmp_port_unreachable(rig: Rig) -> None:
    rig.program([service("dns", [DNS], [])])
    original = udp(CLIENT[0], VIP, 40008, 53, b"a longer query that is cut")
    result = rig.run(frame(original))
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.src, out.dst, out.proto) == (VIP, CLIENT[0], 1)
    assert out.l4[:2] == bytes([3, 3])  # destination unreachable, port unreachable
    assert out.l4[8:] == original[: 20 + 8]  # the original IP header and 8 bytes
    assert len(result.packet) == 14 + 20 + 8 + 28
    # A datagram shorter than the reply grows into it.
    tiny = udp(CLIENT[0], VIP, 40009, 53, b"")
    out = parse(rig.run(frame(tiny)).packet)
    assert out.l4[8:] == tiny[:28]


def test_conntrack_keeps_the_backend_when_the_slots_change(rig: Rig) -> None:
    both = [backend(LOCAL_BE[0], 8080), backend(LOCAL_BE2[0], 8080)]
    rig.program([service("web", [WEB], both)])
    first = parse(rig.run(frame(tcp(CLIENT[0], VIP, 40010, 80, TCP_SYN))).packet).dst
    other = LOCAL_BE2[0] if first == LOCAL_BE[0] else LOCAL_BE[0]
    # The connection's backend leaves the slots (withdrawn, not ready).
    rig.program([service("web", [WEB], [backend(first, 8080, ready=False), backend(other, 8080)])])
    assert rig.state is not None and len(rig.state.backend_ids) == 1  # its entry is gone too
    for _ in range(5):
        out = parse(rig.run(frame(tcp(CLIENT[0], VIP, 40010, 80, TCP_ACK, seq=1001))).packet)
        assert (out.dst, out.dport) == (first, 8080)
    # New connections avoid it.
    for sport in range(40100, 40120):
        assert parse(rig.run(frame(tcp(CLIENT[0], VIP, sport, 80, TCP_SYN))).packet).dst == other


def test_replies_get_the_vip_back(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(LOCAL_BE[0], 8080)])])
    rig.run(frame(tcp(CLIENT[0], VIP, 40011, 80, TCP_SYN, seq=1)))
    reply = frame(
        tcp(LOCAL_BE[0], CLIENT[0], 8080, 40011, TCP_SYN | TCP_ACK, seq=9, ack=2), LOCAL_BE
    )
    result = rig.run(reply, LOCAL_BE)
    assert result.retval == TC_ACT_REDIRECT
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (VIP, 80, CLIENT[0], 40011)
    assert result.packet[:12] == mac(CLIENT[3]) + mac(CLIENT[4])
    svc, rev = ct_pair(rig, 40011)
    assert svc.flags & CT_F_SEEN_REPLY and rev.flags & CT_F_SEEN_REPLY
    assert svc.expires_ns - time.monotonic_ns() > 3600e9  # established: long-lived
    # UDP too.
    rig.program([service("dns", [DNS], [backend(LOCAL_BE[0], 5353, Protocol.UDP, fport=53)])])
    rig.run(frame(udp(CLIENT[0], VIP, 40012, 53)))
    out = parse(
        rig.run(
            frame(udp(LOCAL_BE[0], CLIENT[0], 5353, 40012, b"answer"), LOCAL_BE), LOCAL_BE
        ).packet
    )
    assert (out.src, out.sport, out.l4[8:]) == (VIP, 53, b"answer")
    # Traffic that is no reply of a service connection is not rewritten.
    plain = frame(udp(LOCAL_BE[0], CLIENT[0], 5353, 40013), LOCAL_BE)
    assert parse(rig.run(plain, LOCAL_BE).packet).src == LOCAL_BE[0]


def test_direct_syn_on_reused_ports_drops_a_stale_reply_entry(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(LOCAL_BE[0], 8080)])])
    rig.run(frame(tcp(CLIENT[0], VIP, 40014, 80, TCP_SYN)))
    rig.run(frame(tcp(CLIENT[0], VIP, 40014, 80, TCP_RST | TCP_ACK)))
    # The same client port now connects to the backend's pod IP directly.
    rig.run(frame(tcp(CLIENT[0], LOCAL_BE[0], 40014, 8080, TCP_SYN)))
    assert [r.kind for r in lb_ct(rig.dp)] == ["service"]
    out = parse(
        rig.run(
            frame(tcp(LOCAL_BE[0], CLIENT[0], 8080, 40014, TCP_SYN | TCP_ACK), LOCAL_BE), LOCAL_BE
        ).packet
    )
    assert out.src == LOCAL_BE[0]


def _tuple_hash(saddr: str, daddr: str, sport: int, dport: int, proto: int) -> int:
    """Python mirror of glia_tuple_hash (lb.h)."""

    def mix(h: int) -> int:
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    def n(ip: str) -> int:
        return int(struct.unpack("!I", socket.inet_aton(ip))[0])

    h = mix(n(saddr) ^ 0x9E3779B9)
    h = mix(h ^ n(daddr))
    h = mix(h ^ ((sport << 16) | dport))
    return mix(h ^ proto)


def test_maglev_picks_the_table_slot_of_the_tuple_hash(rig: Rig) -> None:
    backends = [backend(ip, 8080) for ip in (LOCAL_BE[0], LOCAL_BE2[0], REMOTE_BE)]
    state = rig.program([service("web", [WEB], backends, lb_algorithm=LBAlgorithm.MAGLEV)])
    fp = state.frontends[Frontend(VIP, 80, IPPROTO_TCP)]
    assert fp.maglev is not None and len(fp.maglev) == LB_MAGLEV_M
    by_id = {i: a.ip for a, i in state.backend_ids.items()}
    picked = set()
    for sport in range(41000, 41060):
        expect = by_id[fp.maglev[_tuple_hash(CLIENT[0], VIP, sport, 80, IPPROTO_TCP) % LB_MAGLEV_M]]
        assert parse(rig.run(frame(tcp(CLIENT[0], VIP, sport, 80, TCP_SYN))).packet).dst == expect
        picked.add(expect)
    assert len(picked) == 3


def test_random_spreads_and_affinity_sticks(rig: Rig) -> None:
    backends = [backend(ip, 8080) for ip in (LOCAL_BE[0], LOCAL_BE2[0], REMOTE_BE)]
    rig.program([service("web", [WEB], backends)])
    spread = {
        parse(rig.run(frame(tcp(CLIENT[0], VIP, p, 80, TCP_SYN))).packet).dst
        for p in range(42000, 42060)
    }
    assert spread == {LOCAL_BE[0], LOCAL_BE2[0], REMOTE_BE}

    rig.program([service("web", [WEB], backends, session_affinity=True, affinity_timeout=300)])
    stuck = {
        parse(rig.run(frame(tcp(CLIENT[0], VIP, p, 80, TCP_SYN))).packet).dst
        for p in range(42100, 42140)
    }
    assert len(stuck) == 1
    (chosen,) = stuck
    rows = rig.dp.lb.affinity_entries()
    assert [(r.client, r.backend_id) for r in rows] == [
        (CLIENT[0], rig.state.backend_ids[next(a for a in rig.state.backend_ids if a.ip == chosen)])
    ]  # type: ignore[union-attr]
    # Once that backend is no longer ready, the affinity entry no longer holds.
    rest = [replace(b, ready=b.ip != chosen) for b in backends]
    rig.program([service("web", [WEB], rest, session_affinity=True, affinity_timeout=300)])
    moved = {
        parse(rig.run(frame(tcp(CLIENT[0], VIP, p, 80, TCP_SYN))).packet).dst
        for p in range(42200, 42220)
    }
    assert len(moved) == 1 and chosen not in moved
    # Turning affinity off purges the service's entries.
    rig.program([service("web", [WEB], rest)])
    assert rig.dp.lb.affinity_entries() == []


def test_affinity_expires_after_its_timeout(rig: Rig) -> None:
    web = service(
        "web", [WEB], [backend(LOCAL_BE[0], 8080)], session_affinity=True, affinity_timeout=5
    )
    other = service("other", [ServicePort(81, 8080)], [backend(REMOTE_BE, 8080, fport=81)])
    state = rig.program([web, other])
    web_id = state.frontends[Frontend(VIP, 80, IPPROTO_TCP)].svc_id
    # An affinity entry naming a backend that web's slots do not have (declared
    # valid in the match map by hand) shows which path the pick took.
    foreign = state.backend_ids[BackendAddr(REMOTE_BE, 8080, IPPROTO_TCP)]
    match = glia_lb4_affm_key(backend_id=foreign, svc_id=web_id)
    rig.dp.lb.affinity_match.update(match, glia_lb4_affm())
    key = glia_lb4_aff_key(client=ip_to_be32(CLIENT[0]), svc_id=web_id)

    def pick_after(age_s: float, sport: int) -> str:
        last_used = time.monotonic_ns() - int(age_s * 1e9)
        rig.dp.lb.affinity.update(
            key, glia_lb4_affinity(last_used_ns=last_used, backend_id=foreign)
        )
        return parse(rig.run(frame(tcp(CLIENT[0], VIP, sport, 80, TCP_SYN))).packet).dst

    try:
        assert pick_after(4, 42300) == REMOTE_BE  # within the 5 s timeout: honoured
        assert pick_after(6, 42301) == LOCAL_BE[0]  # past it: a fresh pick
        (entry,) = [r for r in rig.dp.lb.affinity_entries() if r.svc_id == web_id]
        assert entry.backend_id == state.backend_ids[BackendAddr(LOCAL_BE[0], 8080, IPPROTO_TCP)]
    finally:
        rig.dp.lb.affinity_match.delete(match)


def test_fin_shortens_the_entries_and_gc_removes_expired_ones(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(LOCAL_BE[0], 8080)])])
    rig.run(frame(tcp(CLIENT[0], VIP, 40020, 80, TCP_SYN)))
    rig.run(frame(tcp(CLIENT[0], VIP, 40021, 80, TCP_SYN)))
    rig.run(frame(tcp(LOCAL_BE[0], CLIENT[0], 8080, 40021, TCP_SYN | TCP_ACK), LOCAL_BE), LOCAL_BE)
    rig.run(frame(tcp(CLIENT[0], VIP, 40021, 80, TCP_FIN | TCP_ACK)))
    svc, rev = ct_pair(rig, 40021)
    now = time.monotonic_ns()
    assert svc.flags & CT_F_CLOSING and rev.flags & CT_F_CLOSING
    assert svc.expires_ns - now <= 10e9 and rev.expires_ns == svc.expires_ns
    assert svc.to_dict(now)["closing"] is True and "FIN" in svc.to_dict(now)["tcp_flags"]

    assert ct_gc(rig.dp, now) == 0  # nothing expired yet
    # the closed connection's pair, and its policy entries (egress at the
    # client, ingress at the backend)
    assert ct_gc(rig.dp, now + 11 * 10**9) == 4
    assert {r.sport for r in ct_entries(rig.dp) if r.kind == "service"} == {40020}
    assert ct_gc(rig.dp, now + 61 * 10**9) == 4  # the SYN-only one
    assert lb_ct(rig.dp) == []


def test_an_expired_entry_is_not_used(rig: Rig) -> None:
    both = [backend(LOCAL_BE[0], 8080), backend(LOCAL_BE2[0], 8080)]
    rig.program([service("web", [WEB], both)])
    first = parse(rig.run(frame(tcp(CLIENT[0], VIP, 40030, 80, TCP_SYN))).packet).dst
    # Age the entries by hand: expired entries are ignored even before GC.
    for key, value in rig.dp.ct.map.items():
        value.expires_ns = 1
        rig.dp.ct.map.update(key, value)
    other = LOCAL_BE2[0] if first == LOCAL_BE[0] else LOCAL_BE[0]
    rig.program([service("web", [WEB], [backend(other, 8080)])])
    assert parse(rig.run(frame(tcp(CLIENT[0], VIP, 40030, 80, TCP_ACK))).packet).dst == other


def test_checksums_hold_for_random_packets(rig: Rig) -> None:
    dns_backend = backend(LOCAL_BE[0], 5353, Protocol.UDP, fport=53)
    rig.program(
        [service("web", [WEB], [backend(LOCAL_BE[0], 8080)]), service("dns", [DNS], [dns_backend])]
    )
    rnd = random.Random(7)
    for _ in range(40):
        sport = rnd.randrange(1024, 65536)
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 300)))
        if rnd.random() < 0.5:
            packet = tcp(
                CLIENT[0], VIP, sport, 80, TCP_ACK | TCP_PSH, seq=rnd.randrange(2**32), data=data
            )
        else:
            packet = udp(CLIENT[0], VIP, sport, 53, data)
        out = parse(rig.run(frame(packet)).packet)  # asserts both checksums
        assert out.dst == LOCAL_BE[0]
        if out.proto == IPPROTO_TCP:
            answer = tcp(LOCAL_BE[0], CLIENT[0], 8080, sport, TCP_ACK, data=data)
        else:
            answer = udp(LOCAL_BE[0], CLIENT[0], 5353, sport, data)
        back = rig.run(frame(answer, LOCAL_BE), LOCAL_BE)
        assert parse(back.packet).src == VIP


def test_deleting_services_removes_every_entry_they_created(rig: Rig) -> None:
    backends = [backend(ip, 8080) for ip in (LOCAL_BE[0], LOCAL_BE2[0], REMOTE_BE)]
    web = service(
        "web",
        [WEB, ServicePort(443, 8443)],
        [*backends, backend(REMOTE_BE, 8443, fport=443)],
        lb_algorithm=LBAlgorithm.MAGLEV,
        session_affinity=True,
        affinity_timeout=60,
    )
    rig.program([web, service("dns", [DNS], [backend(LOCAL_BE[0], 5353, Protocol.UDP, fport=53)])])
    rig.run(frame(tcp(CLIENT[0], VIP, 40040, 80, TCP_SYN)))
    held = rig.dp.lb.read()
    assert (len(held.services), len(held.maglev), len(held.backends)) == (3, 2, 5)
    assert len(held.affinity_match) == 4 and len(rig.dp.lb.affinity_entries()) == 1

    rig.program([service("dns", [DNS], [backend(LOCAL_BE[0], 5353, Protocol.UDP, fport=53)])])
    left = rig.dp.lb.read()
    assert list(left.services) == [Frontend(VIP, 53, IPPROTO_UDP)]
    assert (len(left.slots), len(left.backends), len(left.revnat)) == (1, 1, 1)
    assert left.maglev == {} and left.affinity_match == set()
    assert rig.dp.lb.affinity_entries() == []

    rig.program([])
    assert rig.dp.lb.read().entry_count() == 0


def test_a_pod_picked_as_its_own_backend_is_hairpinned(rig: Rig) -> None:
    rig.program([service("web", [WEB], [backend(CLIENT[0], 8080)])])
    result = rig.run(frame(tcp(CLIENT[0], VIP, 40050, 80, TCP_SYN)))
    assert result.retval == TC_ACT_REDIRECT
    assert result.packet[:12] == mac(CLIENT[3]) + mac(CLIENT[4])  # back into the pod
    out = parse(result.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (HAIRPIN_IP, 40050, CLIENT[0], 8080)
    (row,) = (r for r in ct_entries(rig.dp) if r.kind == "service")
    assert row.flags & CT_F_HAIRPIN
    # The pod answers 169.254.42.1; it gets VIP:80 as the source, itself as destination.
    answer = rig.run(frame(tcp(CLIENT[0], HAIRPIN_IP, 8080, 40050, TCP_SYN | TCP_ACK)))
    assert answer.retval == TC_ACT_REDIRECT
    out = parse(answer.packet)
    assert (out.src, out.sport, out.dst, out.dport) == (VIP, 80, CLIENT[0], 40050)
    # Later packets of the connection take the same way.
    out = parse(rig.run(frame(tcp(CLIENT[0], VIP, 40050, 80, TCP_ACK))).packet)
    assert (out.src, out.dst) == (HAIRPIN_IP, CLIENT[0])
