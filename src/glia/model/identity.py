"""Security identities: a numeric id standing for a set of labels.

Layout (STABLE: the id rides in the VXLAN VNI and in BPF maps):
- 0..255 are reserved identities, the same in every cluster;
- a cluster's allocated identities are ``cluster_id << 16 | n`` with n in
  256..65535 and cluster_id in 1..255, so an id tells which cluster minted it
  and fits the 24-bit VNI.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field

from glia.model.cluster import MAX_CLUSTER_ID

CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"

MIN_LOCAL = 256
MAX_LOCAL = 0xFFFF


class ReservedIdentity(enum.IntEnum):
    """Numbering as in Cilium, so people reading flows recognise them."""

    UNKNOWN = 0
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6


def make_cluster_identity(cluster_id: int, n: int) -> int:
    if not 1 <= cluster_id <= MAX_CLUSTER_ID:
        raise ValueError(f"cluster id {cluster_id} must be in 1..{MAX_CLUSTER_ID}")
    if not MIN_LOCAL <= n <= MAX_LOCAL:
        raise ValueError(f"identity index {n} must be in {MIN_LOCAL}..{MAX_LOCAL}")
    return cluster_id << 16 | n


def identity_cluster(identity: int) -> int:
    """Cluster id that minted ``identity``; 0 for reserved identities."""
    return 0 if identity < MIN_LOCAL else identity >> 16


def labels_key(labels: dict[str, str]) -> str:
    """Stable digest of a label set, used as an etcd key component."""
    canon = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Identity:
    """Numeric identity and the label set it stands for."""

    id: int
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def reserved(self) -> bool:
        return self.id < MIN_LOCAL
