"""Packet builders for tests and benchmarks: Ethernet, IPv4, UDP, TCP, VXLAN.

Pure byte assembly, no sockets. Used by the datapath's packet tables
(tests/integration/test_datapath_testrun.py) and by the overlay trust tests,
which hand crafted VXLAN to a real node's VXLAN socket from a plain UDP
socket (tests/integration/test_datapath_traffic.py,
tests/e2e/test_overlay_trust.py).
"""

from __future__ import annotations

import socket
import struct

ETH_P_IP = 0x0800
IP_DF, IP_MF = 0x4000, 0x2000  # IPv4 frag_off flags (host order)
IPPROTO_TCP, IPPROTO_UDP = 6, 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
VXLAN_FLAG_VNI = 0x08  # RFC 7348: the I flag, "the VNI is valid"


def mac(text: str) -> bytes:
    """ "02:00:00:00:0a:01" -> 6 bytes."""
    return bytes.fromhex(text.replace(":", ""))


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return mac(dst) + mac(src) + struct.pack("!H", ethertype) + payload


def ipv4(
    src: str,
    dst: str,
    payload: bytes,
    *,
    proto: int = IPPROTO_UDP,
    ttl: int = 64,
    ihl: int = 5,
    frag: int = IP_DF,
) -> bytes:
    """A 20-byte IPv4 header with a valid checksum, then ``payload``. ``ihl`` is
    written as given (a wrong one makes a malformed packet on purpose)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        0,
        20 + len(payload),
        0x1234,
        frag,
        ttl,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def udp(sport: int, dport: int, data: bytes = b"glia") -> bytes:
    """A UDP header without checksum (0, which IPv4 allows), then ``data``."""
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def tcp(sport: int, dport: int, flags: int, *, seq: int = 0, ack: int = 0) -> bytes:
    """A 20-byte TCP header (checksum 0: the datapath does not check it), no data."""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)


def vxlan(vni: int, inner_frame: bytes) -> bytes:
    """The UDP payload of a VXLAN packet: its header (VNI valid) and the inner frame."""
    if not 0 <= vni < 1 << 24:
        raise ValueError(f"VNI {vni} does not fit 24 bits")
    return struct.pack("!B3xI", VXLAN_FLAG_VNI, vni << 8) + inner_frame
