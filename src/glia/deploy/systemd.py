"""The systemd units of the agent and the operator, shipped as package data.

Called by ``glia systemd units`` (:mod:`glia.cli.deploy`). The files live in
``glia/systemd/`` of the package (listed in pyproject's package-data); they
name ``/usr/local/bin/glia`` in ``ExecStart``, which :func:`render` replaces
with the ``glia`` console script actually installed (a venv's, say).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

UNITS = ("glia-agent.service", "glia-operator.service")
SHIPPED_BIN = "/usr/local/bin/glia"
# Each unit's config file as shipped (ConditionPathExists and ExecStart name it).
SHIPPED_CONFIG = {
    "glia-agent.service": "/etc/glia/agent.yaml",
    "glia-operator.service": "/etc/glia/operator.yaml",
}


def shipped(name: str) -> str:
    """A unit's text as shipped; ValueError for a name that is not one of :data:`UNITS`."""
    if name not in UNITS:
        raise ValueError(f"unknown unit {name!r} (known: {', '.join(UNITS)})")
    return (resources.files("glia") / "systemd" / name).read_text()


def installed_glia() -> str:
    """The ``glia`` console script next to the running interpreter, else the shipped path."""
    candidate = Path(sys.executable).parent / "glia"
    return str(candidate.absolute()) if candidate.is_file() else SHIPPED_BIN


def render(name: str, glia_bin: str, config: str | None = None) -> str:
    """A unit with ``ExecStart`` running ``glia_bin`` (an absolute path) on ``config``
    (absolute; None: the shipped /etc/glia/<daemon>.yaml)."""
    for what, path in (("--glia-bin", glia_bin), ("the config file", config or "/")):
        if not path.startswith("/"):
            raise ValueError(f"{what} {path!r}: systemd needs an absolute path")
        if any(c.isspace() for c in path):
            raise ValueError(f"{what} {path!r}: no spaces in ExecStart's paths")
    text = shipped(name)
    exec_start = f"ExecStart={SHIPPED_BIN} "
    assert exec_start in text, f"{name} as shipped has no {exec_start!r}"
    text = text.replace(exec_start, f"ExecStart={glia_bin} ")
    if config is not None:
        old = SHIPPED_CONFIG[name]
        text = text.replace(f"--config {old}\n", f"--config {config}\n")
        text = text.replace(f"ConditionPathExists={old}\n", f"ConditionPathExists={config}\n")
    return text


def exec_start(text: str) -> list[str]:
    """The command line of a unit's ``ExecStart`` (what systemd runs), split as a shell would."""
    lines = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    if len(lines) != 1:
        raise ValueError(f"a unit with {len(lines)} ExecStart lines (one expected)")
    return shlex.split(lines[0].removeprefix("ExecStart="))


def write(out: Path, glia_bin: str, configs: Mapping[str, str] | None = None) -> list[Path]:
    """Write every unit into ``out`` (created if missing); returns the files written.
    ``configs``: unit name -> its config file, for those not at the shipped path."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        path = out / name
        path.write_text(render(name, glia_bin, (configs or {}).get(name)))
        written.append(path)
    return written
