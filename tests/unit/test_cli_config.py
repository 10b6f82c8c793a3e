"""``glia apply|delete -f`` and ``glia get services`` against the fake agent."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml
from test_agent_client import FakeAgent, error, running_fake_agent
from typer.testing import CliRunner

from glia.agent.client import AgentClient
from glia.cli import config
from glia.service.manifest import load_yaml

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

WEB = """apiVersion: v1
kind: Service
metadata:
  name: web
  creationTimestamp: 2024-01-01T00:00:00Z
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"""
DB = WEB.replace("name: web", "name: db").replace("app: web", "app: db")
WEB_MANIFEST: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "type": "ClusterIP",
        "clusterIP": "100.64.0.10",
        "clusterIPs": ["100.64.0.10"],
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
            {"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
        ],
        "sessionAffinity": "None",
    },
}
SHOP_MANIFEST = {
    **WEB_MANIFEST,
    "metadata": {"name": "cart", "namespace": "shop"},
    "spec": {**WEB_MANIFEST["spec"], "clusterIP": "100.64.0.11", "ports": [{"port": 443}]},
}


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)
    config.register(app)
    return app


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


@pytest.fixture
def manifest_file(tmp_path: Any) -> str:
    path = os.path.join(str(tmp_path), "services.yaml")
    with open(path, "w") as f:
        f.write(WEB + "---\n" + DB)
    return path


def run(app: typer.Typer, *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def applied(body: Any) -> tuple[int, Any]:
    """What a real agent answers to an apply: every document created."""
    return 200, {
        "results": [
            {
                "namespace": "default",
                "name": d["metadata"]["name"],
                "action": "created",
                "cluster_ip": f"100.64.0.{i}",
            }
            for i, d in enumerate(body["documents"], 1)
        ]
    }


# -- apply ----------------------------------------------------------------------------


def test_apply_sends_the_documents_and_prints_kubectl_lines(
    app: typer.Typer, agent: FakeAgent, manifest_file: str
) -> None:
    agent.answer("POST", "/v1/config/apply", applied)
    r = run(app, "apply", "-f", manifest_file, "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["service/web created", "service/db created"]
    [body] = agent.bodies("/v1/config/apply")
    assert body["source"] == manifest_file
    assert [d["metadata"]["name"] for d in body["documents"]] == ["web", "db"]
    # YAML timestamps are sent as the text they were written as
    assert body["documents"][0]["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"


def test_apply_reads_stdin(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer(
        "POST",
        "/v1/config/apply",
        (200, {"results": [{"namespace": "default", "name": "web", "action": "unchanged"}]}),
    )
    r = run(app, "apply", "-f", "-", "--socket", agent.path, input=WEB)
    assert r.exit_code == 0, r.output
    assert r.stdout == "service/web unchanged\n"
    assert agent.bodies("/v1/config/apply")[0]["source"] == "<stdin>"


def test_apply_shows_yaml_errors_without_asking_the_agent(
    app: typer.Typer, agent: FakeAgent, tmp_path: Any
) -> None:
    path = os.path.join(str(tmp_path), "bad.yaml")
    with open(path, "w") as f:
        f.write("kind: Service\nmetadata: {name: web\n")
    r = run(app, "apply", "-f", path, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"{path}: YAML syntax error at line 3")
    assert agent.requests == []


def test_apply_shows_every_invalid_field_without_asking_the_agent(
    app: typer.Typer, agent: FakeAgent
) -> None:
    bad = WEB.replace("port: 80", "port: http").replace("app: web", "app: 1")
    r = run(app, "apply", "-f", "-", "--socket", agent.path, input=DB + "---\n" + bad)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "<stdin>: document 2 (Service default/web): spec.selector[app]: "
        'expected a string, got 1 (quote it: "1")',
        "<stdin>: document 2 (Service default/web): spec.ports[0].port: expected an integer "
        '1..65535, got "http"',
    ]
    assert agent.requests == []


def test_apply_shows_the_agents_validation_errors(
    app: typer.Typer, agent: FakeAgent, manifest_file: str
) -> None:
    msg = (
        f"{manifest_file}: document 2 (Service default/db): spec.clusterIP: "
        "100.64.0.5 is already allocated to Service default/other"
    )
    agent.answer("POST", "/v1/config/apply", error(400, 7, msg))
    r = run(app, "apply", "-f", manifest_file, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr == msg + "\n"
    assert r.stdout == ""


def test_apply_with_agent_trouble(app: typer.Typer, agent: FakeAgent, manifest_file: str) -> None:
    agent.answer("POST", "/v1/config/apply", error(503, 11, "kvstore: etcd unavailable"))
    r = run(app, "apply", "-f", manifest_file, "--socket", agent.path)
    assert r.exit_code == 1
    assert "kvstore: etcd unavailable" in r.stderr
    r = run(app, "apply", "-f", manifest_file, "--socket", agent.path + ".missing")
    assert r.exit_code == 1
    assert "cannot reach the glia agent" in r.stderr
    agent.answer("POST", "/v1/config/apply", (200, {"results": "nope"}))
    r = run(app, "apply", "-f", manifest_file, "--socket", agent.path)
    assert r.exit_code == 1
    assert "without a list of results" in r.stderr


def test_apply_json_and_yaml_are_the_results(
    app: typer.Typer, agent: FakeAgent, manifest_file: str
) -> None:
    agent.answer("POST", "/v1/config/apply", applied)
    _, answer = applied({"documents": load_yaml(WEB + "---\n" + DB, "x")})
    r = run(app, "apply", "-f", manifest_file, "-o", "json", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == answer["results"]
    r = run(app, "apply", "-f", manifest_file, "-o", "Yaml", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == answer["results"]
    r = run(app, "apply", "-f", manifest_file, "-o", "xml", "--socket", agent.path)
    assert r.exit_code == 2
    assert "'xml' is not one of table, json, yaml" in r.stderr


def test_apply_over_the_agents_body_limit_says_the_limit(
    app: typer.Typer, agent: FakeAgent, manifest_file: str
) -> None:
    msg = "request body of 9000000 bytes exceeds the limit of 8388608 bytes (8 MiB)"
    agent.answer("POST", "/v1/config/apply", error(413, 7, msg, "split the request"))
    r = run(app, "apply", "-f", manifest_file, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr == msg + "\nsplit the request\n"


def test_apply_of_a_missing_file(app: typer.Typer, agent: FakeAgent, tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "nope.yaml")
    r = run(app, "apply", "-f", path, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr == f"cannot read {path}: No such file or directory\n"
    r = run(app, "apply", "--socket", agent.path)
    assert r.exit_code == 2  # -f is required
    assert agent.requests == []


def test_apply_refuses_a_yaml_bomb_and_huge_input_before_asking_the_agent(
    app: typer.Typer, agent: FakeAgent, tmp_path: Any
) -> None:
    bomb = WEB + "status:\n  l0: &l0 [" + ", ".join(['"lol"'] * 9) + "]\n"
    bomb += "".join(f"  l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]\n" for n in range(1, 9))
    path = os.path.join(str(tmp_path), "bomb.yaml")
    with open(path, "w") as f:
        f.write(bomb)
    r = run(app, "apply", "-f", path, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"{path}: document 1, line 18, column ")
    assert "characters of data once aliases are expanded" in r.stderr
    r = run(app, "apply", "-f", "/dev/zero", "--socket", agent.path)
    assert (r.exit_code, r.stderr) == (
        1,
        "/dev/zero: larger than 1048576 bytes, the most a file may have\n",
    )
    r = run(app, "delete", "-f", "-", "--socket", agent.path, input="a" * (1 << 20) + "b")
    assert (r.exit_code, r.stderr) == (
        1,
        "<stdin>: larger than 1048576 bytes, the most a file may have\n",
    )
    r = run(app, "apply", "-f", str(tmp_path), "--socket", agent.path)
    assert (r.exit_code, r.stderr) == (1, f"cannot read {tmp_path}: Is a directory\n")
    assert agent.requests == []


# -- delete ---------------------------------------------------------------------------


def test_delete(app: typer.Typer, agent: FakeAgent, manifest_file: str) -> None:
    agent.answer(
        "POST",
        "/v1/config/delete",
        (
            200,
            {
                "results": [
                    {"namespace": "default", "name": "web", "action": "deleted"},
                    {"namespace": "default", "name": "db", "action": "not found"},
                ]
            },
        ),
    )
    r = run(app, "delete", "-f", manifest_file, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stdout == 'service "web" deleted\n'
    assert r.stderr == 'service "db" not found in namespace "default"\n'
    r = run(app, "delete", "-f", manifest_file, "--ignore-not-found", "--socket", agent.path)
    assert r.exit_code == 0
    assert r.stderr == ""
    body = agent.bodies("/v1/config/delete")[0]
    assert [d["metadata"]["name"] for d in body["documents"]] == ["web", "db"]


def test_delete_json_still_exits_1_when_one_is_missing(
    app: typer.Typer, agent: FakeAgent, manifest_file: str
) -> None:
    results = [
        {"namespace": "default", "name": "web", "action": "deleted", "cluster_ip": "100.64.0.1"},
        {"namespace": "default", "name": "db", "action": "not found", "cluster_ip": ""},
    ]
    agent.answer("POST", "/v1/config/delete", (200, {"results": results}))
    r = run(app, "delete", "-f", manifest_file, "-o", "json", "--socket", agent.path)
    assert r.exit_code == 1
    assert json.loads(r.stdout) == results
    assert r.stderr == 'service "db" not found in namespace "default"\n'
    r = run(
        app,
        "delete",
        "-f",
        manifest_file,
        "-o",
        "yaml",
        "--ignore-not-found",
        "--socket",
        agent.path,
    )
    assert (r.exit_code, yaml.safe_load(r.stdout), r.stderr) == (0, results, "")


def test_delete_needs_only_names(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/config/delete", (200, {"results": []}))
    r = run(
        app, "delete", "-f", "-", "--socket", agent.path, input=WEB.replace("port: 80", "port: x")
    )
    assert r.exit_code == 0, r.output
    r = run(app, "delete", "-f", "-", "--socket", agent.path, input="kind: Pod\n")
    assert r.exit_code == 1
    assert "kind: expected v1 Service or cilium.io/v2 CiliumNetworkPolicy" in r.stderr
    assert len(agent.bodies("/v1/config/delete")) == 1


# -- get services -----------------------------------------------------------------------


def test_get_services_table(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/services?namespace=default", (200, [WEB_MANIFEST]))
    r = run(app, "get", "services", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "NAME  TYPE       CLUSTER-IP   PORT(S)        SELECTOR",
        "web   ClusterIP  100.64.0.10  80/TCP,53/UDP  app=web",
    ]


def test_get_services_all_namespaces(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/services", (200, [WEB_MANIFEST, SHOP_MANIFEST]))
    r = run(app, "get", "svc", "-A", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines() if "100.64" in line]
    assert [row[:3] for row in rows] == [
        ["default", "web", "ClusterIP"],
        ["shop", "cart", "ClusterIP"],
    ]


def test_get_services_json_and_yaml_lists(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/services?namespace=shop", (200, [SHOP_MANIFEST]))
    r = run(app, "get", "services", "-n", "shop", "-o", "json", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"apiVersion": "v1", "kind": "List", "items": [SHOP_MANIFEST]}
    r = run(app, "get", "services", "-n", "shop", "-o", "yaml", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == {
        "apiVersion": "v1",
        "kind": "List",
        "items": [SHOP_MANIFEST],
    }


def test_get_one_service(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/services?namespace=default&name=web", (200, [WEB_MANIFEST]))
    r = run(app, "get", "service", "web", "-o", "yaml", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == WEB_MANIFEST
    assert r.stdout.startswith("apiVersion: v1\nkind: Service\n")  # Kubernetes' order
    agent.answer("GET", "/v1/config/services?namespace=default&name=nope", (200, []))
    r = run(app, "get", "services", "nope", "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr == 'service "nope" not found in namespace "default"\n'


def test_get_services_when_there_are_none(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/config/services?namespace=default", (200, []))
    r = run(app, "get", "services", "--socket", agent.path)
    assert r.exit_code == 0
    assert r.stdout == "No Services found in the default namespace.\n"
    r = run(app, "get", "services", "web", "-A", "--socket", agent.path)
    assert r.exit_code == 2


def test_get_services_via_the_lab_node_socket(
    app: typer.Typer, agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab_dir = os.path.dirname(agent.path)
    os.makedirs(os.path.join(lab_dir, "nodes", "c1-n1"))
    os.symlink(agent.path, os.path.join(lab_dir, "nodes", "c1-n1", "agent.sock"))
    monkeypatch.setenv("GLIA_LAB_DIR", lab_dir)
    agent.answer("GET", "/v1/config/services?namespace=default", (200, [WEB_MANIFEST]))
    r = run(app, "get", "services", "--node", "c1/n1")
    assert r.exit_code == 0, r.output
    assert "100.64.0.10" in r.stdout


# -- the client methods -------------------------------------------------------------------


def test_client_methods(agent: FakeAgent) -> None:
    agent.answer("POST", "/v1/config/apply", applied)
    agent.answer("POST", "/v1/config/delete", (200, {"results": []}))
    agent.answer("GET", "/v1/config/services?namespace=a+b&name=x%2Fy", (200, []))
    agent.answer("GET", "/v1/services", (200, [{"name": "web"}]))
    c = AgentClient(agent.path)
    [doc] = load_yaml(WEB, "f.yaml")
    assert c.config_apply([doc], "f.yaml")["results"][0]["cluster_ip"] == "100.64.0.1"
    assert c.config_delete([doc], "f.yaml") == {"results": []}
    assert c.config_services(namespace="a b", name="x/y") == []
    assert c.services() == [{"name": "web"}]
    assert agent.bodies("/v1/config/delete") == [{"documents": [doc], "source": "f.yaml"}]
