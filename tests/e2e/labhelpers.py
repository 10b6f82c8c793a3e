"""Helpers shared by the end-to-end tests (imported as ``labhelpers``; no package here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from glia.lab import netns, processes, topology
from glia.lab.lab import Lab

E2E_LAB = "gliat"
T = TypeVar("T")


def lab_dir(name: str) -> Path:
    """Explicit, so a GLIA_LAB_DIR set for someone's own lab is never used by tests."""
    return topology.DEFAULT_LAB_DIR.with_name(f"lab-{name}")


def leftovers(lab: Lab, extra_netns: list[str] | None = None) -> list[str]:
    """Everything of ``lab`` still on the machine (empty after a clean ``down``)."""
    found = [f"namespace {n}" for n in netns.list_names() if topology.is_lab_netns(lab.name, n)]
    found += [f"namespace {p}" for p in extra_netns or [] if Path(p).exists()]
    if lab.topo.bpf_dir.exists():
        found.append(f"pins {lab.topo.bpf_dir}")
    if lab.dir.exists():
        found.append(f"directory {lab.dir}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            line = processes.cmdline(int(proc.name))
            if line is not None and str(lab.dir) + "/" in line:
                found.append(f"process {proc.name}: {line[:120]}")
    return found


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
