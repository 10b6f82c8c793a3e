"""What ``glia lab status`` says about daemons (glia.lab.status) and how the CLI exits.

No lab is built: a state file in a temporary lab directory names processes
that are not running (this test's own PID with a token its command line does
not hold), which is all ``status`` needs to call them dead.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from glia.cli.main import app
from glia.lab import state, status, supervision, topology
from glia.lab.processes import ProcessRecord
from glia.lab.supervision import Watch

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _daemon(process: str) -> supervision.Daemon:
    topo = topology.build("glia", 1, 2, Path("/run/glia/lab"))
    return {d.process: d for d in supervision.daemons(topo)}[process]


@pytest.mark.parametrize(
    ("alive", "paused", "stopped", "want"),
    [
        (True, False, False, "running"),
        (True, True, False, "paused"),  # SIGSTOP: alive, not a crash
        (True, False, True, "running"),  # being stopped: still runs
        (False, False, True, "stopped"),
        (False, False, False, "dead"),
    ],
)
def test_daemon_state(alive: bool, paused: bool, stopped: bool, want: str) -> None:
    assert status.daemon_state(alive=alive, paused=paused, stopped=stopped) == want


def test_a_dead_agent_says_what_to_run() -> None:
    d = _daemon("c1-n2-agent")
    info = {"state": "dead", "down_since": 97.0, "retry_at": None}
    line = status.problem(d, info, "glia", supervised=False, now=100.0)
    assert line == (
        "c1-n2-agent: dead (exited 3.0 s ago); run `glia lab restart c1/n2` or `glia lab up`"
    )


def test_a_dead_daemon_the_supervisor_restarts_soon() -> None:
    d = _daemon("c1-operator")
    info = {"state": "dead", "down_since": 99.8, "retry_at": 100.5, "last_error": ""}
    line = status.problem(d, info, "gliat", supervised=True, now=100.0)
    assert line is not None
    assert line.startswith("c1-operator: dead (exited 0.2 s ago); the supervisor restarts it in")
    assert "`glia lab restart c1 --operator --lab gliat` or `glia lab up --lab gliat`" in line


def test_without_a_note_of_the_death_the_log_tells_when() -> None:
    d = _daemon("c1-etcd")
    info = {"state": "dead", "down_since": None, "log_written": 40.0}
    line = status.problem(d, info, "glia", supervised=False, now=100.0)
    assert line is not None and "(last log line 60 s ago)" in line
    assert "`glia lab restart c1 --etcd`" in line


def test_stopped_missing_and_running() -> None:
    d = _daemon("c1-n1-agent")
    stopped = status.problem(d, {"state": "stopped"}, "glia", supervised=True, now=0.0)
    assert stopped is not None and "stopped on purpose" in stopped and "to start it" in stopped
    missing = status.problem(d, {"state": "missing"}, "glia", supervised=True, now=0.0)
    assert missing is not None and "never started" in missing
    for ok in ("running", "paused", None):
        assert status.problem(d, {"state": ok}, "glia", supervised=True, now=0.0) is None


def _lab_dir(tmp_path: Path) -> Path:
    return tmp_path / "glia-lab-gliau"  # lab dirs must have a component starting with glia


def _not_running(name: str, log: Path) -> ProcessRecord:
    # Our own PID, with a token our command line lacks: alive() says no.
    return ProcessRecord(name=name, pid=os.getpid(), argv=[], log=str(log), token="no-such-token")


def test_collect_lists_dead_daemons_and_the_missing_supervisor(tmp_path: Path) -> None:
    lab_dir = _lab_dir(tmp_path)
    topo = topology.build("gliau", 1, 1, lab_dir)
    log = lab_dir / "agent.log"
    lab_dir.mkdir()
    log.write_text("last words\n")
    recs = {
        n: _not_running(n, log) for n in ("c1-etcd", "c1-operator", "c1-n1-agent", "supervisor")
    }
    recs["c1-operator"] = dataclasses.replace(recs["c1-operator"], stopped=True)
    st = state.LabState(
        name="gliau",
        dir=str(lab_dir),
        clusters=1,
        nodes=1,
        agents=True,
        created=0.0,
        complete=True,
        processes={k: v for k, v in recs.items() if k != "supervisor"},
        supervisor=recs["supervisor"],
        watch={"c1-n1-agent": Watch(restarts=2, down_since=90.0)},
    )
    data = status.collect(topo, st, up=False, now=100.0)
    agent = data["clusters"][0]["nodes"][0]["agent"]
    assert agent["state"] == "dead" and agent["restarts"] == 2 and agent["healthy"] is False
    assert data["supervisor"]["alive"] is False
    problems = data["problems"]
    assert "c1-n1-agent: dead (exited 10 s ago); run `glia lab restart c1/n1 --lab gliau`" in (
        " ".join(problems)
    )
    assert any(p.startswith("c1-etcd: dead") for p in problems)
    assert any(p.startswith("c1-operator: stopped on purpose") for p in problems)
    assert data["clusters"][0]["operator"]["state"] == "stopped"
    assert any(p.startswith("supervisor: not running") for p in problems)
    assert any("namespace gliau-c1-n1 is missing" in p for p in problems)
    # README (the lab): podman by hand on a node needs both files, so status names them
    node, spec = data["clusters"][0]["nodes"][0], topo.node("c1", "n1")
    assert node["podman_env"] == {
        "CONTAINERS_CONF": str(spec.containers_conf),
        "CONTAINERS_STORAGE_CONF": str(spec.storage_conf),
    }


def _status(lab_dir: Path, *args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["lab", "status", "--lab", "gliau", "--dir", str(lab_dir), *args])
    return r.exit_code, r.stdout


@pytest.mark.parametrize("fmt", [None, "table", "json", "yaml", "JSON", "Yaml"])
def test_status_of_a_lab_that_is_not_up_exits_1_in_every_format(
    tmp_path: Path, fmt: str | None
) -> None:
    code, out = _status(_lab_dir(tmp_path), *(["-o", fmt] if fmt else []))
    assert code == 1, out
    if fmt and fmt.lower() == "json":
        data = json.loads(out)
        assert data["up"] is False and data["exists"] is False and data["problems"]
    elif fmt and fmt.lower() == "yaml":
        data = yaml.safe_load(out)
        assert data["up"] is False and data["exists"] is False
    assert not _lab_dir(tmp_path).exists()  # status creates nothing


def test_status_refuses_an_unknown_format(tmp_path: Path) -> None:
    code, _ = _status(_lab_dir(tmp_path), "-o", "xml")
    assert code == 2


def test_run_refuses_an_unknown_format(tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        ["lab", "run", "c1/n1", "--name", "glia-x", "-o", "toml", "--lab", "gliau",
         "--dir", str(_lab_dir(tmp_path))],
    )  # fmt: skip
    assert r.exit_code == 2
    assert not _lab_dir(tmp_path).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["c1"], "is a cluster"),
        (["c1/n1", "--operator"], "take a CLUSTER"),
        (["c1", "--operator", "--etcd"], "one daemon at a time"),
    ],
)
def test_restart_names_what_is_wrong(tmp_path: Path, args: list[str], message: str) -> None:
    lab_dir = _lab_dir(tmp_path)
    lab_dir.mkdir()
    st = state.LabState(
        name="gliau", dir=str(lab_dir), clusters=1, nodes=1, agents=True, created=0.0,
        complete=True,
    )  # fmt: skip
    state.save(lab_dir / "state.json", st)
    r = runner.invoke(app, ["lab", "restart", *args, "--lab", "gliau", "--dir", str(lab_dir)])
    assert r.exit_code == 1
    assert message in r.output


def test_restart_of_a_lab_that_is_not_up(tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["lab", "restart", "c1/n1", "--lab", "gliau", "--dir", str(_lab_dir(tmp_path))]
    )
    assert r.exit_code == 1 and "is not up" in r.output


def test_lab_errors_are_one_line_at_any_width(tmp_path: Path) -> None:
    # 80 columns is what rich assumes in a pipe; a wrapped error or hint cannot be copied whole.
    narrow = CliRunner(env={"COLUMNS": "80", "NO_COLOR": "1"})
    r = narrow.invoke(app, ["lab", "down", "--lab", "glia_bad", "--dir", str(_lab_dir(tmp_path))])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line]
    assert len(lines) == 1 and len(lines[0]) > 80, r.output
    assert lines[0].startswith("error: lab name 'glia_bad' must be")
