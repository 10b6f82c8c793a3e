"""Configuration files of the lab's daemons: one agent per node, one operator per cluster.

Called by the lab before it starts its daemons (:mod:`glia.lab.base` builds
the configs, :mod:`glia.lab.daemons` and :mod:`glia.lab.lab` write them); the
builders are pure (the topology and the etcd client settings in, a config
object out) so unit tests check what the daemons will be told. :func:`write_yaml` writes
them in the format ``glia agent --config`` and ``glia operator --config`` load.

In a lab of several clusters every agent also gets a remote cluster directory
(docs/clustermesh.md): :func:`clustermesh_files` says what goes in it, one
``<cluster>.yaml`` per other cluster naming that cluster's etcd, its CA and its
read-only user's (``glia-remote``) certificate; :func:`write_clustermesh_dir`
writes them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from glia.agent.config import AgentConfig
from glia.kvstore.config import EtcdConfig
from glia.lab.etcd import MAX_TXN_OPS
from glia.lab.podman import podman_env
from glia.lab.topology import (
    CHAINED_PREFIX,
    NODE_MASK_SIZE,
    UNDERLAY,
    ClusterSpec,
    NodeSpec,
    pod_pool,
    service_cidr,
)
from glia.model import codec
from glia.operator.config import OperatorConfig

AGENT_METRICS_PORT = 9962  # cilium-agent's Prometheus port
OPERATOR_METRICS_PORT = 9963  # cilium-operator's


def agent_config(
    node: NodeSpec,
    etcd: EtcdConfig,
    bpf_obj_dir: Path,
    socket_lb_cgroup: Path | None = None,
    config_etcd: EtcdConfig | None = None,
    clustermesh_dir: Path | None = None,
) -> AgentConfig:
    """``etcd``: the node's own etcd user; ``config_etcd``: the CLI path's user, for
    ``glia apply`` through this agent (None: the agent serves no apply);
    ``socket_lb_cgroup``: the node's cgroup v2 directory (None: socket LB off);
    ``clustermesh_dir``: its remote cluster directory (None: a cluster alone)."""
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
        clustermesh_dir=str(clustermesh_dir) if clustermesh_dir is not None else "",
        node_networks=[str(UNDERLAY)],
        masquerade=True,
        chained_prefix=CHAINED_PREFIX,
        docker_plugin_socket=str(node.docker_plugin_socket),
        docker_api_socket=str(node.docker_dir / "docker.sock"),
        # In the node's namespace only, as cilium-agent's port: reachable from the
        # lab's namespaces (`glia lab exec`, other nodes), never from the host's.
        prometheus_listen=f"{node.ip}:{AGENT_METRICS_PORT}",
    )


def remote_cluster_file(cluster: ClusterSpec, etcd: EtcdConfig) -> dict[str, Any]:
    """The file by which agents of other clusters read ``cluster`` (docs/clustermesh.md).

    ``etcd``: ``cluster``'s etcd as its read-only user (``glia-remote``):
    endpoints, CA, that user's certificate and key, all absolute paths. The
    file also names the cluster's id, so a cluster whose record carries
    another id is refused.
    """
    files = {"ca_file": etcd.ca_file, "cert_file": etcd.cert_file, "key_file": etcd.key_file}
    for what, path in files.items():
        if not path or not Path(path).is_absolute():
            raise ValueError(f"{cluster.name}: the remote cluster file needs an absolute {what}")
    return {"endpoints": list(etcd.endpoints), **files, "cluster_id": cluster.id}


def clustermesh_files(
    node: NodeSpec, remotes: Sequence[tuple[ClusterSpec, EtcdConfig]]
) -> dict[str, dict[str, Any]]:
    """File name -> content of ``node``'s remote cluster directory: one ``<cluster>.yaml``
    per cluster of ``remotes`` other than the node's own (whose etcd it reads as itself)."""
    return {
        f"{c.name}.yaml": remote_cluster_file(c, etcd)
        for c, etcd in remotes
        if c.name != node.cluster
    }


def write_clustermesh_dir(directory: Path, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``files`` into ``directory``, each atomically: a hidden temporary file renamed
    over the old one, so the agent's watcher never reads half a file (it ignores hidden
    names). Other files in the directory are left alone."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = yaml.safe_dump(dict(content), sort_keys=False)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def operator_config(cluster: ClusterSpec, etcd: EtcdConfig) -> OperatorConfig:
    return OperatorConfig(
        cluster=cluster.name,
        cluster_id=cluster.id,
        pod_pool=str(cluster.pod_pool),
        node_mask_size=NODE_MASK_SIZE,
        service_cidr=str(cluster.service_cidr),
        etcd=etcd,
        identity=cluster.operator_process,
        # In the namespace of the node it runs in, next to that node's agent (9962).
        prometheus_listen=f"{cluster.operator_node.ip}:{OPERATOR_METRICS_PORT}",
    )


def write_yaml(path: Path, config: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(codec.to_dict(config), sort_keys=False))
