"""Configuration files of the lab's daemons: one agent per node, one operator per cluster.

Called by the lab before it starts its daemons (:mod:`glia.lab.base` builds
the configs, :mod:`glia.lab.daemons` and :mod:`glia.lab.lab` write them); the
builders are pure (the topology and the etcd client settings in, a config
object out) so unit tests check what the daemons will be told. :func:`write_yaml` writes
them in the format ``glia agent --config`` and ``glia operator --config`` load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from glia.agent.config import AgentConfig
from glia.kvstore.config import EtcdConfig
from glia.lab.etcd import MAX_TXN_OPS
from glia.lab.podman import podman_env
from glia.lab.topology import NODE_MASK_SIZE, ClusterSpec, NodeSpec, pod_pool, service_cidr
from glia.model import codec
from glia.operator.config import OperatorConfig


def agent_config(
    node: NodeSpec,
    etcd: EtcdConfig,
    bpf_obj_dir: Path,
    socket_lb_cgroup: Path | None = None,
    config_etcd: EtcdConfig | None = None,
) -> AgentConfig:
    """``etcd``: the node's own etcd user; ``config_etcd``: the CLI path's user, for
    ``glia apply`` through this agent (None: the agent serves no apply);
    ``socket_lb_cgroup``: the node's cgroup v2 directory (None: socket LB off)."""
    return AgentConfig(
        cluster=node.cluster,
        cluster_id=node.cluster_id,
        node=node.name,
        node_ip=str(node.ip),
        etcd=etcd,
        socket=str(node.socket),
        state_dir=str(node.state_dir),
        bpf_pin_dir=str(node.bpf_pin_dir),
        bpf_obj_dir=str(bpf_obj_dir),
        runtime="podman",
        runtime_env=podman_env(node),
        service_cidr=str(service_cidr(node.cluster_id)),
        pod_pool=str(pod_pool(node.cluster_id)),
        config_etcd=config_etcd,
        etcd_max_txn_ops=MAX_TXN_OPS,
        socket_lb_cgroup=str(socket_lb_cgroup) if socket_lb_cgroup is not None else "",
    )


def operator_config(cluster: ClusterSpec, etcd: EtcdConfig) -> OperatorConfig:
    return OperatorConfig(
        cluster=cluster.name,
        cluster_id=cluster.id,
        pod_pool=str(cluster.pod_pool),
        node_mask_size=NODE_MASK_SIZE,
        service_cidr=str(cluster.service_cidr),
        etcd=etcd,
        identity=cluster.operator_process,
    )


def write_yaml(path: Path, config: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(codec.to_dict(config), sort_keys=False))
