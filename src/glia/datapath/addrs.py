"""Addresses and ports as the BPF maps hold them: IPv4 and ports in network order.

A ``__be32`` or ``__be16`` struct field is a native ``c_uint32`` or
``c_uint16`` whose memory holds the value in network order; these convert
between that integer and the address or port number people use, and between
MAC strings and the bytes of a ``MacBytes`` field. Used by the typed node maps
(glia.datapath.nodemaps) and the ring-buffer readers (glia.datapath.events,
glia.datapath.signals).
"""

from __future__ import annotations

import socket
import struct

ETH_ALEN = 6  # bytes of a MAC address (linux/if_ether.h)


def ip_to_be32(ip: str) -> int:
    """An IPv4 address as the c_uint32 whose memory holds it in network order."""
    try:
        packed = socket.inet_pton(socket.AF_INET, ip)  # strict dotted quad, and fast
    except (OSError, TypeError):
        raise ValueError(f"{ip!r} is not an IPv4 address") from None
    return int(struct.unpack("=I", packed)[0])


def prefix_to_key(prefix: str) -> tuple[int, int]:
    """("10.2.0.0/16" or "10.2.3.4") -> (prefix length, network as be32); host bits refused."""
    ip, slash, length = prefix.partition("/")
    try:
        if slash and not length.isdigit():
            raise ValueError(length)
        prefixlen = int(length) if slash else 32
        packed = socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError):
        raise ValueError(f"{prefix!r} is not an IPv4 prefix") from None
    if not 0 <= prefixlen <= 32:
        raise ValueError(f"{prefix!r} is not an IPv4 prefix: length must be 0..32")
    host_bits = int.from_bytes(packed, "big") & ((1 << (32 - prefixlen)) - 1)
    if host_bits:
        raise ValueError(f"{prefix!r} is not an IPv4 prefix: it has host bits set")
    return prefixlen, int(struct.unpack("=I", packed)[0])


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", value))


def int_to_be16(value: int) -> int:
    """A port number as the c_uint16 whose memory holds it in network order."""
    return int(struct.unpack("=H", struct.pack("!H", value))[0])


def be16_to_int(value: int) -> int:
    """A ``__be16`` read as a native c_uint16, back to its numeric value."""
    return int(struct.unpack("!H", struct.pack("=H", value))[0])


def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != ETH_ALEN or len(raw) != ETH_ALEN or any(len(p) != 2 for p in parts):
        raise ValueError(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return raw


def mac_to_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
