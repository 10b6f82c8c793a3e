"""glia config agent|operator: facts in, a file the daemons load out, or an error naming a fact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from glia.agent.config import AgentConfig
from glia.deploy import configgen
from glia.model import codec
from glia.operator.config import OperatorConfig

PKI = Path("/etc/glia/pki")


def _agent(**changes: Any) -> str:
    facts: dict[str, Any] = {
        "cluster": "c1",
        "cluster_id": 1,
        "node": "host-a",
        "node_ip": "192.0.2.10",
        "etcd": ["https://192.0.2.5:2379"],
        "pki": PKI,
        "pod_pool": "10.1.0.0/16",
        "service_cidr": "100.64.0.0/15",
    }
    return configgen.agent(**{**facts, **changes})


def test_the_agent_file_names_bootstraps_certificates_and_loads() -> None:
    text = _agent(
        node_networks=["192.0.2.0/24"],
        overrides=configgen.overrides_of(
            ["masquerade=true", "dns_upstreams=[192.0.2.1, 192.0.2.2]", "runtime_env.X=/y"]
        ),
    )
    cfg = codec.from_dict(AgentConfig, yaml.safe_load(text))
    assert cfg.etcd.cert_file == "/etc/glia/pki/glia-agent-host-a.crt"
    assert cfg.config_etcd is not None
    assert cfg.config_etcd.key_file == "/etc/glia/pki/glia-config.key"
    assert cfg.masquerade and cfg.dns_upstreams == ["192.0.2.1", "192.0.2.2"]
    assert cfg.runtime_env == {"X": "/y"}
    assert cfg.node_networks == ["192.0.2.0/24"]
    assert "config_etcd" not in yaml.safe_load(_agent(apply=False))


@pytest.mark.parametrize("listen", ["192.0.2.10:9962", ":9962"])
def test_prometheus_listen_is_taken_as_given(listen: str) -> None:
    text = _agent(overrides=configgen.overrides_of([f"prometheus_listen={listen}"]))
    assert codec.from_dict(AgentConfig, yaml.safe_load(text)).prometheus_listen == listen


def _operator(node_mask_size: int) -> str:
    return configgen.operator(
        cluster="c1",
        cluster_id=1,
        etcd=["https://e:2379"],
        pki=PKI,
        pod_pool="10.1.0.0/16",
        service_cidr="100.64.0.0/15",
        node_mask_size=node_mask_size,
    )


def test_the_operator_file_loads() -> None:
    text = _operator(26)
    cfg = codec.from_dict(OperatorConfig, yaml.safe_load(text))
    assert cfg.node_mask_size == 26 and cfg.etcd.cert_file == "/etc/glia/pki/glia-operator.crt"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cluster": "C_1"}, "cluster name 'C_1'"),
        ({"node": ""}, "node name ''"),
        ({"node_ip": "10.0.0.300"}, "--node-ip '10.0.0.300'"),
        ({"etcd": []}, "--etcd: at least one"),
        ({"etcd": ["http://e:2379"]}, "TLS only"),
        ({"pki": Path("pki")}, "--pki 'pki': must be an absolute path"),
        ({"pod_pool": "10.1.0.1/16"}, "--pod-pool '10.1.0.1/16'"),
        ({"node_networks": ["x"]}, "--node-network 'x'"),
        ({"overrides": [("masqerade", True)]}, "unknown key 'masqerade'"),
        ({"overrides": [("mtu", "big")]}, "mtu: Input should be a valid integer"),
        ({"overrides": [("node.x", 1)]}, "--set node.x: node is not a mapping"),
        ({"overrides": [("etcd.colour", "red")]}, "unknown key 'etcd.colour'"),
    ],
)
def test_a_wrong_fact_is_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(configgen.ConfigGenError, match=message.replace(".", r"\.")):
        _agent(**changes)


@pytest.mark.parametrize("text", ["novalue", "=1", "x=[unclosed"])
def test_a_bad_set_is_named(text: str) -> None:
    with pytest.raises(configgen.ConfigGenError, match="--set"):
        configgen.parse_override(text)


def test_node_mask_must_fit_the_pool() -> None:
    with pytest.raises(configgen.ConfigGenError, match="--node-mask-size 16"):
        _operator(16)


def test_write_file_is_atomic_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "agent.yaml"
    configgen.write_file(path, "a: 1\n")
    assert path.read_text() == "a: 1\n" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["agent.yaml"]
