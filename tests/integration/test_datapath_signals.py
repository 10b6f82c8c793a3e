"""The datapath's signals to the agent (bpf/include/signals.h): refused connections.

from_endpoint runs once per packet with BPF_PROG_TEST_RUN against maps in a
private pin directory, in a test network namespace; glia_signals_v1 is read
with :class:`glia.datapath.signals.SignalReader`, as the agent reads it. Only
a reset answering a SYN (RST+ACK, sequence 0) from a verified endpoint is a
refusal; an abort, a spoofed source or anything else signals nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import netns_util as nu
import pytest

from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo
from glia.datapath.packets import (
    IP_DF,
    IP_MF,
    IPPROTO_TCP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    ipv4,
    mac,
    tcp,
    udp,
)
from glia.datapath.signals import Refused, SignalReader
from glia.datapath.testrun import run_program

NODE_IP = "198.18.0.1"
POD = ("10.1.1.5", 10, 0x1012C, "02:00:00:00:0a:01", "02:00:00:00:0a:02")
CLIENT = "10.1.2.9"


def from_pod(l4: bytes, *, proto: int = IPPROTO_TCP, frag: int = IP_DF) -> bytes:
    l3 = ipv4(POD[0], CLIENT, l4, proto=proto, frag=frag)
    return mac(POD[4]) + mac(POD[3]) + struct.pack("!H", 0x0800) + l3


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[Datapath, SignalReader, str]]:
    nu.require_bpffs()
    nu.cleanup_stale()
    ns = f"{nu.prefix()}-sig"
    dp = Datapath(nu.pin_dir("signals"), nu.bpf_objects())
    reader: SignalReader | None = None
    try:
        nu.add_netns(ns)
        dp.load()
        dp.configure(node_ip=NODE_IP, vxlan_ifindex=0, cluster_id=1, vxlan_port=8472)
        ip, ifindex, identity, pod_mac, node_mac = POD
        dp.endpoints.upsert(ip, EndpointInfo(ifindex, identity, pod_mac, node_mac))
        reader = SignalReader(dp.pin_dir)
        yield dp, reader, ns
    finally:
        if reader is not None:
            reader.close()
        dp.close()
        unpin(dp.pin_dir)
        nu.del_netns(ns)


def send(rig: tuple[Datapath, SignalReader, str], packet: bytes, ifindex: int = POD[1]) -> None:
    dp, _, ns = rig
    nu.call_in(ns, run_program, dp.prog_fd("from_endpoint"), packet, ingress_ifindex=ifindex)


def test_a_reset_answering_a_syn_is_signalled(rig: tuple[Datapath, SignalReader, str]) -> None:
    _, reader, _ = rig
    reader.read()  # drain
    send(rig, from_pod(tcp(80, 40000, TCP_RST | TCP_ACK, seq=0, ack=1001)))
    got = reader.read(timeout=2.0)
    assert [(s.ip, s.port, s.peer, s.peer_port) for s in got] == [(POD[0], 80, CLIENT, 40000)]
    assert isinstance(got[0], Refused) and got[0].ts_ns > 0


@pytest.mark.parametrize(
    ("name", "packet", "ifindex"),
    [
        ("an abort (RST with a sequence number)", tcp(80, 40000, TCP_RST | TCP_ACK, seq=7), None),
        ("a reset without ACK", tcp(80, 40000, TCP_RST), None),
        ("a SYN+ACK", tcp(80, 40000, TCP_SYN | TCP_ACK), None),
        ("a plain ACK", tcp(80, 40000, TCP_ACK, seq=0), None),
        ("UDP", udp(80, 40000), None),
        ("a spoofed source (another veth)", tcp(80, 40000, TCP_RST | TCP_ACK), 77),
    ],
)
def test_nothing_else_is_signalled(
    rig: tuple[Datapath, SignalReader, str], name: str, packet: bytes, ifindex: int | None
) -> None:
    _, reader, _ = rig
    reader.read()
    proto = 17 if name == "UDP" else IPPROTO_TCP
    send(rig, from_pod(packet, proto=proto), ifindex or POD[1])
    assert reader.read(timeout=0.2) == [], name


def test_a_fragment_is_not_read_as_tcp(rig: tuple[Datapath, SignalReader, str]) -> None:
    _, reader, _ = rig
    reader.read()
    rst = tcp(80, 40000, TCP_RST | TCP_ACK)
    send(rig, from_pod(rst, frag=IP_MF | 3))  # not the first fragment: no TCP header
    assert reader.read(timeout=0.2) == []
