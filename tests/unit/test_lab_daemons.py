"""Reconfiguring a lab daemon (glia.lab.daemons): a bad setting is refused before anything stops.

No lab runs here: the daemons' config files are written by hand, and a refused
change must leave them as they were and start or stop nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from glia.kvstore.config import EtcdConfig
from glia.lab import configs, topology
from glia.lab.lab import Lab, LabError

ETCD = EtcdConfig(endpoints=["https://198.18.1.254:2379"])


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    topo = topology.build("gliaunit", 1, 1, tmp_path / "glia-lab")
    c = topo.clusters[0]
    n = c.nodes[0]
    configs.write_yaml(n.agent_config, configs.agent_config(n, ETCD, tmp_path / "bpf"))
    configs.write_yaml(c.operator_config, configs.operator_config(c, ETCD))
    return Lab(topo)


def test_an_unknown_agent_setting_is_refused_and_nothing_changes(lab: Lab) -> None:
    n = lab.node("c1/n1")
    before = n.agent_config.read_text()
    with pytest.raises(LabError, match=r"^c1/n1: invalid agent setting: .*no_such_setting"):
        lab.reconfigure_agent("c1/n1", no_such_setting=5)
    assert n.agent_config.read_text() == before
    assert lab.state() is None  # nothing was stopped or started


def test_an_unknown_operator_setting_is_refused_and_nothing_changes(lab: Lab) -> None:
    c = lab.topo.cluster("c1")
    before = c.operator_config.read_text()
    with pytest.raises(LabError, match=r"^c1: invalid operator setting: .*socket"):
        lab.reconfigure_operator("c1", socket="/tmp/x.sock")  # an agent setting, not an operator's
    assert c.operator_config.read_text() == before
    assert lab.state() is None
