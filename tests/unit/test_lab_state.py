"""state.json of a lab (glia.lab.state): round trip, refusal of bad files, the writers' lock."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from glia.lab import state
from glia.lab.processes import ProcessRecord
from glia.lab.supervision import Watch


def _state() -> state.LabState:
    rec = ProcessRecord(
        name="c1-n1-agent",
        pid=1234,
        argv=["nsenter", "--net=/run/netns/glia-c1-n1", "glia", "agent"],
        log="/run/glia/lab/nodes/c1-n1/agent.log",
        token="/run/glia/lab/nodes/c1-n1/agent.yaml",
        netns="glia-c1-n1",
        started=1.5,
    )
    return state.LabState(
        name="glia",
        dir="/run/glia/lab",
        clusters=1,
        nodes=2,
        agents=True,
        created=10.0,
        processes={rec.name: rec},
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, _state())
    assert state.load(path) == _state()
    assert not [p for p in tmp_path.iterdir() if p.name != "state.json"]


def test_missing_is_none(tmp_path: Path) -> None:
    assert state.load(tmp_path / "state.json") is None


@pytest.mark.parametrize("text", ["{", '{"name": "glia"}', "[]"])
def test_bad_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(state.StateError, match="lab down"):
        state.load(path)


def test_other_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, _state())
    path.write_text(path.read_text().replace('"version": 1', '"version": 99'))
    with pytest.raises(state.StateError, match="version 99"):
        state.load(path)


def _supervised() -> state.LabState:
    base = _state()
    sup = ProcessRecord(
        name="supervisor",
        pid=99,
        argv=["glia", "lab", "supervise"],
        log="/run/glia/lab/supervisor.log",
        token="lab supervise --lab glia",
    )
    rec = dataclasses.replace(base.processes["c1-n1-agent"], stopped=True)
    watch = Watch(restarts=3, failures=1, down_since=None, last_exit=12.5, last_error="x")
    return dataclasses.replace(
        base, processes={rec.name: rec}, supervisor=sup, watch={rec.name: watch}
    )


def test_round_trip_with_the_supervisor_and_its_records(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, _supervised())
    assert state.load(path) == _supervised()


def test_a_file_written_before_the_supervisor_existed_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state.save(path, _state())
    raw = json.loads(path.read_text())
    del raw["supervisor"], raw["watch"]
    for rec in raw["processes"].values():
        del rec["stopped"]
    path.write_text(json.dumps(raw))
    loaded = state.load(path)
    assert loaded is not None and loaded.supervisor is None and loaded.watch == {}
    assert loaded.processes["c1-n1-agent"].stopped is False


def test_the_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with state.locked(path), state.locked(path):
        state.save(path, _state())
    assert (tmp_path / state.LOCK_FILE).exists()


_HOLD = """
import sys, time
from pathlib import Path
from glia.lab import state
with state.locked(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_the_lock_excludes_another_process(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(state.StateError, match="held by another glia process"),
            state.locked(path, timeout=0.3),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with state.locked(path, timeout=5):  # released with the process
        pass


def test_no_lock_and_nothing_created_without_a_lab_dir(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "state.json"
    with state.locked(path):
        pass
    assert not path.parent.exists()
