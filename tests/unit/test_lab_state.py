"""state.json of a lab (glia.lab.state): round trip and refusal of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from glia.lab import state
from glia.lab.processes import ProcessRecord


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
