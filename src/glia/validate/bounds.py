"""What a cluster's records may claim: its name and id, pod pool and service CIDR.

Built by the agent and the operator from their own configuration (never from
the kvstore: a record cannot widen the bounds it is checked against).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Network

from glia.model.cluster import MAX_CLUSTER_ID, validate_name


@dataclass(frozen=True, slots=True)
class ClusterBounds:
    cluster: str
    cluster_id: int
    pod_pool: IPv4Network | None = None  # None: only the node CIDRs bound pod IPs
    service_cidr: IPv4Network | None = None  # None: frontends are not checked

    def __post_init__(self) -> None:
        validate_name("cluster", self.cluster)
        if not 1 <= self.cluster_id <= MAX_CLUSTER_ID:
            raise ValueError(f"cluster id {self.cluster_id} must be in 1..{MAX_CLUSTER_ID}")
        if (
            self.pod_pool is not None
            and self.service_cidr is not None
            and self.pod_pool.overlaps(self.service_cidr)
        ):
            raise ValueError(f"pod pool {self.pod_pool} overlaps service CIDR {self.service_cidr}")

    @classmethod
    def of(
        cls, cluster: str, cluster_id: int, pod_pool: str = "", service_cidr: str = ""
    ) -> ClusterBounds:
        """From configuration strings ("" = not configured)."""
        return cls(
            cluster,
            cluster_id,
            ipaddress.IPv4Network(pod_pool) if pod_pool else None,
            ipaddress.IPv4Network(service_cidr) if service_cidr else None,
        )
