"""The whole ``glia`` command: --version, every command's help, output in a pipe.

In-process through typer's CliRunner (whose stdout is not a terminal, like a
pipe), and through the installed ``glia`` executable with its stdout a real
pipe, as a script sees it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import typer.main
from test_agent_client import ENDPOINTS, IDENTITIES, FakeAgent, running_fake_agent
from typer.testing import CliRunner

import glia
from glia.cli.main import app

GLIA = Path(sys.executable).parent / "glia"
ANSI = re.compile(r"\x1b\[")


def commands() -> Iterator[tuple[list[str], Any]]:
    """(path, click command) of every command and group, the root first."""

    def walk(path: list[str], cmd: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk([*path, name], sub)

    yield from walk([], typer.main.get_command(app))


def docstring_first_line(cmd: Any) -> str:
    doc = inspect.getdoc(cmd.callback) if cmd.callback is not None else None
    text = doc or cmd.help or ""
    return next(line.strip() for line in text.splitlines() if line.strip())


ALL = list(commands())


def test_the_walk_sees_every_command() -> None:
    paths = {" ".join(p) for p, _ in ALL}
    for expected in ("status", "bpf lb list", "lab up", "apply", "get services", "service list"):
        assert expected in paths
    assert len(ALL) > 30


def unwrapped(text: str) -> str:
    """Words as one line, words a wrap broke at a hyphen joined again."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


@pytest.mark.parametrize("width", [None, 120, 80, 40], ids=["pipe", "tty120", "tty80", "tty40"])
@pytest.mark.parametrize(("path", "cmd"), ALL, ids=[" ".join(p) or "glia" for p, _ in ALL])
def test_help_is_whole(path: list[str], cmd: Any, width: int | None) -> None:
    runner = CliRunner(env={"TERM": "xterm-256color"})
    # CliRunner's stdout is not a terminal; ``terminal_width`` is what a terminal would give.
    extra = {} if width is None else {"terminal_width": width}
    r = runner.invoke(app, [*path, "--help"], **extra)
    assert r.exit_code == 0, r.output
    out = r.stdout
    first = docstring_first_line(cmd)
    if width is None:  # a pipe: nothing wrapped
        assert first in out.splitlines()[2]
    assert unwrapped(first) in unwrapped(out)
    assert "…" not in out and not ANSI.search(out)
    assert not any(ch in out for ch in "╭│╰─"), "plain text, no boxes"
    usage, _, rest = out.partition("\n\n")  # "[ARGS]..." of the usage is no cut
    assert usage.startswith("Usage: glia")
    if width is None:  # (click's usage wrap on a narrow terminal leaves an unseen space)
        for line in out.splitlines():
            assert line == line.rstrip(), f"trailing spaces: {line!r}"
    for line in rest.splitlines():
        assert not line.endswith("..."), f"cut: {line!r}"
    # A group lists each visible command with the whole first line of its help.
    listing = out.split("Commands:", 1)[-1]
    for name, sub in getattr(cmd, "commands", {}).items():
        if sub.hidden:
            continue
        if width is None:
            assert f"  {name}" in listing and docstring_first_line(sub) in listing, name
        assert unwrapped(docstring_first_line(sub)) in unwrapped(listing), name


def test_version() -> None:
    r = CliRunner().invoke(app, ["--version"])
    assert (r.exit_code, r.stdout) == (0, f"glia {metadata.version('glia')}\n")
    assert metadata.version("glia") == glia.__version__  # pyproject.toml and the package agree


def test_no_arguments_is_the_help() -> None:
    r = CliRunner().invoke(app, [])
    assert "Usage: glia [OPTIONS] COMMAND" in r.output
    assert "--version" in r.output


# -- through a real pipe -------------------------------------------------------------------


def run_glia(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # A terminal-like environment: only the pipe tells the command it is not a terminal.
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    return subprocess.run(
        [str(GLIA), *args],
        env={**base, "TERM": "xterm-256color", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


def test_version_in_a_pipe() -> None:
    r = run_glia("--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"glia {glia.__version__}\n", "")


def test_piped_tables_keep_each_row_on_one_line(agent: FakeAgent) -> None:
    many = {f"example.com/label-{i:02d}": f"value-{i:02d}" for i in range(12)}
    endpoints = [{**ENDPOINTS[0], "labels": many}, ENDPOINTS[1]]
    agent.answer("GET", "/v1/endpoints", (200, endpoints))
    r = run_glia("endpoint", "list", "--socket", agent.path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3  # the header and one line per endpoint
    assert lines[0].split()[:2] == ["ENDPOINT", "IP"]
    assert lines[1].startswith("default/db  ")
    web = lines[2]
    assert web.startswith("default/web  ") and len(web) > 300
    assert web.endswith(", ".join(f"{k}={v}" for k, v in sorted(many.items())))
    assert all(line == line.rstrip() for line in lines)
    assert "…" not in r.stdout and not ANSI.search(r.stdout)


def test_piped_json_and_yaml_are_plain(agent: FakeAgent) -> None:
    r = run_glia("identity", "list", "-o", "JSON", "--socket", agent.path)
    assert r.returncode == 0, r.stderr
    assert not ANSI.search(r.stdout)
    assert json.loads(r.stdout) == [IDENTITIES[1], IDENTITIES[0]]
    r = run_glia("identity", "list", "-o", "yaml", "--socket", agent.path, env={"FORCE_COLOR": ""})
    assert r.returncode == 0, r.stderr
    assert not ANSI.search(r.stdout)
    assert r.stdout.startswith("- id: 65792\n")


def test_piped_help_and_usage_errors_are_plain() -> None:
    r = run_glia("bpf", "lb", "list", "--help")
    assert r.returncode == 0, r.stderr
    assert "\n  List the load-balancer maps as the kernel holds them (frontend -> backends).\n" in (
        r.stdout
    )
    assert not ANSI.search(r.stdout) and "│" not in r.stdout
    r = run_glia("status", "-o", "xml")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.endswith(
        "Error: Invalid value for '--output' / '-o': 'xml' is not one of table, json, yaml\n"
    )
    assert not ANSI.search(r.stderr)


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=[" ".join(p) or "glia" for p, _ in ALL])
def test_the_summary_is_a_whole_first_paragraph(path: list[str], cmd: Any) -> None:
    # A group's listing shows only the docstring's first line: a sentence running on
    # to a second line is shown cut (`lab docker` was).
    doc = inspect.getdoc(cmd.callback) if cmd.callback is not None else None
    paragraph = (doc or cmd.help or "").strip().split("\n\n", 1)[0]
    assert "\n" not in paragraph, f"{' '.join(path)}: {paragraph!r}"
