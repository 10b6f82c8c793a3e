"""Cluster naming rules and the cluster record, shared by the lab, the agent and ClusterMesh.

- :func:`validate_name`: the rule for cluster and node names.
- :class:`ClusterRef`: a cluster as the mesh names it (name and id).
- :class:`ClusterInfo`: what a cluster's operator publishes about itself at
  ``glia/state/cluster/v1/<cluster>`` so other clusters of the mesh can
  tell whether it fits beside them (:mod:`glia.validate.cluster`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CLUSTER_ID = 255
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


def validate_name(kind: str, name: str) -> str:
    """Cluster and node names end up in etcd keys, file names and bpffs paths."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be 1-32 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """A cluster as the rest of the mesh knows it: its name and numeric id (1..255)."""

    name: str
    id: int

    def __post_init__(self) -> None:
        validate_name("cluster", self.name)
        if not 1 <= self.id <= MAX_CLUSTER_ID:
            raise ValueError(f"cluster id {self.id} must be in 1..{MAX_CLUSTER_ID}")


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """Value of ``glia/state/cluster/v1/<cluster>`` (written by that cluster's operator).

    Not checked on construction: a record read from etcd goes through
    :func:`glia.validate.cluster.check_cluster_info` before anything uses it.
    """

    name: str
    id: int  # 1..255; the cluster's identities are id << 16 | 256..65535
    pod_pools: list[str]  # CIDRs every pod IP of the cluster lies in, e.g. ["10.1.0.0/16"]
    service_cidr: str | None = None  # ClusterIPs; None when the cluster does not declare one
