"""The lab's node set up as on a host (glia.lab.hostsetup): `glia config agent` can say what
the lab tells its other nodes, and the agent starts as its systemd unit says."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glia.agent import config as agent_config
from glia.cli.main import app
from glia.deploy import systemd
from glia.kvstore.config import EtcdConfig
from glia.lab import configs, hostsetup, topology

LAB = Path("/run/glia/lab")


def _etcd(user: str) -> EtcdConfig:
    pki = "/run/glia/lab/clusters/c1/pki"
    return EtcdConfig(
        endpoints=["https://198.18.1.254:2379"],
        ca_file=f"{pki}/glia-ca.crt",
        cert_file=f"{pki}/user-{user}.crt",
        key_file=f"{pki}/user-{user}.key",
    )


@pytest.mark.parametrize("clusters", [1, 2])
def test_config_agent_writes_what_the_lab_gives_its_other_nodes(
    tmp_path: Path, clusters: int
) -> None:
    topo = topology.build("glia", clusters, 2, LAB)
    node = topo.host_setup_node
    assert (node.cluster, node.name) == ("c1", "n2")
    wanted = configs.agent_config(
        node,
        _etcd("glia-agent-n2"),
        Path("/src/build/bpf"),
        socket_lb_cgroup=Path("/sys/fs/cgroup/glia-lab-glia-c1-n2"),
        config_etcd=_etcd("glia-config"),
        clustermesh_dir=node.clustermesh_dir if clusters > 1 else None,
    )
    pki, out = tmp_path / "pki", tmp_path / "agent.yaml"
    args = hostsetup.config_agent_args(wanted, pki, out)
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    written = agent_config.load(out)
    assert hostsetup.differences(written, wanted, pki) == []
    assert written.etcd.cert_file == f"{pki}/glia-agent-n2.crt"
    assert written.config_etcd is not None
    assert written.config_etcd.cert_file == f"{pki}/glia-config.crt"
    # A value the generator could not carry would show.
    other = dataclasses.replace(wanted, lease_ttl=7)
    assert hostsetup.differences(written, other, pki) == ["lease_ttl: 15 instead of 7"]


def test_differences_name_foreign_certificates(tmp_path: Path) -> None:
    node = topology.build("glia", 1, 2, LAB).host_setup_node
    cfg = configs.agent_config(node, _etcd("glia-agent-n2"), Path("/b"))
    assert hostsetup.differences(cfg, cfg, tmp_path) == [
        f"etcd: certificates {cfg.etcd.cert_file} not from {tmp_path}"
    ]


def test_the_agent_runs_the_units_exec_start(tmp_path: Path) -> None:
    node = topology.build("glia", 1, 2, tmp_path / "glia-lab").host_setup_node
    hostsetup.units_dir(node).mkdir(parents=True)
    glia = "/opt/glia/bin/glia"
    systemd.write(hostsetup.units_dir(node), glia, {"glia-agent.service": str(node.agent_config)})
    assert hostsetup.agent_argv(node) == [glia, "agent", "--config", str(node.agent_config)]
    text = (hostsetup.units_dir(node) / "glia-agent.service").read_text()
    assert f"ConditionPathExists={node.agent_config}\n" in text


def test_a_missing_unit_is_a_lab_error(tmp_path: Path) -> None:
    node = topology.build("glia", 1, 1, tmp_path / "glia-lab").host_setup_node
    with pytest.raises(hostsetup.LabError, match="cannot read the agent's unit"):
        hostsetup.agent_argv(node)
