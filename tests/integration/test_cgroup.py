"""cgroup v2 directories for socket load-balancing, for real (glia.datapath.cgroup).

Needs root. Creates cgroups named ``glia-test-<pid>-*`` at the top of the host's
cgroup2 hierarchy (and, for the teardown test, ``glia-lab-gliacgi-*`` ones as a
lab would), moves ``sleep`` children in and out, runs the ``glia-oci-hook``
console script as runc would, and mounts a private cgroup2 inside a throw-away
mount namespace. Leftovers of a crashed run (a dead pid in the name) are
removed first; every test removes its cgroups and processes even on failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from glia.datapath import cgroup
from glia.datapath.cgroup import CgroupError
from glia.lab import teardown, topology

pytestmark = [pytest.mark.root]

HOOK = Path(sys.executable).parent / "glia-oci-hook"
_STALE_RE = re.compile(r"^glia-test-(\d+)-")
_LAB = "gliacgi"  # the teardown test's lab name: no real lab uses it


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _cleanup_stale(root: Path) -> None:
    for entry in root.iterdir():
        m = _STALE_RE.match(entry.name)
        if entry.is_dir() and m and not _pid_alive(int(m.group(1))):
            cgroup.remove_cgroup(entry)


@pytest.fixture
def root() -> Path:
    found = cgroup.ensure_cgroup2_root()
    _cleanup_stale(found)
    return found


class Sleepers:
    """``sleep`` children of the test, killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> int:
        proc = subprocess.Popen(["sleep", "300"])
        self.procs.append(proc)
        return proc.pid

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def sleepers() -> Iterator[Sleepers]:
    s = Sleepers()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def made(root: Path) -> Iterator[list[Path]]:
    """Cgroups the test makes (append them); removed at the end whatever happened."""
    paths: list[Path] = []
    try:
        yield paths
    finally:
        for path in reversed(paths):
            cgroup.remove_cgroup(path)


def _name() -> str:
    return f"glia-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def test_create_move_list_and_remove(root: Path, made: list[Path], sleepers: Sleepers) -> None:
    path = root / _name()
    made.append(path)
    cgroup.create_cgroup(path)
    cgroup.create_cgroup(path)  # idempotent
    assert path.is_dir() and cgroup.procs(path) == []
    pid = sleepers.start()
    cgroup.move_pid(path, pid)
    assert cgroup.procs(path) == [pid]
    assert cgroup.pid_cgroup(pid) == f"/{path.name}"
    assert f"0::/{path.name}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    # A child forked inside inherits the cgroup.
    child = subprocess.run(
        ["sh", "-c", "cat /proc/self/cgroup"],
        preexec_fn=lambda: cgroup.move_pid(path, os.getpid()),
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"0::/{path.name}" in child.stdout
    # Still holding the sleeper: remove moves it back to the root first.
    assert cgroup.remove_cgroup(path) is True
    assert not path.exists()
    assert cgroup.pid_cgroup(pid) == "/" and _pid_alive(pid)
    assert cgroup.remove_cgroup(path) is False


def test_remove_takes_the_whole_subtree(root: Path, made: list[Path], sleepers: Sleepers) -> None:
    top = root / _name()
    made.append(top)
    cgroup.create_cgroup(top)
    (top / "libpod-0123").mkdir()  # as podman --cgroup-parent would leave it
    cgroup.create_cgroup(top / "libpod-0123" / "glia-inner")
    a, b = sleepers.start(), sleepers.start()
    (top / "libpod-0123" / "cgroup.procs").write_text(str(a))
    cgroup.move_pid(top / "libpod-0123" / "glia-inner", b)
    assert cgroup.pid_cgroup(b) == f"/{top.name}/libpod-0123/glia-inner"
    assert cgroup.remove_cgroup(top) is True
    assert not top.exists()
    assert cgroup.pid_cgroup(a) == cgroup.pid_cgroup(b) == "/"


def test_refusals(root: Path, tmp_path: Path, sleepers: Sleepers) -> None:
    with pytest.raises(CgroupError, match="name starts with 'glia'"):
        cgroup.create_cgroup(root / f"notglia-{os.getpid()}")
    with pytest.raises(CgroupError, match="name starts with 'glia'"):
        cgroup.remove_cgroup(root)
    with pytest.raises(CgroupError, match="not inside a cgroup2 mount"):
        cgroup.create_cgroup(tmp_path / "glia-x")
    with pytest.raises(CgroupError, match="not inside a cgroup2 mount"):
        cgroup.move_pid(tmp_path / "glia-x", sleepers.start())
    assert not (root / f"notglia-{os.getpid()}").exists()
    with pytest.raises(CgroupError, match=r"creating cgroup .*No such file"):
        cgroup.create_cgroup(root / _name() / "glia-child")  # its parent is missing
    with pytest.raises(CgroupError, match="no such process"):
        path = root / _name()
        try:
            cgroup.create_cgroup(path)
            cgroup.move_pid(path, 2**22 + 1)  # above pid_max's ceiling: never a process
        finally:
            cgroup.remove_cgroup(path)


def _hook(cgroup_dir: Path, pid: int, log: Path) -> subprocess.CompletedProcess[str]:
    state = json.dumps({"ociVersion": "1.0.2", "id": "f" * 64, "status": "creating", "pid": pid})
    return subprocess.run(
        [str(HOOK), "--cgroup", str(cgroup_dir), "--log", str(log)],
        input=state,
        capture_output=True,
        text=True,
        timeout=30,
        env={},  # runc may give hooks an empty environment
    )


def test_the_oci_hook_moves_the_process_once(
    root: Path, made: list[Path], sleepers: Sleepers, tmp_path: Path
) -> None:
    node = root / _name()
    made.append(node)
    cgroup.create_cgroup(node)
    log = tmp_path / "hook.log"
    pid = sleepers.start()
    done = _hook(node, pid, log)
    assert (done.returncode, done.stderr) == (0, "")
    assert cgroup.pid_cgroup(pid) == f"/{node.name}"
    # Already below the node (podman --cgroup-parent): left where it is.
    (node / "libpod-1").mkdir()
    (node / "libpod-1" / "cgroup.procs").write_text(str(pid))
    assert _hook(node, pid, log).returncode == 0
    assert cgroup.pid_cgroup(pid) == f"/{node.name}/libpod-1"
    assert not log.exists()
    # A failure: exit 0 all the same, one line on stderr and in the log.
    gone = _hook(root / _name(), pid, log)
    assert gone.returncode == 0 and gone.stderr.count("\n") == 1
    assert "per packet" in gone.stderr and "No such file" in gone.stderr
    assert log.read_text().count("\n") == 1


# Runs in its own mount and cgroup namespaces: the host's cgroup2 mounts vanish there
# (the host keeps them), and the cgroup2 it mounts shows only the subtree it runs in,
# so glia cgroups of a lab running meanwhile do not keep it mounted.
_FALLBACK = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    from glia.datapath import cgroup
    for point, _, version in reversed(cgroup.cgroup_mounts()):
        if version == 2:
            subprocess.run(["umount", point], check=True)
    assert cgroup.cgroup2_root() is None
    fallback = Path(sys.argv[1])
    root = cgroup.ensure_cgroup2_root(fallback)
    assert root == fallback and cgroup.cgroup2_root() == fallback, root
    assert cgroup.ensure_cgroup2_root(fallback) == fallback  # mounted once
    child = fallback / "glia-child"
    cgroup.create_cgroup(child)
    cgroup.move_pid(child, os.getpid())
    assert cgroup.pid_cgroup(os.getpid()) == "/glia-child"
    assert cgroup.release_glia_mount(fallback) is False  # a glia cgroup is still there
    assert cgroup.remove_cgroup(child)
    assert cgroup.pid_cgroup(os.getpid()) == "/"
    assert cgroup.release_glia_mount(fallback) is True
    assert cgroup.cgroup2_root() is None and not fallback.exists()
    print("ok")
    """
)


def test_cgroup2_is_mounted_where_there_is_none(
    root: Path, made: list[Path], tmp_path: Path
) -> None:
    outer = root / _name()  # the new cgroup namespace's root
    made.append(outer)
    cgroup.create_cgroup(outer)
    fallback = tmp_path / "glia-cgroup2"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--cgroup", sys.executable, "-c",
         _FALLBACK, str(fallback)],
        preexec_fn=lambda: cgroup.move_pid(outer, os.getpid()),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert not (outer / "glia-child").exists()
    assert cgroup.cgroup2_root() == root  # the host's mounts are untouched


def _v1_pids() -> Path | None:
    for point, mount_root, version in cgroup.cgroup_mounts():
        if version == 1 and mount_root == "/" and Path(point).name == "pids":
            return Path(point)
    return None


def test_lab_down_removes_only_its_own_node_cgroups(
    root: Path, made: list[Path], sleepers: Sleepers, tmp_path: Path
) -> None:
    topo = topology.build(_LAB, 1, 2, tmp_path / "glia-lab")
    mine = [n.cgroup(root) for n in topo.nodes]
    other = root / topology.cgroup_name(_LAB + "x", "c1-n1")  # another lab, longer name
    leftover = root / topology.cgroup_name(_LAB, "c3-n7")  # a larger earlier shape
    made += [*mine, other, leftover]
    for path in [*mine, other, leftover]:
        cgroup.create_cgroup(path)
    (mine[0] / "libpod-0123").mkdir()
    crashed = sleepers.start()  # a process of a crashed lab, still inside
    (mine[0] / "libpod-0123" / "cgroup.procs").write_text(str(crashed))
    v1 = _v1_pids()
    if v1 is not None:  # hybrid hosts: podman --cgroup-parent fills v1 hierarchies too
        made.append(v1 / mine[1].name)
        (v1 / mine[1].name / "conmon").mkdir(parents=True)
        (v1 / mine[1].name / "conmon" / "cgroup.procs").write_text(str(sleepers.start()))
    assert set(teardown.lab_cgroups(topo)) >= {*mine, leftover}
    assert other not in teardown.lab_cgroups(topo)

    report = teardown.down(topo)

    assert not report.problems, report.problems
    names = {n.cgroup_name for n in topo.nodes} | {leftover.name}
    assert {p for p in report.paths if p.startswith("cgroup ")} == {f"cgroup {n}" for n in names}
    assert teardown.lab_cgroups(topo) == []
    assert not any(p.exists() for p in [*mine, leftover])
    if v1 is not None:
        assert not (v1 / mine[1].name).exists()
    assert other.is_dir()
    assert _pid_alive(crashed) and cgroup.pid_cgroup(crashed) == "/"
    again = teardown.down(topo)
    assert not again.problems and not any(p.startswith("cgroup ") for p in again.paths)
