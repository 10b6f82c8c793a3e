"""Which agent socket the CLI options designate; rendering helpers of glia.cli.output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import typer
from rich.console import Console
from rich.table import Table

from glia.cli.common import Target, lab_problem, lab_socket, parse_node, resolve_target
from glia.cli.output import (
    Column,
    OutputFormat,
    build_table,
    format_value,
    parse_format,
    plain_lines,
    print_table,
    to_json,
    to_yaml,
)


@pytest.fixture(autouse=True)
def no_lab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIA_LAB_DIR", raising=False)
    monkeypatch.delenv("GLIA_LAB_NAME", raising=False)


def test_socket_wins_over_node() -> None:
    assert resolve_target("/tmp/x.sock", "c1/n1", "gliax") == Target("/tmp/x.sock")


def test_node_is_a_socket_of_the_default_lab() -> None:
    t = resolve_target(None, "c1/n1")
    assert t.socket == "/run/glia/lab/nodes/c1-n1/agent.sock"
    assert (t.lab, t.lab_dir, t.node) == ("glia", Path("/run/glia/lab"), "c1/n1")
    assert lab_socket("a", "b", Path("/l")) == Path("/l/nodes/a-b/agent.sock")


def test_lab_option_and_env_name_the_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    t = resolve_target(None, "c2/node-3", "gliacli")
    assert t.socket == "/run/glia/lab-gliacli/nodes/c2-node-3/agent.sock"
    assert t.lab_hint == " --lab gliacli"
    monkeypatch.setenv("GLIA_LAB_NAME", "gliaenv")
    assert resolve_target(None, "c1/n1").socket == "/run/glia/lab-gliaenv/nodes/c1-n1/agent.sock"
    # The option wins over the environment.
    assert resolve_target(None, "c1/n1", "glia").socket == "/run/glia/lab/nodes/c1-n1/agent.sock"


def test_lab_dir_env_wins_as_it_does_for_glia_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_LAB_DIR", "/tmp/glia-lab")
    t = resolve_target(None, "c1/n1", "gliax")
    assert (t.socket, t.lab) == ("/tmp/glia-lab/nodes/c1-n1/agent.sock", "gliax")


def test_default_is_the_hosts_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIA_LAB_NAME", "gliaenv")
    assert resolve_target(None, None) == Target("/run/glia/agent.sock")
    assert resolve_target("", "") == Target("/run/glia/agent.sock")


def test_lab_without_node_is_a_usage_error() -> None:
    with pytest.raises(typer.BadParameter, match="give --node too"):
        resolve_target(None, None, "gliax")


def test_bad_lab_names(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(typer.BadParameter, match="lab name 'Lab1'") as ei:
        resolve_target(None, "c1/n1", "Lab1")
    assert ei.value.param_hint == "--lab"
    monkeypatch.setenv("GLIA_LAB_NAME", "other")
    with pytest.raises(typer.BadParameter, match="lab name 'other'") as ei:
        resolve_target(None, "c1/n1")
    assert ei.value.param_hint == "$GLIA_LAB_NAME"


@pytest.mark.parametrize("bad", ["c1", "c1/", "/n1", "c1/n1/x", "C1/n1", "c 1/n1", "../x/n1"])
def test_bad_node(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_node(bad)
    with pytest.raises(typer.BadParameter):
        resolve_target(None, bad)


def test_lab_problem_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab_dir = tmp_path / "glia-lab"
    monkeypatch.setenv("GLIA_LAB_DIR", str(lab_dir))
    t = resolve_target(None, "c1/n1", "gliax")
    assert lab_problem(t) == (
        f"lab 'gliax' is not up: its directory {lab_dir} does not exist "
        "(`glia lab up --lab gliax` builds it; --lab NAME or $GLIA_LAB_NAME picks another lab)"
    )
    (lab_dir / "nodes").mkdir(parents=True)
    assert lab_problem(t) == (
        f"lab 'gliax' has no node c1/n1 (no {lab_dir}/nodes/c1-n1; "
        "`glia lab status --lab gliax` lists its nodes)"
    )
    (lab_dir / "nodes" / "c1-n1").mkdir()
    assert lab_problem(t) == (
        f"the agent of node c1/n1 in lab 'gliax' is not running: no socket at {t.socket} "
        "(`glia lab status --lab gliax` shows the lab's processes)"
    )
    Path(t.socket).touch()
    assert lab_problem(t) is None
    assert lab_problem(Target("/nonexistent/agent.sock")) is None  # --socket: the client says


@pytest.mark.parametrize("text", ["json", "JSON", "Json", " yaml", "TABLE"])
def test_output_format_is_any_case(text: str) -> None:
    assert parse_format(text) is OutputFormat(text.strip().lower())


def test_bad_output_format_names_the_choices() -> None:
    with pytest.raises(typer.BadParameter) as ei:
        parse_format("xml")
    assert str(ei.value) == "'xml' is not one of table, json, yaml"


def test_format_value() -> None:
    assert format_value(None) == "-"
    assert format_value("") == "-"
    assert format_value({}) == "-"
    assert format_value([]) == "-"
    assert format_value(0) == "0"
    assert format_value(False) == "no"
    assert format_value(True) == "yes"
    assert format_value(1.50) == "1.5"
    assert format_value({"b": 1, "a": None}) == "a=-, b=1"
    assert format_value(["x", 2]) == "x, 2"


def test_to_json_is_stable() -> None:
    assert to_json({"b": [1, {"d": 1, "c": 2}], "a": None}) == json.dumps(
        {"a": None, "b": [1, {"c": 2, "d": 1}]}, indent=2
    )


def test_to_yaml_keeps_the_key_order() -> None:
    assert to_yaml({"kind": "Service", "apiVersion": "v1"}) == "kind: Service\napiVersion: v1"


def test_table_cells_are_text_unless_marked_as_markup() -> None:
    cols = [Column("A", "a"), Column("B", lambda r: f"[red]{r['a']}[/red]", str, markup=True)]
    table = build_table([{"a": "[bold]x"}], cols)
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(table)
    line = next(line for line in buf.getvalue().splitlines() if "x" in line)
    assert line.split() == ["[bold]x", "x"]
    assert plain_lines(table) == ["A        B", "[bold]x  x"]


def test_plain_lines_keep_rows_whole_and_unpadded() -> None:
    long = "x" * 500
    cols = [
        Column("NAME", "name"),
        Column("COUNT", "n", justify="right"),
        Column("BACKENDS", "b"),
    ]
    rows = [
        {"name": "a", "n": 1, "b": "10.0.0.1:80 ready\n10.0.0.2:80 not-ready"},
        {"name": "long-name", "n": 1234, "b": long},
        {"name": "c", "n": 7, "b": None},
    ]
    assert plain_lines(build_table(rows, cols)) == [
        "NAME       COUNT  BACKENDS",
        "a              1  10.0.0.1:80 ready, 10.0.0.2:80 not-ready",
        f"long-name   1234  {long}",
        "c              7  -",
    ]


def test_plain_lines_of_a_grid_and_of_any_rich_table() -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Node:", "n1  [green]ok[/green]")
    grid.add_row("Healthy:", "")
    assert plain_lines(grid) == ["Node:     n1  ok", "Healthy:"]
    titled = Table("cluster", "nodes", title="lab [bold]glia[/]")
    titled.add_row("c1 (id 1)", "n1\nn2")
    assert plain_lines(titled) == ["lab glia", "cluster    nodes", "c1 (id 1)  n1, n2"]


def test_a_terminal_gets_rich_tables_folded_never_cut() -> None:
    cols = [Column("NAME", "name"), Column("LABELS", "labels")]
    labels = {f"label-{i}": f"value-{i}" for i in range(8)}
    buf = io.StringIO()
    term = Console(file=buf, force_terminal=True, width=60, color_system=None)
    print_table(build_table([{"name": "web", "labels": labels}], cols), term)
    out = buf.getvalue()
    assert "─" in out  # rich's header rule: drawn for a terminal
    assert "…" not in out
    assert "".join(out.split()).count("label-7=value-7") == 1  # folded across lines, whole
