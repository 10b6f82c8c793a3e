"""Daemon configuration files the lab writes (glia.lab.configs): what agents and operators get."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from glia.agent import config as agent_config
from glia.kvstore.config import EtcdConfig
from glia.lab import configs, topology
from glia.operator import config as operator_config

ETCD = EtcdConfig(
    endpoints=["https://198.18.2.254:2379"],
    ca_file="/run/glia/lab/clusters/c2/pki/glia-ca.crt",
    cert_file="/run/glia/lab/clusters/c2/pki/user-glia.crt",
    key_file="/run/glia/lab/clusters/c2/pki/user-glia.key",
)


def test_agent_config_round_trips_through_the_agent_loader(tmp_path: Path) -> None:
    topo = topology.build("glia", 2, 2, Path("/run/glia/lab"))
    node = topo.node("c2", "n1")
    cgroup = node.cgroup(Path("/sys/fs/cgroup/unified"))
    cfg = configs.agent_config(node, ETCD, Path("/src/build/bpf"), socket_lb_cgroup=cgroup)
    path = tmp_path / "agent.yaml"
    configs.write_yaml(path, cfg)
    loaded = agent_config.load(path)
    assert loaded == cfg
    assert (loaded.cluster, loaded.cluster_id, loaded.node) == ("c2", 2, "n1")
    assert loaded.node_ip == "198.18.2.1"
    assert loaded.socket == "/run/glia/lab/nodes/c2-n1/agent.sock"
    assert loaded.state_dir == "/run/glia/lab/nodes/c2-n1/state"
    assert loaded.bpf_pin_dir == "/sys/fs/bpf/glia/lab-glia/c2-n1"
    assert loaded.runtime == "podman"
    assert loaded.runtime_env == {
        "CONTAINERS_CONF": "/run/glia/lab/nodes/c2-n1/containers.conf",
        "CONTAINERS_STORAGE_CONF": "/run/glia/lab/nodes/c2-n1/storage.conf",
    }
    assert loaded.etcd == ETCD
    assert loaded.socket_lb_cgroup == "/sys/fs/cgroup/unified/glia-lab-glia-c2-n1"


def test_socket_lb_is_off_without_a_cgroup() -> None:
    node = topology.build("glia", 1, 1, Path("/run/glia/lab")).nodes[0]
    assert configs.agent_config(node, ETCD, Path("/src/build/bpf")).socket_lb_cgroup == ""


def test_operator_config_round_trips_and_keeps_services_apart(tmp_path: Path) -> None:
    topo = topology.build("glia", 3, 1, Path("/run/glia/lab"))
    cfgs = []
    for cluster in topo.clusters:
        path = tmp_path / f"{cluster.name}.yaml"
        configs.write_yaml(path, configs.operator_config(cluster, ETCD))
        cfgs.append(operator_config.load(path))
    assert [c.pod_pool for c in cfgs] == ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]
    assert all(c.node_mask_size == 24 for c in cfgs)
    assert [c.identity for c in cfgs] == ["c1-operator", "c2-operator", "c3-operator"]
    services = [ipaddress.ip_network(c.service_cidr) for c in cfgs]
    pools = [ipaddress.ip_network(c.pod_pool) for c in cfgs]
    assert not any(s.overlaps(o) for s in services for o in services if s is not o)
    assert not any(s.overlaps(p) for s in services for p in pools)
