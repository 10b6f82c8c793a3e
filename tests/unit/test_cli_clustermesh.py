"""``glia clustermesh status`` against the fake agent: table, JSON/YAML as answered, exit codes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from rich.console import Console
from rich.text import Text
from test_agent_client import CLUSTERMESH, MESH_DIR, FakeAgent, error, running_fake_agent
from typer.testing import CliRunner

from glia.cli import clustermesh, output
from glia.cli.clustermesh import _duration

runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})

HEADER = [
    "CLUSTER",
    "ID",
    "STATE",
    "POD CIDRS",
    "NODES",
    "ENDPOINTS",
    "IDENTITIES",
    "SERVICES",
    "REJECTED",
    "HEARTBEAT",
    "LAST SYNC",
    "LAST ERROR",
]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)
    clustermesh.register(app)
    return app


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


def run(app: typer.Typer, *args: str) -> Any:
    return runner.invoke(app, ["clustermesh", "status", *args])


def columns(line: str) -> list[str]:
    """A plain table line split at its column gaps (two spaces or more)."""
    return [c for c in (part.strip() for part in line.split("  ")) if c]


def test_table_in_a_pipe_one_row_per_cluster(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "--socket", agent.path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"Remote cluster directory: {MESH_DIR}"
    assert lines[1] == ""
    assert columns(lines[2]) == HEADER
    rows = {columns(line)[0]: columns(line) for line in lines[3:6]}
    assert rows["c2"] == [
        "c2",
        "2",
        "synced",
        "10.2.0.0/16, 10.20.0.0/16",
        "2",
        "1,234",
        "3",
        "1",
        "2",
        "1.2s ago",
        "42ms",
        "-",
    ]
    assert rows["c3"] == [
        "c3",
        "3",
        "stale 1m 15s",
        "10.3.0.0/16",
        "1",
        "1",
        "1",
        "0",
        "0",
        "1m 15s ago",
        "500ms",
        "etcd https://198.18.3.254:2379: connection refused",
    ]
    assert rows["c4"] == [
        "c4",
        "1",
        "refused",
        "-",
        "0",
        "0",
        "0",
        "0",
        "0",
        "-",
        "-",
        "cluster id 1 is ours (c1)",
    ]
    assert [columns(line)[0] for line in lines[3:6]] == ["c2", "c3", "c4"]  # by name
    assert lines[6:] == [
        "",
        "Problems in the directory (2):",
        f"  {MESH_DIR}/c5.yaml: ca_file is missing",
        f"  {MESH_DIR}/c6.yml: cluster files end in .yaml (rename it)",
    ]
    assert agent.requests == [("GET", "/v1/clustermesh", None)]


def test_table_on_a_terminal_colours_the_state() -> None:
    buf = io.StringIO()
    term = Console(file=buf, force_terminal=True, width=250, color_system="standard")
    rows = clustermesh.cluster_rows(CLUSTERMESH)
    output.print_table(output.build_table(rows, clustermesh.COLUMNS), term)
    text = buf.getvalue()
    assert "[green]" not in text and "\x1b[32msynced" in text  # drawn, not printed
    assert "\x1b[31mrefused" in text and "\x1b[33mstale" in text
    plain = Text.from_ansi(text).plain
    for name, state in [("c2", "synced"), ("c3", "stale"), ("c4", "refused")]:
        assert any(name in line and state in line for line in plain.splitlines())


@pytest.mark.parametrize("fmt", ["json", "JSON"])
def test_json_is_the_agents_answer(app: typer.Typer, agent: FakeAgent, fmt: str) -> None:
    r = run(app, "--socket", agent.path, "-o", fmt)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == CLUSTERMESH
    assert r.stdout == json.dumps(CLUSTERMESH, sort_keys=True, indent=2) + "\n"


def test_yaml_is_the_agents_answer(app: typer.Typer, agent: FakeAgent) -> None:
    r = run(app, "--socket", agent.path, "-o", "yaml")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load(r.stdout) == CLUSTERMESH


def test_an_agent_alone_says_clustermesh_is_off(app: typer.Typer, agent: FakeAgent) -> None:
    alone = {"clusters": [], "config_dir": "", "config_errors": {}}
    agent.answer("GET", "/v1/clustermesh", (200, alone))
    r = run(app, "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout == (
        "ClusterMesh is off: this agent has no remote cluster directory "
        "(clustermesh_dir in its config).\n"
    )
    r = run(app, "--socket", agent.path, "-o", "json")
    assert (r.exit_code, json.loads(r.stdout)) == (0, alone)


def test_an_empty_directory_with_a_broken_file(app: typer.Typer, agent: FakeAgent) -> None:
    answer = {
        "clusters": [],
        "config_dir": MESH_DIR,
        "config_errors": {f"{MESH_DIR}/c2.yaml": "endpoints is missing"},
    }
    agent.answer("GET", "/v1/clustermesh", (200, answer))
    r = run(app, "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        f"Remote cluster directory: {MESH_DIR}",
        "No remote clusters.",
        "",
        "Problems in the directory (1):",
        f"  {MESH_DIR}/c2.yaml: endpoints is missing",  # the path added when missing
    ]


def test_rejected_records_are_listed_below_the_table(app: typer.Typer, agent: FakeAgent) -> None:
    ip_key = "glia/state/ip/v2/c2/n1/10.1.0.9"
    node_key = "glia/state/nodes/v2/c2/n9"
    c2 = {
        "name": "c2",
        "id": 2,
        "state": "synced",
        "rejected": 40,
        "rejected_keys": {
            node_key: "node_ip 198.18.1.2 is the address of our node c1/n2",
            ip_key: "ip 10.1.0.9 is outside the pod pool (10.2.0.0/16)",
        },
    }
    c3 = {"name": "c3", "state": "synced", "rejected": 1, "rejected_keys": {ip_key: "x"}}
    odd = {"name": "c4", "state": "synced", "rejected": 1, "rejected_keys": ["not", "a", "map"]}
    answer = {"clusters": [odd, c3, c2], "config_dir": MESH_DIR, "config_errors": {}}
    agent.answer("GET", "/v1/clustermesh", (200, answer))
    r = run(app, "--socket", agent.path)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[6:] == [
        "",
        "Records of c2 rejected (40, the first 2):",
        f"  {ip_key}: ip 10.1.0.9 is outside the pod pool (10.2.0.0/16)",
        f"  {node_key}: node_ip 198.18.1.2 is the address of our node c1/n2",
        "",
        "Records of c3 rejected (1):",
        f"  {ip_key}: x",
    ]


def test_odd_values_are_shown_not_raised(app: typer.Typer, agent: FakeAgent) -> None:
    """An agent of another version may send fields missing or of other types."""
    answer = {
        "clusters": [
            "not an object",
            {"name": "c9", "state": "future-state", "heartbeat_age": "soon", "nodes": True},
            {"name": "c8", "last_sync_seconds": 4000, "heartbeat_age": -1},
        ],
        "config_dir": MESH_DIR,
        "config_errors": ["not", "a", "mapping"],
    }
    agent.answer("GET", "/v1/clustermesh", (200, answer))
    r = run(app, "--socket", agent.path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert columns(lines[3]) == ["c8", *["-"] * 8, "-1", "1h 6m", "-"]
    c9 = ["c9", "-", "future-state", "-", "yes", *["-"] * 4, "soon", "-", "-"]
    assert columns(lines[4]) == c9
    assert lines[5:] == []  # config_errors that are not a mapping: nothing to list


def test_an_agent_error_exits_1(app: typer.Typer, agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/clustermesh", error(500, 999, "RuntimeError: boom"))
    r = run(app, "--socket", agent.path)
    assert r.exit_code == 1
    assert r.stderr.strip() == "the glia agent answered an error (code 999): RuntimeError: boom"


def test_an_unreachable_agent_exits_1(app: typer.Typer, tmp_path: Path) -> None:
    r = run(app, "--socket", str(tmp_path / "nope.sock"))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"cannot reach the glia agent at {tmp_path / 'nope.sock'}")


def test_a_lab_node_that_is_not_there_exits_1(app: typer.Typer, tmp_path: Path) -> None:
    env = {"GLIA_LAB_DIR": str(tmp_path / "glia-lab"), "GLIA_LAB_NAME": "gliaunit"}
    r = runner.invoke(app, ["clustermesh", "status", "--node", "c1/n1"], env=env)
    assert r.exit_code == 1
    assert "lab 'gliaunit' is not up" in r.stderr


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.042, "42ms"),
        (0.9994, "999ms"),
        (1, "1.0s"),
        (59.94, "59.9s"),
        (60, "1m 0s"),
        (3599, "59m 59s"),
        (3600, "1h 0m"),
        (90061, "25h 1m"),
        (None, "-"),
        (-3, "-3"),
        (True, "yes"),
        ("x", "x"),
    ],
)
def test_durations(seconds: Any, text: str) -> None:
    assert _duration(seconds) == text
