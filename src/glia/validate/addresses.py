"""IPv4 address checks shared by the record validators."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv4Network

from glia.validate.errors import Rejected


def ipv4(text: object, what: str) -> IPv4Address:
    """A canonical dotted-quad IPv4 address (``10.1.0.5``, not ``010.1.0.5`` or ``10.1.5``)."""
    if not isinstance(text, str):
        raise Rejected(f"{what} must be an IPv4 address string, got {type(text).__name__}")
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        raise Rejected(f"{what} {text!r} is not an IPv4 address") from None
    if str(addr) != text:
        raise Rejected(f"{what} {text!r} is not in canonical form ({addr})")
    return addr


def unicast(text: object, what: str) -> IPv4Address:
    """An address a host can own: not 0.0.0.0, loopback, multicast, broadcast,
    link-local or reserved (240/4)."""
    addr = ipv4(text, what)
    bad = (
        "unspecified"
        if addr.is_unspecified
        else "loopback"
        if addr.is_loopback
        else "multicast"
        if addr.is_multicast
        else "broadcast"
        if addr == IPv4Address("255.255.255.255")
        else "link-local"
        if addr.is_link_local
        else "reserved"
        if addr.is_reserved
        else ""
    )
    if bad:
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
