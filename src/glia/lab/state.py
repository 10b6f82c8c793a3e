"""``<labdir>/state.json``: what a lab was built as, which processes it runs, how they fare.

Written by :mod:`glia.lab.lab` during ``up`` (after every step, so a crash
mid-way still leaves a useful record), by ``Lab.start_*``/``stop_*`` and by
the lab's supervisor (:mod:`glia.lab.supervisor`), which runs in its own
process; read by ``down``, ``status``, ``exec`` and ``run`` in later
invocations. ``down`` does not depend on it: when it is missing or stale, the
lab's names (:mod:`glia.lab.topology`) are enough.

Two processes write it (the supervisor and whichever ``glia`` or test acts on
the lab), so a writer holds :func:`locked` (an ``flock`` on
``<labdir>/state.lock``) from reading the state to saving the new one, and
:func:`save` replaces the file atomically, so a reader without the lock sees
the old or the new state, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from glia.lab.processes import ProcessRecord
from glia.lab.supervision import Watch
from glia.model import codec

VERSION = 1  # later fields only add to version 1, with defaults, so both can read both
LOCK_FILE = "state.lock"
LOCK_TIMEOUT = 60.0  # seconds; a writer holds the lock for a spawn, not for a wait


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
    supervisor: ProcessRecord | None = None  # ``glia lab supervise``, started by ``up``
    watch: dict[str, Watch] = field(default_factory=dict)  # by process name, kept by it


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


class _Held:
    """This process's hold on one lock file: re-entrant across nested ``locked`` blocks."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()  # threads of this process, one at a time
        self.depth = 0
        self.fd: int | None = None


_held: dict[Path, _Held] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the lab's state lock (next to state file ``path``) for a read-modify-write.

    Re-entrant within a process (a method holding it may call another that
    takes it); exclusive between processes. Nothing is locked, and nothing is
    created, while the lab directory does not exist: there is no state to guard.
    """
    lock_path = path.with_name(LOCK_FILE)
    with _held_guard:
        held = _held.setdefault(lock_path, _Held())
    with held.mutex:
        if held.depth == 0:
            if not path.parent.is_dir():
                yield
                return
            held.fd = _acquire(lock_path, timeout)
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0 and held.fd is not None:
                os.close(held.fd)  # releases the flock
                held.fd = None


def _acquire(lock_path: Path, timeout: float) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            raise StateError(
                f"{lock_path} is held by another glia process for {timeout:.0f} s "
                "(a `glia lab` command or the lab's supervisor); try again"
            )
        time.sleep(0.02)
