"""Agent configuration: one YAML (or JSON) file per node, ``glia agent --config FILE``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from glia.kvstore.config import EtcdConfig
from glia.model import codec

DEFAULT_SOCKET = "/run/glia/agent.sock"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    cluster: str  # this node's cluster name
    cluster_id: int  # 1..255
    node: str  # this node's name
    node_ip: str  # underlay address, VXLAN tunnel endpoint
    etcd: EtcdConfig = field(default_factory=EtcdConfig)  # this node's own etcd user
    # The CLI path's etcd user (declared resources, `glia apply` through this
    # agent's API); None: this agent serves no apply. Apart from `etcd` so the
    # node's own user can write only its node's records (glia.kvstore.rbac).
    config_etcd: EtcdConfig | None = None
    # The etcd server's --max-txn-ops: `glia apply` stores a file in one
    # transaction of two operations per Service, so this bounds a file's size
    # (128, etcd's default, is ~64 Services; the lab's etcd allows 10000).
    etcd_max_txn_ops: int = 128
    # ClusterMesh: a directory with one file per remote cluster (docs/clustermesh.md),
    # watched at run time; "" = this cluster is alone.
    clustermesh_dir: str = ""
    socket: str = DEFAULT_SOCKET  # REST API (root-only unix socket)
    state_dir: str = "/var/lib/glia"  # endpoint records and IPAM, survive restarts
    bpf_pin_dir: str = "/sys/fs/bpf/glia/node"  # per-node: pins outlive the agent
    bpf_obj_dir: str = ""  # compiled BPF objects; "" = build/bpf of the source tree
    mtu: int = 1450  # pod MTU (underlay 1500 minus VXLAN overhead)
    vxlan_port: int = 8472
    lease_ttl: int = 15  # seconds: a dead agent's keys vanish after this
    service_cidr: str = ""  # the cluster's ClusterIP range; `glia apply` allocates from it
    # The cluster's pod pool (the operator's pod_pool): no record read from the
    # kvstore may claim a pod address outside it. "" = only node CIDRs bound them.
    pod_pool: str = ""
    # Socket-level load-balancing: a cgroup v2 directory whose processes'
    # connect()/sendmsg() to a VIP go straight to a backend (no per-packet NAT).
    # On a host: the cgroup2 root (all pods and the host itself); in the lab:
    # the node's own cgroup, which the OCI hook puts the node's containers in.
    # "" = off: VIPs are still load-balanced per packet by from_endpoint.
    socket_lb_cgroup: str = ""
    # Environment for ``podman inspect`` when resolving workload labels
    # (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF of this node's podman).
    runtime: str = "podman"  # "podman" or "none" (labels only from CNI args)
    runtime_env: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"


def load(path: str | Path) -> AgentConfig:
    data = yaml.safe_load(Path(path).read_text())
    return codec.from_dict(AgentConfig, data)
