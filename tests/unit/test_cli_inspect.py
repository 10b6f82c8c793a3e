"""``glia status|node|endpoint|identity|bpf ...`` against the fake agent: tables, JSON, failures."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml
from test_agent_client import (
    BPF_ENDPOINTS,
    ENDPOINTS,
    IDENTITIES,
    IPCACHE,
    METRICS,
    NODES,
    STATUS,
    FakeAgent,
    error,
    running_fake_agent,
    short_tmpdir,
)
from typer.testing import CliRunner

from glia.cli import inspect

# Wide, so that table cells are not folded across lines.
runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)
    inspect.register(app)
    return app


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


def run(app: typer.Typer, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# -- status -----------------------------------------------------------------------


def test_status_table(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "status", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "n1  node IP 198.18.1.1, pod CIDR 10.1.1.0/24" in out
    assert "c1 (id 1)" in out
    assert lines_with(out, "KVStore:")[0].split()[1:3] == [
        "ok",
        "endpoints=https://198.18.0.10:2379",
    ]
    assert "pin_dir=/sys/fs/bpf/glia/c1-n1" in lines_with(out, "Datapath:")[0]
    assert lines_with(out, "Endpoints:")[0].split() == ["Endpoints:", "2"]
    assert lines_with(out, "Uptime:")[0].split() == ["Uptime:", "1h", "2m", "3s"]
    assert lines_with(out, "Healthy:")[0].split() == ["Healthy:", "yes"]
    assert lines_with(out, "connected")[0].split() == ["kvstore", "ok", "connected"]


def test_status_json(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "status", "--socket", agent.path, "-o", "json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == STATUS
    assert r.stdout == json.dumps(STATUS, sort_keys=True, indent=2) + "\n"


def test_status_yaml(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "status", "--socket", agent.path, "-o", "YAML")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == STATUS


def test_status_in_a_pipe_is_plain_lines(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "status", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "Node:        n1  node IP 198.18.1.1, pod CIDR 10.1.1.0/24",
        "Cluster:     c1 (id 1)",
        "KVStore:     ok  endpoints=https://198.18.0.10:2379",
        "Datapath:    ok  pin_dir=/sys/fs/bpf/glia/c1-n1",
        "Endpoints:   2",
        "Identities:  2",
        "Uptime:      1h 2m 3s",
        "Healthy:     yes",
        "",
        "SUBSYSTEM  HEALTH  MESSAGE",
        "datapath   ok      loaded",
        "kvstore    ok      connected",
    ]


def test_status_unhealthy_exits_1(app: typer.Typer, agent: FakeAgent) -> None:
    unhealthy = {
        **STATUS,
        "node": None,
        "healthy": False,
        "kvstore": {"ok": False, "endpoints": []},
        "subsystems": {"kvstore": {"ok": False, "msg": "etcd [198.18.0.10] unreachable"}},
    }
    agent.answer("GET", "/v1/status", (200, unhealthy))
    r = run(app, "status", "--socket", agent.path)
    assert r.exit_code == 1
    assert lines_with(r.stdout, "Healthy:")[0].split() == ["Healthy:", "NO"]
    assert "FAILING" in lines_with(r.stdout, "KVStore:")[0]
    assert "not registered" in lines_with(r.stdout, "Node:")[0]
    assert "etcd [198.18.0.10] unreachable" in r.stdout  # brackets are text, not markup
    r = run(app, "status", "--socket", agent.path, "-o", "json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["healthy"] is False


def test_status_of_a_sparse_agent_answer(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/status", (200, {"healthy": True}))
    r = run(app, "status", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert lines_with(r.stdout, "Endpoints:")[0].split() == ["Endpoints:", "-"]


# -- lists ------------------------------------------------------------------------


def test_node_list(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "node", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines() if "198.18" in line]
    assert rows == [
        ["c1", "n1", "1", "198.18.1.1", "10.1.1.0/24", "-"],
        ["c1", "n2", "1", "198.18.1.2", "10.1.2.0/24", "-"],
    ]
    assert lines_with(r.stdout, "NODE IP")[0].split() == [
        "CLUSTER", "NAME", "CLUSTER", "ID", "NODE", "IP", "POD", "CIDR", "HEALTH", "IP"
    ]  # fmt: skip
    r = run(app, "node", "list", "--socket", agent.path, "-o", "json")
    assert json.loads(r.stdout) == sorted(NODES, key=lambda n: str(n["name"]))


def test_endpoint_list(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "endpoint", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines() if "default/" in line]
    assert rows == [
        [
            "default/db", "10.1.1.6", "5", "(init)", "waiting-for-identity", "no",
            "glia0abc", "abc", "-",
        ],
        [
            "default/web", "10.1.1.5", "65792", "(cluster", "1)", "ready", "yes",
            "glia0f00dcafe", "f00dcafe0123", "app=web",
        ],
    ]  # fmt: skip
    r = run(app, "endpoint", "list", "--socket", agent.path, "-o", "json")
    assert json.loads(r.stdout) == [ENDPOINTS[1], ENDPOINTS[0]]


def test_identity_list(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "identity", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines() if "app=" in line]
    assert rows == [
        ["65792", "cluster", "1", "app=web,", "io.cilium.k8s.policy.cluster=c1"],
        ["65793", "cluster", "1", "app=db,", "io.cilium.k8s.policy.cluster=c1"],
    ]
    r = run(app, "identity", "list", "--socket", agent.path, "-o", "json")
    assert json.loads(r.stdout) == [IDENTITIES[1], IDENTITIES[0]]


def test_bpf_ipcache_list(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "bpf", "ipcache", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines() if "198.18" in line or "0.0.0.0" in line]
    assert rows == [
        ["10.1.1.5/32", "65792", "(cluster", "1)", "0.0.0.0", "1", "1"],
        ["10.2.0.0/16", "6", "(remote-node)", "198.18.2.1", "2", "0"],
    ]
    r = run(app, "bpf", "ipcache", "list", "--socket", agent.path, "-o", "json")
    assert json.loads(r.stdout) == [IPCACHE[1], IPCACHE[0]]


def test_bpf_endpoint_list(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "bpf", "endpoint", "list", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines() if "02:00" in line]
    assert [row[:3] for row in rows] == [["10.1.1.5", "7", "65792"], ["10.1.1.6", "8", "5"]]
    r = run(app, "bpf", "endpoint", "list", "--socket", agent.path, "-o", "json")
    assert json.loads(r.stdout) == [BPF_ENDPOINTS[1], BPF_ENDPOINTS[0]]


def test_bpf_metrics(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "bpf", "metrics", "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert lines_with(r.stdout, "FORWARDED")[0].split() == [
        "FORWARDED",
        "0",
        "egress",
        "1,234,567",
        "99",
    ]
    assert lines_with(r.stdout, "DROP_POLICY")[0].split() == [
        "DROP_POLICY",
        "133",
        "ingress",
        "3",
        "180",
    ]
    r = run(app, "bpf", "metrics", "--socket", agent.path, "-o", "json")
    assert json.loads(r.stdout) == [METRICS[0], METRICS[1]]  # egress before ingress


def test_empty_lists(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/endpoints", (200, []))
    r = run(app, "endpoint", "list", "--socket", agent.path)
    assert (r.exit_code, r.stdout) == (0, "No endpoints on this node.\n")
    r = run(app, "endpoint", "list", "--socket", agent.path, "-o", "json")
    assert (r.exit_code, r.stdout) == (0, "[]\n")


def test_labels_with_brackets_are_shown_verbatim(app: typer.Typer, agent: FakeAgent) -> None:
    idents = [{"id": 300, "labels": {"x": "[bold]y"}}, {"id": 2, "labels": {}}]
    agent.answer("GET", "/v1/identities", (200, idents))
    r = run(app, "identity", "list", "--socket", agent.path)
    assert lines_with(r.stdout, "[bold]")[0].split() == ["300", "cluster", "0", "x=[bold]y"]
    assert lines_with(r.stdout, "world")[0].split() == ["2", "world", "-"]


# -- which agent, and failures ----------------------------------------------------


def test_node_option_finds_the_lab_socket(app: typer.Typer) -> None:
    with short_tmpdir() as lab:
        node_dir = os.path.join(lab, "nodes", "c1-n1")
        os.makedirs(node_dir)
        agent = FakeAgent(os.path.join(node_dir, "agent.sock"))
        agent.start()
        try:
            r = run(app, "node", "list", "--node", "c1/n1", "-o", "json", env={"GLIA_LAB_DIR": lab})
        finally:
            agent.stop()
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 2


def test_node_option_finds_a_named_lab(app: typer.Typer) -> None:
    with short_tmpdir() as lab:
        node_dir = os.path.join(lab, "nodes", "c2-n1")
        os.makedirs(node_dir)
        agent = FakeAgent(os.path.join(node_dir, "agent.sock"))
        agent.start()
        try:
            for args, env in (
                (["--lab", "gliacli"], {"GLIA_LAB_DIR": lab}),
                ([], {"GLIA_LAB_DIR": lab, "GLIA_LAB_NAME": "gliacli"}),
            ):
                r = run(app, "node", "list", "--node", "c2/n1", "-o", "json", *args, env=env)
                assert r.exit_code == 0, r.output
                assert len(json.loads(r.stdout)) == 2
        finally:
            agent.stop()


def test_node_of_a_lab_that_is_not_up(app: typer.Typer) -> None:
    env = {"GLIA_LAB_DIR": "", "GLIA_LAB_NAME": ""}
    r = run(app, "status", "--node", "c1/n1", "--lab", "gliazz9", env=env)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == (
        "lab 'gliazz9' is not up: its directory /run/glia/lab-gliazz9 does not exist "
        "(`glia lab up --lab gliazz9` builds it; --lab NAME or $GLIA_LAB_NAME picks another lab)\n"
    )
    r = run(app, "status", "--lab", "gliazz9", env=env)
    assert r.exit_code == 2
    assert "--lab names the lab of --node CLUSTER/NODE: give --node too" in r.stderr


def test_unreachable_agent_is_one_clear_line(app: typer.Typer) -> None:
    with short_tmpdir() as lab:
        r = run(app, "status", "--node", "c1/n9", env={"GLIA_LAB_DIR": lab})
        assert r.exit_code == 1
        assert r.stdout == ""
        assert r.stderr == (
            f"lab 'glia' has no node c1/n9 (no {lab}/nodes/c1-n9; "
            "`glia lab status` lists its nodes)\n"
        )
        sock = os.path.join(lab, "nodes", "c1-n9", "agent.sock")
        os.makedirs(os.path.dirname(sock))
        r = run(app, "status", "--node", "c1/n9", env={"GLIA_LAB_DIR": lab})
        assert r.exit_code == 1
        assert r.stderr == (
            f"the agent of node c1/n9 in lab 'glia' is not running: no socket at {sock} "
            "(`glia lab status` shows the lab's processes)\n"
        )
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock)
        s.close()  # the file stays, nobody listens: what a killed agent leaves
        r = run(app, "status", "--node", "c1/n9", env={"GLIA_LAB_DIR": lab})
    assert r.exit_code == 1
    assert r.stderr == (
        f"cannot reach the glia agent at {sock}: Connection refused "
        "(is it running? use --node CLUSTER/NODE for a lab node)\n"
    )
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_bad_node_option_is_a_usage_error(app: typer.Typer) -> None:
    r = run(app, "endpoint", "list", "--node", "c1")
    assert r.exit_code == 2
    assert "'c1' is not CLUSTER/NODE" in r.output
    r = run(app, "endpoint", "list", "--node", "C1/n1")
    assert r.exit_code == 2
    assert "cluster name 'C1'" in r.output


def test_agent_error_is_one_clear_line(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/bpf/ipcache", error(503, 50, "datapath not loaded yet"))
    r = run(app, "bpf", "ipcache", "list", "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr == "the glia agent answered an error (code 50): datapath not loaded yet\n"
    agent.answer("GET", "/v1/nodes", (200, {"not": "a list"}))
    r = run(app, "node", "list", "--socket", agent.path)
    assert r.exit_code == 1
    assert "/v1/nodes: expected a JSON list of objects" in r.stderr


def test_help_texts(app: typer.Typer) -> None:
    for args in (
        ["status"],
        ["node", "list"],
        ["endpoint", "list"],
        ["identity", "list"],
        ["bpf", "ipcache", "list"],
        ["bpf", "endpoint", "list"],
        ["bpf", "metrics"],
    ):
        r = run(app, *args, "--help")
        assert r.exit_code == 0, args
        assert "--node" in r.stdout and "--socket" in r.stdout and "--output" in r.stdout
    r = run(app, "bpf", "--help")
    assert all(c in r.stdout for c in ("ipcache", "endpoint", "metrics"))


def test_bpf_app_accepts_more_commands(app: typer.Typer) -> None:
    extra = typer.Typer()

    @extra.command("list")
    def lb_list() -> None:
        typer.echo("lb rows")

    inspect.bpf_app.add_typer(extra, name="lbtest")
    try:
        r = run(app, "bpf", "lbtest", "list")
        assert (r.exit_code, r.stdout) == (0, "lb rows\n")
    finally:
        inspect.bpf_app.registered_groups[:] = [
            g for g in inspect.bpf_app.registered_groups if g.name != "lbtest"
        ]


def test_status_shows_a_degraded_subsystem(app: typer.Typer, agent: FakeAgent) -> None:
    msg = "in sync: degraded: 2 record(s) rejected, last glia/state/ip/v2/c1/n2/8.8.8.8: outside"
    degraded = {
        **STATUS,
        "degraded": ["ipcache"],
        "subsystems": {
            **STATUS["subsystems"],
            "ipcache": {"ok": True, "state": "degraded", "msg": msg},
        },
    }
    agent.answer("GET", "/v1/status", (200, degraded))
    r = run(app, "status", "--socket", agent.path)
    assert r.exit_code == 0, r.output  # degraded is healthy: it refuses bad input
    assert lines_with(r.stdout, "rejected")[0].split()[:3] == ["ipcache", "degraded", "in"]
    assert lines_with(r.stdout, "connected")[0].split()[:2] == ["kvstore", "ok"]
