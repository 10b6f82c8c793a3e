"""``glia service list`` against the fake agent: frontends, backends with state and node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml
from test_agent_client import FakeAgent, error, running_fake_agent
from typer.testing import CliRunner

from glia.cli import services
from glia.cli.services import frontend_rows
from glia.model import codec
from glia.model.service import Backend, ClusterService, LBAlgorithm, Protocol, ServicePort

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def backend(ip: str, port: int, frontend: int, proto: Protocol, node: str, ready: bool) -> Backend:
    return Backend(ip, port, proto, "", frontend, node, "c1", f"shop/{ip}", ready)


WEB = ClusterService(
    namespace="shop",
    name="web",
    cluster="c1",
    cluster_id=1,
    cluster_ip="100.64.0.10",
    ports=[
        ServicePort(80, 8080, Protocol.TCP, "http"),
        ServicePort(53, 53, Protocol.UDP, "dns"),
    ],
    backends=[
        backend("10.1.1.5", 8080, 80, Protocol.TCP, "n1", True),
        backend("10.1.2.7", 8080, 80, Protocol.TCP, "n2", False),
        backend("10.1.1.5", 53, 53, Protocol.UDP, "n1", True),
    ],
    session_affinity=True,
    affinity_timeout=60,
    lb_algorithm=LBAlgorithm.MAGLEV,
    global_=True,
)
EMPTY = ClusterService(
    namespace="default",
    name="lonely",
    cluster="c1",
    cluster_id=1,
    cluster_ip="100.64.0.11",
    ports=[ServicePort(443, 443)],
    backends=[],
)
RECORDS = [codec.to_dict(WEB), codec.to_dict(EMPTY)]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)
    services.register(app)
    return app


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        a.answer("GET", "/v1/services", (200, RECORDS))
        yield a


def run(app: typer.Typer, *args: str) -> Any:
    return runner.invoke(app, list(args))


def test_table_has_one_row_per_frontend(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "service", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    # Sorted by namespace/name; in a pipe each row's backends stay on its line.
    flags = "global, ClientIP affinity 60s, maglev"
    assert r.stdout.splitlines() == [
        f"SERVICE         FRONTEND             {'FLAGS':{len(flags)}}  BACKENDS",
        f"default/lonely  100.64.0.11:443/TCP  {'-':{len(flags)}}  (none)",
        f"shop/web        100.64.0.10:80/TCP   {flags}  "
        "10.1.1.5:8080 ready (c1/n1), 10.1.2.7:8080 not-ready (c1/n2)",
        f"shop/web        100.64.0.10:53/UDP   {flags}  10.1.1.5:53 ready (c1/n1)",
    ]


def test_yaml_is_the_records(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "service", "list", "-o", "YAML", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == [RECORDS[1], RECORDS[0]]


def test_json_is_the_records(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "service", "list", "-o", "json", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [RECORDS[1], RECORDS[0]]


def test_no_services_and_errors(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/services", (200, []))
    r = run(app, "service", "list", "--socket", agent.path)
    assert (r.exit_code, r.stdout) == (0, "No services.\n")
    agent.answer("GET", "/v1/services", error(503, 11, "kvstore: etcd unavailable"))
    r = run(app, "service", "list", "--socket", agent.path)
    assert r.exit_code == 1
    assert "kvstore: etcd unavailable" in r.stderr


def test_odd_records_do_not_crash_the_table(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/services", (200, [{"name": "x", "ports": "bad"}, {"ports": [1]}]))
    r = run(app, "service", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output


def test_global_backends_show_their_cluster_and_side() -> None:
    svc = {
        "namespace": "shop",
        "name": "web",
        "cluster_ip": "100.64.0.10",
        "ports": [{"port": 80, "protocol": "TCP"}],
        "backends": [
            {"ip": "10.1.1.5", "port": 80, "protocol": "TCP", "frontend_port": 80,
             "node": "n1", "cluster": "c1", "ready": True, "preferred": True},
            {"ip": "10.2.0.5", "port": 80, "protocol": "TCP", "frontend_port": 80,
             "node": "n1", "cluster": "c2", "ready": False, "stale": True, "standby": True},
        ],
    }  # fmt: skip
    (row,) = frontend_rows([svc])
    assert row["backends"].splitlines() == [
        "10.1.1.5:80 ready (c1/n1, preferred)",
        "10.2.0.5:80 not-ready (c2/n1, stale, standby)",
    ]
