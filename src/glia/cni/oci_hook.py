"""``glia-oci-hook``: put a container's first process into a lab node's cgroup v2.

Console script ``glia-oci-hook = glia.cni.oci_hook:main``. podman injects it
into every container of a lab node (``<node dir>/hooks.d/glia-cgroup.json``,
written by :mod:`glia.lab.podman`) at the OCI ``createRuntime`` stage. runc
runs it once the container's process exists (still ``runc init``: the user's
program has not started) and sits in the container's cgroups; runc never moves
that process again, and everything it forks inherits its cgroup. The node's
agent attaches its socket load-balancing programs to that cgroup.

Usually there is nothing to do: the lab also passes podman ``--cgroup-parent``,
so where runc manages cgroup2 (``/sys/fs/cgroup/unified`` on hybrid hosts, or
a pure v2 host) every container process, ``podman exec``'s too, is already
below the node's cgroup. The hook matters where runc does not manage cgroup2
(cgroup2 mounted by glia at ``/run/glia/cgroup2``) and for containers started
without ``--cgroup-parent``. It never moves a process out of a cgroup that
enforces controllers (pure v2 hosts): that would lift the container's limits.

A failure never stops the container: the hook writes one line to stderr (runc
drops it on success) and to the ``--log`` file, and exits 0; the container's
traffic to services is then still load-balanced per packet.

Import budget: json, os, sys and :mod:`glia.datapath.cgroup_paths` (which
imports nothing), since this runs on every container start.
"""

from __future__ import annotations

import json
import os
import sys
import time

from glia.datapath import cgroup_paths

TYPE_CHECKING = False  # typing itself is not imported: it costs the hook milliseconds
if TYPE_CHECKING:
    from typing import IO

USAGE = "usage: glia-oci-hook --cgroup PATH [--log FILE]  (the OCI state JSON on stdin)"
FALLBACK = "socket load-balancing is off for it; its services are still load-balanced per packet"


class HookError(Exception):
    """Why the container's process could not be put into the cgroup."""


def parse_args(argv: list[str]) -> tuple[str, str | None]:
    """``(cgroup, log file or None)`` from the command line."""
    values: dict[str, str] = {}
    rest = list(argv)
    while rest:
        flag = rest.pop(0)
        name, eq, value = flag.partition("=")
        if name not in ("--cgroup", "--log") or name in values:
            raise HookError(f"unexpected argument {flag!r}; {USAGE}")
        if not eq:
            if not rest:
                raise HookError(f"{name} needs a value; {USAGE}")
            value = rest.pop(0)
        values[name] = value
    if not values.get("--cgroup"):
        raise HookError(f"--cgroup is required; {USAGE}")
    return values["--cgroup"], values.get("--log") or None


def parse_state(raw: bytes) -> tuple[str, int]:
    """``(container id, pid)`` from the OCI state runc writes to the hook's stdin."""
    try:
        state = json.loads(raw)
    except ValueError as e:
        raise HookError(f"the OCI state on stdin is not JSON: {e}") from None
    pid = state.get("pid") if isinstance(state, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise HookError(f"the OCI state on stdin has no process id (pid: {pid!r})")
    return str(state.get("id", "")), pid


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def place(cgroup: str, pid: int, proc: str = "/proc") -> bool:
    """Put ``pid`` into ``cgroup`` unless it is already there or below; True if moved."""
    cgroup = os.path.normpath(cgroup)
    mounts = cgroup_paths.parse_mountinfo(_read(f"{proc}/self/mountinfo"))
    try:
        mount = cgroup_paths.check_glia_cgroup(cgroup, mounts)
    except cgroup_paths.CgroupPathError as e:
        raise HookError(str(e)) from None
    target = cgroup_paths.hierarchy_path(cgroup, mount)
    current = cgroup_paths.proc_cgroup2(_read(f"{proc}/{pid}/cgroup"))
    if current is not None:
        if cgroup_paths.is_within(current, target):
            return False
        # The hierarchy's root never limits anything (its cgroup.controllers only
        # lists what could be enabled below it).
        if current != mount[1] and cgroup_paths.is_within(current, mount[1]):
            here = mount[0].rstrip("/") + current[len(mount[1].rstrip("/")) :]
            controllers = _read(f"{here}/cgroup.controllers").split()
            if controllers:
                raise HookError(
                    f"its cgroup {current} enforces {', '.join(controllers)}; moving it would "
                    "lift those limits (start it with podman --cgroup-parent instead)"
                )
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    return True


def run(argv: list[str], stdin: bytes, stderr: IO[str], proc: str = "/proc") -> int:
    """One hook run; always 0 (the container starts whatever happens here)."""
    log: str | None = None
    what = "container"
    try:
        cgroup, log = parse_args(argv)
        cid, pid = parse_state(stdin)
        what = f"container {cid[:12]} (pid {pid})"
        place(cgroup, pid, proc)
    except (HookError, OSError) as e:
        reason = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else e
        line = f"glia-oci-hook: {what}: not put into its node's cgroup: {reason}; {FALLBACK}"
        _report(line, log, stderr)
    return 0


def _report(line: str, log: str | None, stderr: IO[str]) -> None:
    print(line, file=stderr)
    if log:
        try:
            with open(log, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")
        except OSError as e:
            print(f"glia-oci-hook: cannot write {log}: {e.strerror}", file=stderr)


def main() -> int:
    return run(sys.argv[1:], sys.stdin.buffer.read(), sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
