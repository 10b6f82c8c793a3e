"""docs/config.md is what the generator makes, every key is described, configs are strict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glia.agent import config as agent_config
from glia.agent.config import AgentConfig
from glia.cli.main import app
from glia.deploy import configref
from glia.kvstore.config import EtcdConfig
from glia.model.codec import InvalidValue
from glia.operator import config as operator_config
from glia.operator.config import OperatorConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_generated() -> None:
    assert DOC.read_text() == configref.markdown(), (
        "docs/config.md is stale: run `glia config reference --out docs/config.md`"
    )


def test_every_key_has_a_description() -> None:
    assert configref.undocumented() == []


@pytest.mark.parametrize("cls", [AgentConfig, OperatorConfig, EtcdConfig])
def test_every_field_has_a_docstring(cls: type) -> None:
    docs = configref.field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)] == []


def test_reference_lists_every_field_with_type_and_default() -> None:
    by_section = {s.name: {k.key: k for k in s.keys} for s in configref.sections()}
    agent = by_section["agent"]
    assert set(agent) >= {f.name for f in dataclasses.fields(AgentConfig)}
    assert {f"config_etcd.{f.name}" for f in dataclasses.fields(EtcdConfig)} <= set(agent)
    assert agent["service_cidr"].type == "string" and agent["service_cidr"].default == ""
    assert agent["mtu"].default == 1450 and agent["mtu"].type == "integer"
    assert agent["cluster"].default == configref.REQUIRED
    assert agent["config_etcd"].type == "mapping or null"
    assert agent["runtime_env"].type == "mapping of string to string"
    assert agent["etcd.endpoints"].default == ["https://127.0.0.1:2379"]
    assert set(by_section["operator"]) >= {f.name for f in dataclasses.fields(OperatorConfig)}
    mesh = by_section["clustermesh"]
    assert list(mesh) == [
        "endpoints",
        "ca_file",
        "cert_file",
        "key_file",
        "cluster_id",
        "stale_after",
    ]
    assert mesh["ca_file"].type == "string" and mesh["ca_file"].default == configref.REQUIRED
    assert mesh["stale_after"].default == 300.0


def test_cli_writes_markdown_and_json(tmp_path: Path) -> None:
    out = tmp_path / "config.md"
    r = CliRunner().invoke(app, ["config", "reference", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text() == configref.markdown()
    r = CliRunner().invoke(app, ["config", "reference", "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    keys = {k["key"]: k for k in data["operator"]["keys"]}
    assert keys["node_mask_size"] == {
        "key": "node_mask_size",
        "type": "integer",
        "default": 24,
        "description": "Prefix length of each node's pod CIDR, taken from `pod_pool`.",
    }


def test_cli_refuses_an_unknown_format() -> None:
    r = CliRunner().invoke(app, ["config", "reference", "--format", "html"])
    assert r.exit_code == 2
    assert "html" in r.output


BASE_AGENT = "cluster: c1\ncluster_id: 1\nnode: n1\nnode_ip: 192.0.2.10\n"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("servce_cidr: 10.96.0.0/12\n", "unknown key 'servce_cidr'"),
        ("etcd: {endpoint: [https://x:2379]}\n", "unknown key 'etcd.endpoint'"),
        ("config_etcd: {ca: /x}\n", "unknown key 'config_etcd.ca'"),
        ("mtu: big\n", "mtu"),
        ("etcd: [\n", "not valid YAML"),
    ],
)
def test_agent_config_errors_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE_AGENT + extra)
    with pytest.raises(InvalidValue, match=message):
        agent_config.load(path)


def test_operator_config_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "operator.yaml"
    path.write_text("cluster: c1\ncluster_id: 1\npod_pool: 10.1.0.0/16\nnode_mask: 24\n")
    with pytest.raises(InvalidValue, match="unknown key 'node_mask'"):
        operator_config.load(path)


def test_agent_command_reports_a_bad_config_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(BASE_AGENT + "bogus: 1\n")
    r = CliRunner().invoke(app, ["agent", "--config", str(path)])
    assert r.exit_code == 2
    assert "unknown key 'bogus'" in r.output and "Traceback" not in r.output
