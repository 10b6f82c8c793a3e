"""IPv4 address checks shared by the record validators."""

from __future__ import annotations

import ipaddress
import socket
from ipaddress import IPv4Address, IPv4Network

from glia.validate.errors import Rejected


def ipv4(text: object, what: str) -> IPv4Address:
    """A canonical dotted-quad IPv4 address (``10.1.0.5``, not ``010.1.0.5`` or ``10.1.5``).

    Parsed in C (``inet_pton`` takes only the strict dotted quad): an agent
    checks every address of a 100,000-endpoint remote cluster, and
    ``IPv4Address(text)`` took most of that time."""
    if not isinstance(text, str):
        raise Rejected(f"{what} must be an IPv4 address string, got {type(text).__name__}")
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        raise Rejected(f"{what} {text!r} is not an IPv4 address") from None
    if socket.inet_ntoa(packed) != text:
        raise Rejected(f"{what} {text!r} is not in canonical form ({socket.inet_ntoa(packed)})")
    return IPv4Address(packed)


# Ranges a host cannot own, as integers: the same as IPv4Address's is_* properties,
# which each build a network and test membership.
_NOT_UNICAST = (
    (0, 0, "unspecified"),
    (0x7F000000, 0x7FFFFFFF, "loopback"),
    (0xE0000000, 0xEFFFFFFF, "multicast"),
    (0xFFFFFFFF, 0xFFFFFFFF, "broadcast"),
    (0xA9FE0000, 0xA9FEFFFF, "link-local"),
    (0xF0000000, 0xFFFFFFFF, "reserved"),
)


def unicast(text: object, what: str) -> IPv4Address:
    """An address a host can own: not 0.0.0.0, loopback, multicast, broadcast,
    link-local or reserved (240/4)."""
    addr = ipv4(text, what)
    n = int(addr)
    for lo, hi, bad in _NOT_UNICAST:
        if lo <= n <= hi:
            raise Rejected(f"{what} {addr} is a {bad} address")
    return addr


def in_block(addr: IPv4Address, block: IPv4Network, what: str, block_what: str) -> None:
    """``addr`` is a host address of ``block`` (not its network or broadcast address)."""
    if addr not in block:
        raise Rejected(f"{what} {addr} is outside {block_what} {block}")
    if block.prefixlen < 31 and addr in (block.network_address, block.broadcast_address):
        raise Rejected(f"{what} {addr} is the network or broadcast address of {block}")


def network(text: object, what: str) -> IPv4Network:
    if not isinstance(text, str):
        raise Rejected(f"{what} must be a CIDR string, got {type(text).__name__}")
    try:
        return ipaddress.IPv4Network(text)
    except ValueError as e:
        raise Rejected(f"{what} {text!r} is not an IPv4 CIDR ({e})") from None
