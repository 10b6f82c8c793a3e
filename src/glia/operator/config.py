"""Operator configuration: one file per cluster, ``glia operator --config FILE``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from glia.kvstore.config import EtcdConfig
from glia.model import codec


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """One cluster's operator. Each field's docstring is its entry in docs/config.md
    (:mod:`glia.deploy.configref` reads them)."""

    cluster: str
    """The cluster's name (every agent's `cluster`)."""
    cluster_id: int
    """The cluster's id, 1..255, unique in a mesh (every agent's `cluster_id`)."""
    pod_pool: str
    """The cluster's pod addresses, e.g. 10.1.0.0/16; each node gets a /node_mask_size block."""
    node_mask_size: int = 24
    """Prefix length of each node's pod CIDR, taken from `pod_pool`."""
    service_cidr: str = ""
    """The cluster's ClusterIP range (every agent's `service_cidr`)."""
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    """The operator's etcd user (certificate CN glia-operator)."""
    identity: str = ""
    """This replica's name for leader election; "" = hostname-pid."""
    lease_ttl: int = 15
    """Seconds: a dead operator's leadership and keys vanish after this."""
    identity_gc_interval: float = 30.0
    """Seconds between identity garbage-collection passes."""
    identity_gc_grace: float = 60.0
    """Seconds an identity no endpoint references survives before it is collected."""
    heartbeat_interval: float = 5.0
    """Seconds between writes of the cluster heartbeat (other clusters judge liveness by it)."""
    prometheus_listen: str = ""
    """Prometheus metrics (docs/metrics.md): "ADDR:PORT" serves /metrics over HTTP there
    (cilium-operator's port is 9963); "" = off."""
    log_level: str = "info"
    """Logging level: debug, info, warning or error."""


def load(path: str | Path) -> OperatorConfig:
    """Read and check a config file; :class:`~glia.model.codec.InvalidValue` names
    the key that is wrong (unknown keys too), :class:`OSError` an unreadable file."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise codec.InvalidValue(f"OperatorConfig: not valid YAML ({e})") from None
    codec.check_keys(OperatorConfig, data)
    return codec.from_dict(OperatorConfig, data)
