"""Which agent socket the CLI options designate; rendering helpers of glia.cli.output."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from glia.cli.common import lab_socket, parse_node, resolve_socket
from glia.cli.output import Column, build_table, format_value, to_json


def test_socket_wins_over_node() -> None:
    assert resolve_socket("/tmp/x.sock", "c1/n1", {}) == "/tmp/x.sock"


def test_node_is_a_lab_socket() -> None:
    assert resolve_socket(None, "c1/n1", {}) == "/run/glia/lab/nodes/c1-n1/agent.sock"
    env = {"GLIA_LAB_DIR": "/tmp/glia-lab"}
    assert resolve_socket(None, "c2/node-3", env) == "/tmp/glia-lab/nodes/c2-node-3/agent.sock"
    assert lab_socket("a", "b", "/l") == "/l/nodes/a-b/agent.sock"


def test_default_is_the_hosts_agent() -> None:
    assert resolve_socket(None, None, {"GLIA_LAB_DIR": "/x"}) == "/run/glia/agent.sock"
    assert resolve_socket("", "", {}) == "/run/glia/agent.sock"


@pytest.mark.parametrize("bad", ["c1", "c1/", "/n1", "c1/n1/x", "C1/n1", "c 1/n1", "../x/n1"])
def test_bad_node(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_node(bad)


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


def test_table_cells_are_text_unless_marked_as_markup() -> None:
    cols = [Column("A", "a"), Column("B", lambda r: f"[red]{r['a']}[/red]", str, markup=True)]
    table = build_table([{"a": "[bold]x"}], cols)
    buf = io.StringIO()
    Console(file=buf, width=80, color_system=None).print(table)
    line = next(line for line in buf.getvalue().splitlines() if "x" in line)
    assert line.split() == ["[bold]x", "x"]
