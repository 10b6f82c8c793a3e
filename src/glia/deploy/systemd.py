"""The systemd units of the agent and the operator, shipped as package data.

Called by ``glia systemd units`` (:mod:`glia.cli.deploy`). The files live in
``glia/systemd/`` of the package (listed in pyproject's package-data); they
name ``/usr/local/bin/glia`` in ``ExecStart``, which :func:`render` replaces
with the ``glia`` console script actually installed (a venv's, say).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

UNITS = ("glia-agent.service", "glia-operator.service")
SHIPPED_BIN = "/usr/local/bin/glia"


def shipped(name: str) -> str:
    """A unit's text as shipped; ValueError for a name that is not one of :data:`UNITS`."""
    if name not in UNITS:
        raise ValueError(f"unknown unit {name!r} (known: {', '.join(UNITS)})")
    return (resources.files("glia") / "systemd" / name).read_text()


def installed_glia() -> str:
    """The ``glia`` console script next to the running interpreter, else the shipped path."""
    candidate = Path(sys.executable).parent / "glia"
    return str(candidate.absolute()) if candidate.is_file() else SHIPPED_BIN


def render(name: str, glia_bin: str) -> str:
    """A unit with ``ExecStart`` running ``glia_bin`` (an absolute path)."""
    if not glia_bin.startswith("/"):
        raise ValueError(f"--glia-bin {glia_bin!r}: systemd needs an absolute path")
    return shipped(name).replace(f"ExecStart={SHIPPED_BIN} ", f"ExecStart={glia_bin} ")


def write(out: Path, glia_bin: str) -> list[Path]:
    """Write every unit into ``out`` (created if missing); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in UNITS:
        path = out / name
        path.write_text(render(name, glia_bin))
        written.append(path)
    return written
