"""Put glia-cni where a container runtime finds it: the fast path, its Python plugin, the conflist.

Called by ``glia cni install`` (:mod:`glia.cli.cni`). Three files:

- ``BIN_DIR/glia-cni``: a copy of the compiled fast path (:func:`glia.native.cni_fastpath`);
- ``BIN_DIR/glia-cni-python``: a symlink to this installation's Python plugin
  (the ``glia-cni`` console script next to ``sys.executable``), which the fast
  path runs whenever it cannot hand an invocation to the agent;
- ``CONF_DIR/10-NAME.conflist``: :func:`glia.cni.config.conflist`.

Everything is planned before anything is written: an existing file that
differs from what would be written is a conflict, and any conflict without
``force`` refuses the whole install, so nothing is left half done. Each write
is atomic (a temporary file in the same directory, renamed over the target):
a runtime starting the plugin meanwhile sees the old file or the new one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from glia.cni.config import conflist

PYTHON_PLUGIN_NAME = "glia-cni-python"  # native/glia-cni.c looks for it next to itself
FASTPATH_NAME = "glia-cni"

Kind = Literal["file", "symlink"]
Action = Literal["create", "unchanged", "replace", "conflict"]


class InstallError(Exception):
    """The install cannot be done; the message says which file and what to do."""


@dataclass(frozen=True)
class Wanted:
    """One file as the install wants it: bytes for a file, the target for a symlink."""

    path: Path
    kind: Kind
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class Step:
    wanted: Wanted
    action: Action

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.wanted.path), "kind": self.wanted.kind, "action": self.action}


def python_plugin() -> Path:
    """This installation's Python plugin: the console script next to the running Python."""
    # Not resolved: a venv's python is a symlink to the base interpreter.
    return Path(sys.executable).parent / FASTPATH_NAME


def conflist_text(agent_socket: str, name: str, mtu: int) -> str:
    """The conflist as written; ValueError names the bad argument."""
    return json.dumps(conflist(agent_socket, name, mtu), indent=2) + "\n"


def wanted_files(
    bin_dir: Path, conf_dir: Path, fastpath: Path, plugin: Path, name: str, text: str
) -> list[Wanted]:
    """The three files of an install; InstallError if the fast path or the plugin is missing."""
    if not os.access(fastpath, os.X_OK) or not fastpath.is_file():
        raise InstallError(
            f"glia-cni's fast path is not at {fastpath}: "
            "build it with `make bpf` in a checkout, or install the glia wheel"
        )
    if not os.access(plugin, os.X_OK):
        raise InstallError(
            f"the Python plugin {plugin} is missing: glia is not installed next to {sys.executable}"
        )
    return [
        Wanted(bin_dir / FASTPATH_NAME, "file", fastpath.read_bytes(), 0o755),
        Wanted(bin_dir / PYTHON_PLUGIN_NAME, "symlink", os.fsencode(plugin)),
        Wanted(conf_dir / f"10-{name}.conflist", "file", text.encode(), 0o644),
    ]


def _action(w: Wanted) -> Action:
    p = w.path
    if not os.path.lexists(p):
        return "create"
    if w.kind == "symlink":
        same = p.is_symlink() and os.fsencode(os.readlink(p)) == w.content
    else:
        same = (
            not p.is_symlink()
            and p.is_file()
            and p.read_bytes() == w.content
            and p.stat().st_mode & 0o777 == w.mode
        )
    return "unchanged" if same else "conflict"


def plan(files: list[Wanted], force: bool) -> list[Step]:
    """What installing ``files`` would do; InstallError naming every conflict unless ``force``."""
    steps = [Step(w, _action(w)) for w in files]
    conflicts = [s.wanted.path for s in steps if s.action == "conflict"]
    if conflicts and not force:
        listed = ", ".join(str(p) for p in conflicts)
        raise InstallError(
            f"{listed}: exists and differs from what glia installs (--force to replace)"
        )
    return [Step(s.wanted, "replace") if s.action == "conflict" else s for s in steps]


def _write(w: Wanted) -> None:
    parent = w.path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{w.path.name}.", dir=parent)) / w.path.name
    try:
        if w.kind == "symlink":
            tmp.symlink_to(os.fsdecode(w.content))
        else:
            tmp.write_bytes(w.content)
            tmp.chmod(w.mode)
        # A directory at the target cannot be renamed over; --force means replace it too.
        if w.path.is_dir() and not w.path.is_symlink():
            raise InstallError(f"{w.path} is a directory: remove it first")
        tmp.replace(w.path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.parent.rmdir()


def apply(steps: list[Step]) -> None:
    """Write what :func:`plan` decided; files already as wanted are not touched."""
    try:
        for s in steps:
            if s.action != "unchanged":
                _write(s.wanted)
    except OSError as e:
        raise InstallError(f"{e.filename or ''}: {e.strerror or e}") from None
