"""ClusterIP addresses: which are usable in a service CIDR, and picking free ones.

Pure. Called by :mod:`glia.service.manifest_fields` (a given ``spec.clusterIP`` must
lie in the CIDR) and :mod:`glia.service.store` (allocation; the store's etcd
transaction is what guarantees an address is never handed out twice).

As Kubernetes' allocator does, every address of the CIDR but the network and
broadcast addresses is usable, the first one (network + 1) included. Free
addresses are picked from a random start and scanned upwards, so concurrent
appliers rarely race for the same one (a race costs a retry, never a duplicate).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable

MAX_PREFIX = 30  # a /31 or /32 has no address besides network and broadcast


class ClusterIPError(ValueError):
    """A service CIDR that cannot be used."""


class ClusterIPExhausted(ClusterIPError):
    """No free address left in the service CIDR."""


def parse_cidr(cidr: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as e:
        raise ClusterIPError(
            f"service CIDR {cidr!r} is not a network address/prefix: {e}"
        ) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ClusterIPError(f"service CIDR {cidr} is not IPv4 (IPv6 Services are not supported)")
    if net.prefixlen > MAX_PREFIX:
        raise ClusterIPError(f"service CIDR {cidr} is too small: use a /{MAX_PREFIX} or larger")
    return net


def capacity(cidr: str) -> int:
    """How many ClusterIPs the CIDR holds."""
    return parse_cidr(cidr).num_addresses - 2


def check(ip: str, cidr: str) -> str | None:
    """Why ``ip`` cannot be a ClusterIP of ``cidr`` (a message), or None if it can."""
    net = parse_cidr(cidr)
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return f"expected an IPv4 address, got {ip!r}"
    if addr not in net:
        return f"{ip} is outside the service CIDR {cidr}"
    if addr in (net.network_address, net.broadcast_address):
        kind = "network" if addr == net.network_address else "broadcast"
        return f"{ip} is the {kind} address of the service CIDR {cidr}"
    return None


def allocate(
    cidr: str, used: Iterable[str], count: int = 1, *, rng: random.Random | None = None
) -> list[str]:
    """``count`` distinct usable addresses of ``cidr`` not in ``used``."""
    net = parse_cidr(cidr)
    first = int(net.network_address) + 1
    size = net.num_addresses - 2
    taken = set()
    for ip in used:
        try:
            n = int(ipaddress.IPv4Address(ip)) - first
        except ValueError:
            continue
        if 0 <= n < size:
            taken.add(n)
    if size - len(taken) < count:
        raise ClusterIPExhausted(
            f"the service CIDR {cidr} has {size - len(taken)} free ClusterIPs, {count} needed"
        )
    start = (rng or random).randrange(size)
    out: list[str] = []
    for i in range(size):
        n = (start + i) % size
        if n not in taken:
            out.append(str(ipaddress.IPv4Address(first + n)))
            if len(out) == count:
                break
    return out
