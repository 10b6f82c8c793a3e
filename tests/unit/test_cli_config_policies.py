"""``glia apply|delete -f`` of files mixing Services and CiliumNetworkPolicies, and
``glia get policies``, against the fake agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml
from test_agent_client import FakeAgent, running_fake_agent
from typer.testing import CliRunner

from glia.cli import config

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

WEB_SVC = """apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""
WEB_POLICY = """apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""
MIXED = WEB_SVC + "---\n" + WEB_POLICY
POLICY_MANIFEST: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
    },
}
SHOP_POLICY = {
    **POLICY_MANIFEST,
    "metadata": {"name": "db", "namespace": "shop"},
    "specs": [
        {"endpointSelector": {}, "egressDeny": [{"toEntities": ["world"]}]},
        {
            "endpointSelector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]
            },
            "ingress": [{"fromEntities": ["cluster"]}],
        },
    ],
}
del SHOP_POLICY["spec"]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)
    config.register(app)
    return app


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


def run(app: typer.Typer, *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def test_apply_of_a_mixed_file_prints_one_line_per_document(
    app: typer.Typer, agent: FakeAgent
) -> None:
    results = [
        {"kind": "service", "namespace": "default", "name": "web", "action": "created"},
        {"kind": "ciliumnetworkpolicy", "namespace": "default", "name": "web", "action": "created"},
    ]
    agent.answer("POST", "/v1/config/apply", (200, {"results": results}))
    r = run(app, "apply", "-f", "-", "--socket", agent.path, input=MIXED)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["service/web created", "ciliumnetworkpolicy/web created"]
    [body] = agent.bodies("/v1/config/apply")
    assert [d["kind"] for d in body["documents"]] == ["Service", "CiliumNetworkPolicy"]


def test_apply_names_every_bad_document_without_asking_the_agent(
    app: typer.Typer, agent: FakeAgent
) -> None:
    bad_policy = WEB_POLICY.replace("protocol: TCP", "protocol: SCTP")
    text = "\n---\n".join([WEB_SVC, "apiVersion: apps/v1\nkind: Deployment\n", bad_policy])
    r = run(app, "apply", "-f", "-", "--socket", agent.path, input=text)
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[0] == (
        "<stdin>: document 2: kind: expected v1 Service or cilium.io/v2 "
        'CiliumNetworkPolicy objects, got "Deployment"'
    )
    assert lines[1].startswith(
        "<stdin>: document 3 (CiliumNetworkPolicy default/web): "
        "spec.ingress[0].toPorts[0].ports[0].protocol:"
    ), lines
    assert len(lines) == 2
    assert agent.bodies("/v1/config/apply") == []


def test_delete_of_a_mixed_file(app: typer.Typer, agent: FakeAgent) -> None:
    results = [
        {"kind": "service", "namespace": "default", "name": "web", "action": "deleted"},
        {
            "kind": "ciliumnetworkpolicy",
            "namespace": "default",
            "name": "web",
            "action": "not found",
        },
    ]
    agent.answer("POST", "/v1/config/delete", (200, {"results": results}))
    r = run(app, "delete", "-f", "-", "--socket", agent.path, input=MIXED)
    assert r.exit_code == 1
    assert r.stdout == 'service "web" deleted\n'
    assert r.stderr == 'ciliumnetworkpolicy "web" not found in namespace "default"\n'
    r = run(app, "delete", "-f", "-", "--ignore-not-found", "--socket", agent.path, input=MIXED)
    assert r.exit_code == 0, r.output
    assert r.stderr == ""


def test_get_policies_table(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/policies?namespace=default", (200, [POLICY_MANIFEST]))
    r = run(app, "get", "policies", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "NAME  RULES  ENDPOINT-SELECTOR  SECTIONS",
        "web   1      app=web            ingress",
    ]


def test_get_policies_all_namespaces(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/policies", (200, [POLICY_MANIFEST, SHOP_POLICY]))
    r = run(app, "get", "cnp", "-A", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert rows[0] == ["default", "web", "1", "app=web", "ingress"]
    assert rows[1] == ["shop", "db", "2", "<all>", "|", "tier", "In", "(db)", "ingress,egressDeny"]


def test_get_policies_json_and_yaml(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/policies?namespace=shop", (200, [SHOP_POLICY]))
    r = run(app, "get", "policies", "-n", "shop", "-o", "json", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"apiVersion": "v1", "kind": "List", "items": [SHOP_POLICY]}
    r = run(app, "get", "policies", "-n", "shop", "-o", "yaml", "--socket", agent.path)
    assert yaml.safe_load(r.stdout)["items"] == [SHOP_POLICY]


def test_get_one_policy(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/policies?namespace=default&name=web", (200, [POLICY_MANIFEST]))
    r = run(app, "get", "policy", "web", "-o", "yaml", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == POLICY_MANIFEST
    agent.answer("GET", "/v1/config/policies?namespace=default&name=nope", (200, []))
    r = run(app, "get", "policies", "nope", "--socket", agent.path)
    assert r.exit_code == 1
    assert 'ciliumnetworkpolicy "nope" not found in namespace "default"' in r.stderr
    r = run(app, "get", "policies", "web", "-A", "--socket", agent.path)
    assert r.exit_code == 2


def test_get_policies_when_there_are_none(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/policies?namespace=default", (200, []))
    r = run(app, "get", "policies", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout == "No CiliumNetworkPolicies found in the default namespace.\n"


@pytest.mark.parametrize("kind", ["[]", "{a: 1}", "7", "null"])
def test_a_kind_of_any_yaml_type_is_named(app: typer.Typer, agent: FakeAgent, kind: str) -> None:
    r = run(app, "apply", "-f", "-", "--socket", agent.path, input=f"kind: {kind}\n")
    assert r.exit_code == 1
    assert "<stdin>: document 1: kind: expected v1 Service or cilium.io/v2" in r.stderr
    r = run(app, "delete", "-f", "-", "--socket", agent.path, input=f"kind: {kind}\n")
    assert r.exit_code == 1
    assert "<stdin>: document 1: kind: expected v1 Service or cilium.io/v2" in r.stderr
