"""A node of a cluster, as its agent publishes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    """Value of ``glia/state/nodes/v1/<cluster>/<node>`` (written by that node's agent)."""

    name: str
    cluster: str
    cluster_id: int
    node_ip: str  # underlay address: the VXLAN tunnel endpoint
    pod_cidr: str | None = None  # None until the operator has allocated one
    health_ip: str | None = None
    boot_id: str = ""  # changes on every agent start, so watchers see restarts


@dataclass(frozen=True, slots=True)
class PodCIDRAllocation:
    """Value of ``glia/state/podcidrs/v1/<cluster>/nodes/<node>`` (written by the operator)."""

    node: str
    cidr: str
