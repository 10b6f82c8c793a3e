"""Named network namespaces and the links between them, through iproute2.

Called by :mod:`glia.lab.lab` to build and remove the lab's underlay. Every
link is created *inside* a lab namespace (``ip -n NS``) and a veth's peer is
placed straight into its target namespace, so the root namespace never holds
a lab device, not even for a moment.

``ip netns exec`` remounts ``/sys`` and hides the host bpffs, so commands that
must run inside a node use :func:`nsenter_argv` instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    """An iproute2 command on a lab namespace failed."""


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def list_names() -> list[str]:
    """All named namespaces on the machine (the caller filters by the lab's prefix)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def nsenter_argv(name: str, argv: Sequence[str]) -> list[str]:
    """``argv`` run in namespace ``name`` with the host's mounts (bpffs, cgroups) in view."""
    return ["nsenter", f"--net={path(name)}", *argv]


def add(name: str) -> None:
    """Create namespace ``name`` (if missing) with its loopback up."""
    if not exists(name):
        _ip(["netns", "add", name])
    batch(name, ["link set lo up"])


def delete(name: str) -> None:
    """Remove namespace ``name``; absent is fine. Its devices go with it."""
    if exists(name):
        _ip(["netns", "delete", name])


def pids(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is ``name``."""
    if not exists(name):
        return []
    out = _ip(["netns", "pids", name])
    return [int(tok) for tok in out.split()]


def batch(name: str, commands: Sequence[str]) -> None:
    """Run iproute2 commands (``ip`` syntax without the ``ip``) inside namespace ``name``."""
    if commands:
        _ip(["-n", name, "-batch", "-"], stdin="\n".join(commands) + "\n")


def veth(ns: str, name: str, peer_ns: str, peer_name: str) -> None:
    """A veth pair with ``name`` in ``ns`` and ``peer_name`` in ``peer_ns``, created in ``ns``."""
    batch(ns, [f"link add {name} type veth peer name {peer_name} netns {peer_ns}"])


def _ip(args: list[str], stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(
            ["ip", *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        raise NetnsError(f"ip {' '.join(args)}: no answer in 30 s") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        what = f"ip {' '.join(args)}" + (f" <<{stdin.strip()!r}" if stdin else "")
        raise NetnsError(f"{what} failed: {detail}")
    return proc.stdout
