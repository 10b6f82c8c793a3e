"""Probes of a pod's start for glia's benchmarks: its first ICMP echo reply, its address,
its network namespace appearing. Used by ``bench/pods.py`` and ``bench/_throughput.py``;
the echo runs in a thread inside any namespace (``_common.in_netns``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import struct
import time
from collections.abc import Callable

from _common import NETNS_DIR, BenchError  # bench/ is a folder of scripts

# --- ICMP echo -------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = b"glia-bench"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def is_echo_reply(packet: bytes, src: str, ident: int) -> bool:
    """Whether a raw-socket packet (IPv4 header included) is our echo reply from ``src``."""
    if len(packet) < 20:
        return False
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or socket.inet_ntoa(packet[12:16]) != src:
        return False
    icmp_type, _, _, got_ident, _ = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
    return bool(icmp_type == 0 and got_ident == ident)


def first_echo_reply(dst: str, timeout: float, every: float = 0.002) -> float:
    """Ping ``dst`` every ``every`` s until a reply; ``time.monotonic()`` of that reply.

    Runs in the calling thread's namespace (see :func:`in_netns`). Send errors
    (no route yet) count as "no reply yet". BenchError after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    ident = random.randrange(1, 0xFFFF)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        seq = 0
        while time.monotonic() < deadline:
            seq = (seq + 1) & 0xFFFF
            with contextlib.suppress(OSError):
                sock.sendto(echo_request(ident, seq), (dst, 0))
            next_send = time.monotonic() + every
            while (left := next_send - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    packet = sock.recv(2048)
                except (TimeoutError, OSError):
                    break
                if is_echo_reply(packet, dst, ident):
                    return time.monotonic()
    raise BenchError(f"no ICMP echo reply from {dst} within {timeout:.1f} s")


SIOCGIFADDR = 0x8915


def interface_ipv4(ifname: str) -> str | None:
    """The IPv4 address of ``ifname`` in the calling thread's namespace, None if none yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            req = struct.pack("256s", ifname.encode())
            got = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, req)
        except OSError:  # no such device, or no address yet
            return None
    return socket.inet_ntoa(got[20:24])


def new_netns(before: set[str], prefix: str = "netns-") -> Callable[[], str | None]:
    """A probe for a namespace named ``prefix...`` that appeared after ``before``.

    Answers only once the file is a mounted namespace (its creator makes the file,
    then bind-mounts the namespace onto it).
    """
    nsfs = os.stat("/proc/self/ns/net").st_dev

    def probe() -> str | None:
        for name in set(os.listdir(NETNS_DIR)) - before:
            path = str(NETNS_DIR / name)
            try:
                if name.startswith(prefix) and os.stat(path).st_dev == nsfs:
                    return path
            except FileNotFoundError:
                continue
        return None

    return probe
