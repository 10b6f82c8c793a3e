"""Operator configuration: one file per cluster, ``glia operator --config FILE``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from glia.kvstore.config import EtcdConfig
from glia.model import codec


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    cluster: str
    cluster_id: int
    pod_pool: str  # e.g. 10.1.0.0/16; each node gets a /node_mask_size block
    node_mask_size: int = 24
    service_cidr: str = ""  # ClusterIPs are allocated from here (issue 3)
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    identity: str = ""  # this replica's name for leader election; "" = hostname-pid
    lease_ttl: int = 15
    identity_gc_interval: float = 30.0  # seconds between identity GC passes
    identity_gc_grace: float = 60.0  # an unreferenced identity survives this long
    heartbeat_interval: float = 5.0
    log_level: str = "info"


def load(path: str | Path) -> OperatorConfig:
    data = yaml.safe_load(Path(path).read_text())
    return codec.from_dict(OperatorConfig, data)
