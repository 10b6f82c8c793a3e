"""``<labdir>/state.json``: what a lab was built as and which processes it started.

Written by :mod:`glia.lab.lab` during ``up`` (after every step, so a crash
mid-way still leaves a useful record) and read by ``down``, ``status``,
``exec`` and ``run`` in later invocations. ``down`` does not depend on it: when
it is missing or stale, the lab's names (:mod:`glia.lab.topology`) are enough.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from glia.lab.processes import ProcessRecord
from glia.model import codec

VERSION = 1


@dataclass(frozen=True, slots=True)
class LabState:
    name: str
    dir: str
    clusters: int
    nodes: int
    agents: bool  # False: network, etcd and podman only (``up --no-agents``)
    created: float
    complete: bool = False  # True once ``up`` finished
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    version: int = VERSION


class StateError(RuntimeError):
    """state.json exists but cannot be used."""


def load(path: Path) -> LabState | None:
    """The recorded state, None when there is none."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state = codec.from_dict(LabState, json.loads(raw))
    except (json.JSONDecodeError, codec.InvalidValue) as e:
        raise StateError(f"{path} is not a lab state file ({e}); `glia lab down` removes it") from e
    if state.version != VERSION:
        raise StateError(f"{path} has version {state.version}, this glia writes {VERSION}")
    return state


def save(path: Path, state: LabState) -> None:
    """Write atomically: a reader sees the old or the new state, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(codec.to_dict(state), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
