"""Daemon configuration files the lab writes (glia.lab.configs): what agents and operators get,
and each agent's remote cluster directory in a lab of several clusters."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from glia.agent import config as agent_config
from glia.clustermesh import configdir
from glia.clustermesh.config import DEFAULT_STALE_AFTER
from glia.kvstore.config import EtcdConfig
from glia.kvstore.rbac import RO_USER
from glia.lab import configs, topology
from glia.lab.base import LabBase
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
    assert loaded.chained_prefix == 26  # the glia-chained network's block (docs/chaining.md)
    assert loaded.prometheus_listen == "198.18.2.1:9962"  # in the node's namespace only


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


# -- the remote cluster directory of a lab of several clusters ----------------------------


def remote_etcd(cluster: str) -> EtcdConfig:
    cid = cluster.removeprefix("c")
    pki = f"/run/glia/lab/clusters/{cluster}/pki"
    return EtcdConfig(
        endpoints=[f"https://198.18.{cid}.254:2379"],
        ca_file=f"{pki}/glia-ca.crt",
        cert_file=f"{pki}/user-glia-remote.crt",
        key_file=f"{pki}/user-glia-remote.key",
    )


def test_each_agent_gets_one_file_per_other_cluster() -> None:
    topo = topology.build("glia", 3, 2, Path("/run/glia/lab"))
    remotes = [(c, remote_etcd(c.name)) for c in topo.clusters]
    files = configs.clustermesh_files(topo.node("c2", "n1"), remotes)
    assert sorted(files) == ["c1.yaml", "c3.yaml"]
    assert files["c3.yaml"] == {
        "endpoints": ["https://198.18.3.254:2379"],
        "ca_file": "/run/glia/lab/clusters/c3/pki/glia-ca.crt",
        "cert_file": "/run/glia/lab/clusters/c3/pki/user-glia-remote.crt",
        "key_file": "/run/glia/lab/clusters/c3/pki/user-glia-remote.key",
        "cluster_id": 3,
    }
    assert files["c1.yaml"]["cluster_id"] == 1
    # Same node name in another cluster: its own cluster is the one left out.
    assert sorted(configs.clustermesh_files(topo.node("c1", "n1"), remotes)) == [
        "c2.yaml",
        "c3.yaml",
    ]


def test_a_cluster_alone_has_no_remote_files() -> None:
    topo = topology.build("glia", 1, 2, Path("/run/glia/lab"))
    remotes = [(c, remote_etcd(c.name)) for c in topo.clusters]
    assert configs.clustermesh_files(topo.nodes[0], remotes) == {}


def test_the_agent_config_names_the_directory(tmp_path: Path) -> None:
    node = topology.build("glia", 2, 2, Path("/run/glia/lab")).node("c1", "n2")
    assert node.clustermesh_dir == Path("/run/glia/lab/nodes/c1-n2/clustermesh")
    cfg = configs.agent_config(
        node, ETCD, Path("/src/build/bpf"), clustermesh_dir=node.clustermesh_dir
    )
    configs.write_yaml(tmp_path / "agent.yaml", cfg)
    loaded = agent_config.load(tmp_path / "agent.yaml")
    assert loaded.clustermesh_dir == "/run/glia/lab/nodes/c1-n2/clustermesh"
    assert configs.agent_config(node, ETCD, Path("/src/build/bpf")).clustermesh_dir == ""


@pytest.mark.parametrize("field", ["ca_file", "cert_file", "key_file"])
@pytest.mark.parametrize("value", [None, "pki/relative.crt"])
def test_a_remote_file_needs_absolute_tls_paths(field: str, value: str | None) -> None:
    cluster = topology.build("glia", 2, 1, Path("/run/glia/lab")).cluster("c2")
    etcd = dataclasses.replace(remote_etcd("c2"), **{field: value})
    with pytest.raises(ValueError, match=f"c2: the remote cluster file needs an absolute {field}"):
        configs.remote_cluster_file(cluster, etcd)


def test_written_files_replace_old_ones_and_leave_others(tmp_path: Path) -> None:
    d = tmp_path / "clustermesh"
    d.mkdir()
    (d / "c2.yaml").write_text("endpoints: [https://old:2379]\n")
    (d / "README").write_text("kept\n")
    content = configs.remote_cluster_file(
        topology.build("glia", 2, 1, Path("/run/glia/lab")).cluster("c2"), remote_etcd("c2")
    )
    configs.write_clustermesh_dir(d, {"c2.yaml": content})
    assert sorted(p.name for p in d.iterdir()) == ["README", "c2.yaml"]  # no temporary left
    assert yaml.safe_load((d / "c2.yaml").read_text()) == content
    assert (d / "README").read_text() == "kept\n"
    assert (d / "c2.yaml").stat().st_mode & 0o777 == 0o644


def _ca_subject_key(path: str) -> bytes:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_a_labs_files_load_as_the_agent_loads_them(tmp_path: Path) -> None:
    """Certificates issued for real (no etcd needed): each file parses, its TLS files are
    the other cluster's CA and that cluster's glia-remote certificate, and its key fits."""
    topo = topology.build("gliaunit", 2, 2, tmp_path / "glia-lab")
    lab = LabBase(topo)
    written = {n.ref: lab.write_clustermesh_dir(n.ref) for n in topo.nodes}
    assert written["c1/n1"] == topo.node("c1", "n1").clustermesh_dir
    assert lab.agent_config("c2/n2").clustermesh_dir == str(written["c2/n2"])
    for node in topo.nodes:
        d = written[node.ref]
        assert d is not None
        other = "c2" if node.cluster == "c1" else "c1"
        assert sorted(p.name for p in d.iterdir()) == [f"{other}.yaml"]
        cfg = configdir.load_file(d / f"{other}.yaml", other)
        assert cfg.name == other
        assert cfg.cluster_id == topo.cluster(other).id
        assert cfg.etcd.endpoints == [topo.cluster(other).etcd_endpoint]
        assert cfg.etcd.ca_file == str(topo.cluster(other).pki_dir / "glia-ca.crt")
        assert cfg.stale_after == DEFAULT_STALE_AFTER
        assert cfg.etcd.cert_file is not None
        cert = x509.load_pem_x509_certificate(Path(cfg.etcd.cert_file).read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == RO_USER
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == _ca_subject_key(str(cfg.etcd.ca_file))
        scan = configdir.scan(d)
        assert (sorted(scan.configs), scan.errors) == ([other], {})
    # The two clusters have CAs of their own: c1's certificate is no good for c2.
    c1_ca = _ca_subject_key(str(topo.cluster("c1").pki_dir / "glia-ca.crt"))
    assert c1_ca != _ca_subject_key(str(topo.cluster("c2").pki_dir / "glia-ca.crt"))


def test_a_lab_of_one_cluster_has_no_directory(tmp_path: Path) -> None:
    topo = topology.build("gliaunit", 1, 2, tmp_path / "glia-lab")
    lab = LabBase(topo)
    assert not lab.meshed
    assert lab.write_clustermesh_dir("c1/n1") is None
    assert not topo.node("c1", "n1").clustermesh_dir.exists()
    assert lab.agent_config("c1/n1").clustermesh_dir == ""
