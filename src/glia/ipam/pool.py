"""Pure address allocation: which IP or CIDR block to hand out next.

No I/O here. :mod:`glia.ipam.local` persists a node's endpoint IPs;
the operator uses :func:`next_block` to carve node pod CIDRs out of the
cluster pool.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping


class PoolExhausted(Exception):
    """Every address (or block) of the pool is taken."""


class AddressNotAssignable(ValueError):
    """A requested endpoint address that the node's pod CIDR cannot give."""


def gateway_ip(cidr: str) -> str:
    """The node's router address inside its pod CIDR: the first host address."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address + 1)


def chained_block(cidr: str, prefixlen: int) -> str | None:
    """The part of a node's pod CIDR left to a chained plugin's IPAM: its last ``/prefixlen``.

    None when ``prefixlen`` is 0 (no chaining). The last block, so glia's own
    addresses (from the start of the CIDR, the gateway first) keep theirs when
    the setting changes; :class:`ValueError` when it is not a strict part of
    ``cidr`` (``prefixlen`` must be longer than the CIDR's and at most /30).
    """
    if prefixlen == 0:
        return None
    net = ipaddress.ip_network(cidr)
    if not net.prefixlen < prefixlen <= 30:
        raise ValueError(
            f"chained_prefix /{prefixlen} must be longer than the pod CIDR {cidr} and at most /30"
        )
    return str(list(net.subnets(new_prefix=prefixlen))[-1])


def check_assignable(cidr: str, ip: str) -> str:
    """``ip`` in its canonical form if an endpoint of ``cidr`` may have it.

    :class:`AddressNotAssignable` names the reason: not an IPv4 address, outside
    ``cidr``, or the network, gateway or broadcast address of ``cidr``.
    """
    net = ipaddress.ip_network(cidr)
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        raise AddressNotAssignable(f"{ip[:60]!r} is not an IP address") from None
    if addr.version != net.version:
        raise AddressNotAssignable(f"{addr} is not an IPv{net.version} address")
    if addr not in net:
        raise AddressNotAssignable(f"{addr} is outside this node's pod CIDR {cidr}")
    if addr == net.network_address:
        raise AddressNotAssignable(f"{addr} is the network address of {cidr}")
    if addr == net.network_address + 1:
        raise AddressNotAssignable(f"{addr} is the node's gateway address in {cidr}")
    if addr == net.broadcast_address:
        raise AddressNotAssignable(f"{addr} is the broadcast address of {cidr}")
    return str(addr)


def next_ip(
    cidr: str,
    used: Iterable[str],
    after: str | None = None,
    cooling: Mapping[str, float] | None = None,
) -> str:
    """Next free endpoint IP of ``cidr``, scanning round-robin from ``after``.

    Skips the network address, the gateway (first host) and broadcast. Starting
    after the last allocation delays reuse of a just-released IP, so a stale
    ipcache entry elsewhere in the mesh is unlikely to point at a new pod; so
    does ``cooling`` (released IP -> when): those are taken only when no other
    address is free, the one released longest ago first.
    """
    net = ipaddress.ip_network(cidr)
    first = int(net.network_address) + 2
    last = int(net.broadcast_address) - 1
    if last < first:
        raise PoolExhausted(f"{cidr} has no assignable endpoint addresses")
    taken = {_ip_int(ip) for ip in used}
    size = last - first + 1
    start = first
    if after is not None:
        a = int(ipaddress.ip_address(after))
        if first <= a <= last:
            start = a + 1 if a < last else first
    cool = {_ip_int(ip): at for ip, at in (cooling or {}).items()}
    for i in range(size):
        cand = first + (start - first + i) % size
        if cand not in taken and cand not in cool:
            return str(ipaddress.ip_address(cand))
    free_cooling = [(at, ip) for ip, at in cool.items() if ip not in taken and first <= ip <= last]
    if free_cooling:
        return str(ipaddress.ip_address(min(free_cooling)[1]))
    raise PoolExhausted(f"all {size} endpoint addresses of {cidr} are in use")


@functools.lru_cache(maxsize=4096)
def _ip_int(ip: str) -> int:
    # Cached: every ADD converts the node's whole pool (taken and cooling
    # addresses), and ipaddress parses at ~7 us an address.
    return int(ipaddress.ip_address(ip))


def next_block(pool: str, mask: int, used: Iterable[str]) -> str:
    """Lowest free ``/mask`` block of ``pool`` not overlapping any ``used`` CIDR."""
    net = ipaddress.ip_network(pool)
    if not net.prefixlen <= mask <= net.max_prefixlen:
        raise ValueError(
            f"node mask /{mask} must be between /{net.prefixlen} and /{net.max_prefixlen}"
        )
    taken = [ipaddress.ip_network(c) for c in used]
    for block in net.subnets(new_prefix=mask):
        if not any(block.overlaps(t) for t in taken):
            return str(block)
    raise PoolExhausted(f"no free /{mask} left in {pool}")
