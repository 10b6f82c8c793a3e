"""What a cluster's records may claim: its name and id, pod pools and service CIDR.

Built by the agent and the operator from their own configuration, and for a
remote cluster from its validated cluster record checked against the mesh
(:mod:`glia.validate.cluster`) — never from the records being checked: a
record cannot widen the bounds it is checked against.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from glia.model.cluster import MAX_CLUSTER_ID, ClusterInfo, validate_name
from glia.validate.errors import Rejected


@dataclass(frozen=True, slots=True)
class ClusterBounds:
    cluster: str
    cluster_id: int
    pod_pools: tuple[IPv4Network, ...] = ()  # empty: only the node CIDRs bound pod IPs
    service_cidr: IPv4Network | None = None  # None: frontends are not checked

    def __post_init__(self) -> None:
        validate_name("cluster", self.cluster)
        if not 1 <= self.cluster_id <= MAX_CLUSTER_ID:
            raise ValueError(f"cluster id {self.cluster_id} must be in 1..{MAX_CLUSTER_ID}")
        for pool in self.pod_pools:
            if self.service_cidr is not None and pool.overlaps(self.service_cidr):
                raise ValueError(f"pod pool {pool} overlaps service CIDR {self.service_cidr}")

    @classmethod
    def of(
        cls, cluster: str, cluster_id: int, pod_pool: str = "", service_cidr: str = ""
    ) -> ClusterBounds:
        """From configuration strings ("" = not configured)."""
        return cls(
            cluster,
            cluster_id,
            (ipaddress.IPv4Network(pod_pool),) if pod_pool else (),
            ipaddress.IPv4Network(service_cidr) if service_cidr else None,
        )

    @classmethod
    def from_info(cls, info: ClusterInfo) -> ClusterBounds:
        """A cluster's bounds from its (validated) cluster record."""
        return cls(
            info.name,
            info.id,
            tuple(ipaddress.IPv4Network(p) for p in info.pod_pools),
            ipaddress.IPv4Network(info.service_cidr) if info.service_cidr else None,
        )

    def pool_of(self, addr: IPv4Address | IPv4Network) -> IPv4Network | None:
        """The pod pool holding ``addr`` (an address or a block), None if none does."""
        for pool in self.pod_pools:
            if (addr in pool) if isinstance(addr, IPv4Address) else addr.subnet_of(pool):
                return pool
        return None

    def require_pool(self, addr: IPv4Address, what: str) -> None:
        """:class:`Rejected` unless ``addr`` is a host address of a pod pool (when any is set)."""
        if not self.pod_pools:
            return
        pool = self.pool_of(addr)
        if pool is None:
            pools = ", ".join(str(p) for p in self.pod_pools)
            raise Rejected(f"{what} {addr} is outside the pod pool ({pools})")
        if pool.prefixlen < 31 and addr in (pool.network_address, pool.broadcast_address):
            raise Rejected(f"{what} {addr} is the network or broadcast address of {pool}")
