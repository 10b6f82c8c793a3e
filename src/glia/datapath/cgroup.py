"""cgroup v2 directories for socket load-balancing: find, mount, create, fill, remove.

Socket load-balancing attaches BPF programs (connect4, sendmsg4, ...) to a
cgroup v2 directory; they act on every process in it and below it. The lab
(:mod:`glia.lab.lab`, :mod:`glia.lab.teardown`) gives each node such a
directory, ``glia-lab-<lab>-<cluster>-<node>``, which the node's containers
join (podman's ``--cgroup-parent``, else the OCI hook :mod:`glia.cni.oci_hook`)
and whose path the node's agent gets as ``socket_lb_cgroup``.

On a cgroup v1 host cgroup2 is often mounted beside v1 ("hybrid",
``/sys/fs/cgroup/unified``) with no controllers in it; when it is mounted
nowhere, :func:`ensure_cgroup2_root` mounts it at ``/run/glia/cgroup2`` (the
kernel always offers cgroup2; without controllers it only groups processes).

Safety: glia creates, fills and removes only cgroups whose directory name
starts with "glia" and that lie strictly below a cgroup mount. Path rules are
pure, in :mod:`glia.datapath.cgroup_paths`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path

from glia.datapath import cgroup_paths
from glia.datapath.cgroup_paths import CgroupPathError, Mount
from glia.datapath.errors import DatapathError

GLIA_CGROUP2_MOUNT = Path("/run/glia/cgroup2")
MOUNTINFO = Path("/proc/self/mountinfo")
EVACUATE_TIMEOUT = 5.0  # seconds for a cgroup's processes to leave and for rmdir to succeed


class CgroupError(DatapathError):
    """A cgroup could not be found, mounted, created, filled or removed."""


def cgroup_mounts() -> list[Mount]:
    """Every cgroup (v1) and cgroup2 mount of this process's mount namespace."""
    return cgroup_paths.parse_mountinfo(MOUNTINFO.read_text())


def cgroup2_root() -> Path | None:
    """Where the cgroup2 hierarchy is mounted, None when it is mounted nowhere."""
    point = cgroup_paths.preferred_cgroup2(cgroup_mounts())
    return Path(point) if point is not None else None


def ensure_cgroup2_root(fallback: Path = GLIA_CGROUP2_MOUNT) -> Path:
    """The cgroup2 mount; when there is none, cgroup2 mounted at ``fallback`` first."""
    root = cgroup2_root()
    if root is not None:
        return root
    fallback.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "cgroup2", "cgroup2", str(fallback)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise CgroupError(f"mounting cgroup2 at {fallback} failed: {proc.stderr.strip()}")
    root = cgroup2_root()
    if root is None:
        raise CgroupError(f"cgroup2 was mounted at {fallback} but is not in {MOUNTINFO}")
    return root


def _checked(path: Path, versions: tuple[int, ...] = (2,)) -> tuple[str, Mount]:
    """``path`` made absolute and normalised, with its mount, or CgroupError."""
    full = os.path.realpath(path)
    try:
        return full, cgroup_paths.check_glia_cgroup(full, cgroup_mounts(), versions)
    except CgroupPathError as e:
        raise CgroupError(str(e)) from None


def create_cgroup(path: Path) -> None:
    """Create the cgroup v2 directory ``path`` (fine if it exists); its parent must exist."""
    full, _ = _checked(path)
    try:
        os.mkdir(full)
    except FileExistsError:
        return
    except OSError as e:
        raise CgroupError(f"creating cgroup {full} failed: {e.strerror}") from None


def _write_procs(directory: str, pid: int) -> None:
    with open(os.path.join(directory, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def move_pid(path: Path, pid: int) -> None:
    """Move process ``pid`` (all its threads) into the cgroup v2 directory ``path``."""
    full, _ = _checked(path)
    try:
        _write_procs(full, pid)
    except ProcessLookupError:
        raise CgroupError(f"moving pid {pid} into cgroup {full}: no such process") from None
    except OSError as e:
        raise CgroupError(f"moving pid {pid} into cgroup {full} failed: {e.strerror}") from None


def procs(path: Path) -> list[int]:
    """The processes in ``path`` itself (not in its child cgroups), each once."""
    try:
        text = (Path(path) / "cgroup.procs").read_text()
    except OSError as e:
        raise CgroupError(f"reading {path}/cgroup.procs failed: {e.strerror}") from None
    return list(dict.fromkeys(int(word) for word in text.split()))


def pid_cgroup(pid: int) -> str:
    """Process ``pid``'s cgroup v2 as ``/proc/PID/cgroup`` names it (``/glia-lab-...``)."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError as e:
        raise CgroupError(f"reading /proc/{pid}/cgroup failed: {e.strerror}") from None
    found = cgroup_paths.proc_cgroup2(text)
    if found is None:
        raise CgroupError(f"process {pid} is in no cgroup v2 (no 0:: line in /proc/{pid}/cgroup)")
    return found


def remove_cgroup(path: Path) -> bool:
    """Remove the cgroup ``path`` with everything below it; False when it does not exist.

    Works in cgroup2 and in cgroup v1 hierarchies (podman's ``--cgroup-parent``
    makes the same directory in each). Child cgroups go first, deepest first:
    they sit inside a "glia" cgroup, so they are glia's or its containers'.
    Processes still inside (leftovers of a crashed lab) are moved to the
    hierarchy's root first, so nothing is killed here.
    """
    full, mount = _checked(path, versions=(1, 2))
    if not os.path.isdir(full):
        return False
    below = [top for top, _, _ in os.walk(full, topdown=False)]
    for directory in below:
        _evacuate(directory, mount[0])
        _rmdir(directory)
    return True


def _evacuate(directory: str, root: str) -> None:
    deadline = time.monotonic() + EVACUATE_TIMEOUT
    while pids := procs(Path(directory)):
        if time.monotonic() > deadline:
            raise CgroupError(
                f"cgroup {directory} still holds processes {pids} after {EVACUATE_TIMEOUT:g} s"
            )
        for pid in pids:
            try:
                _write_procs(root, pid)
            except ProcessLookupError:
                continue  # exited meanwhile
            except OSError as e:
                raise CgroupError(
                    f"moving pid {pid} out of cgroup {directory} (to {root}) failed: {e.strerror}"
                ) from None
        time.sleep(0.01)  # a process forking meanwhile: its child is moved next round


def _rmdir(directory: str) -> None:
    deadline = time.monotonic() + EVACUATE_TIMEOUT
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            # EBUSY: a process that just left (or exited) is still being accounted.
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"removing cgroup {directory} failed: {e.strerror}") from None
        time.sleep(0.05)


def release_glia_mount(point: Path = GLIA_CGROUP2_MOUNT) -> bool:
    """Unmount the cgroup2 that :func:`ensure_cgroup2_root` mounted at ``point`` once no
    glia cgroup is left in it (another lab or an agent may still use it by this path);
    True when it was unmounted. The mount shows the machine's one cgroup2 hierarchy, so
    others' cgroups may be there: they do not need this mount point."""
    full = os.path.realpath(point)
    if not any(m[0] == full and m[2] == 2 for m in cgroup_mounts()):
        return False
    with os.scandir(full) as entries:
        if any(e.is_dir() and e.name.startswith(cgroup_paths.GLIA_PREFIX) for e in entries):
            return False
    proc = subprocess.run(["umount", full], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CgroupError(f"unmounting cgroup2 at {full} failed: {proc.stderr.strip()}")
    with contextlib.suppress(OSError):  # still mounted elsewhere, or not empty: leave it
        os.rmdir(full)
    return True
