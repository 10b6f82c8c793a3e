"""Each lab node's cgroup v2 directory: its containers' processes are in it, ``down`` removes it.

Socket load-balancing attaches to ``glia-lab-<lab>-<cluster>-<node>`` at the top of
the cgroup2 hierarchy, so every process of the node's containers must be in it or
below it: the container's first process, what it forks, and what ``podman exec``
starts. The session lab (conftest.py) is checked through ``lab.run_container``
(podman ``--cgroup-parent``) and through a bare ``podman run`` (the OCI hook
alone). The teardown test builds its own one-node lab "gliacg" without agents.
"""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from labhelpers import children, container_pid, lab_dir, leftovers, wait_for

from glia.datapath import cgroup, cgroup_paths
from glia.lab import teardown
from glia.lab.lab import Lab
from glia.lab.topology import IMAGE, NodeSpec

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def _pid_ns(pid: int) -> str:
    return str(Path(f"/proc/{pid}/ns/pid").readlink())


def _host_pids(argv: list[str], same_ns_as: int) -> list[int]:
    """Host PIDs running exactly ``argv`` in the PID namespace of process ``same_ns_as``."""
    want, ns = "\0".join(argv) + "\0", _pid_ns(same_ns_as)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "cmdline").read_text() == want and _pid_ns(int(proc.name)) == ns:
                found.append(int(proc.name))
        except OSError:
            continue  # exited meanwhile
    return found


def _node_cgroup(node: NodeSpec) -> str:
    """The node's cgroup as /proc/PID/cgroup names it."""
    return "/" + node.cgroup_name


@pytest.fixture
def names(lab: Lab) -> Iterator[list[tuple[str, str]]]:
    """(node, container) pairs the test starts; removed at the end."""
    made: list[tuple[str, str]] = []
    try:
        yield made
    finally:
        for node, name in made:
            lab.podman(node).run(["rm", "-f", "-t", "0", "--ignore", name], check=False)


def test_every_process_of_a_container_is_in_its_node_cgroup(
    lab: Lab, names: list[tuple[str, str]]
) -> None:
    node = lab.node("c1/n2")
    root = cgroup.cgroup2_root()
    assert root is not None and node.cgroup(root).is_dir()
    assert lab.agent_config(node.ref).socket_lb_cgroup == str(node.cgroup(root))
    mine = _node_cgroup(node)

    name = f"glia-cg-{uuid.uuid4().hex[:6]}"
    names.append((node.ref, name))
    script = "sleep 3001 & exec httpd -f -p 80 -h /"
    ctr = lab.run_container(node.ref, name, labels={"app": "cgroup"}, command=["sh", "-c", script])
    init = container_pid(lab, ctr)
    assert cgroup_paths.is_within(cgroup.pid_cgroup(init), mine), cgroup.pid_cgroup(init)
    forked = wait_for("the container's own sleep", lambda: children(init, "sleep"))
    assert cgroup_paths.is_within(cgroup.pid_cgroup(forked[0]), mine)

    token = str(random.randint(100_000, 999_999))
    lab.podman(node.ref).run(["exec", "-d", name, "sleep", token])
    execd = wait_for("the exec'd sleep", lambda: _host_pids(["sleep", token], init))
    assert cgroup_paths.is_within(cgroup.pid_cgroup(execd[0]), mine), cgroup.pid_cgroup(execd[0])
    # Never in the other node's cgroup.
    other = _node_cgroup(lab.node("c1/n1"))
    assert not cgroup_paths.is_within(cgroup.pid_cgroup(init), other)
    assert not node.oci_hook_log.exists()


def test_the_oci_hook_alone_moves_a_container_started_by_hand(
    lab: Lab, names: list[tuple[str, str]]
) -> None:
    # A bare `podman run` with the node's configuration: no --cgroup-parent, so
    # runc puts the process in its own cgroup and the hook moves it before it runs.
    node = lab.node("c1/n1")
    name = f"glia-cg-{uuid.uuid4().hex[:6]}"
    names.append((node.ref, name))
    pm = lab.podman(node.ref)
    pm.run(["run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "3002"])
    pid = int(pm.run(["container", "inspect", "-f", "{{.State.Pid}}", name]).strip())
    where = cgroup.pid_cgroup(pid)
    log = node.oci_hook_log.read_text() if node.oci_hook_log.exists() else ""
    if where != _node_cgroup(node):
        # Only where runc's cgroup enforces controllers (a pure cgroup v2 host),
        # which the hook must not lift: then it says so in the node's hook log.
        assert f"container {pm.inspect(name).id[:12]}" in log and "enforces" in log, (where, log)
    else:
        assert log == ""


def test_down_removes_the_node_cgroups_also_after_a_crash() -> None:
    lab = Lab.open("gliacg", lab_dir("gliacg"), clusters=1, nodes=1)
    node = lab.node("c1/n1")
    stray: subprocess.Popen[bytes] | None = None
    try:
        lab.up(agents=False, recreate=True)
        root = cgroup.cgroup2_root()
        assert root is not None and node.cgroup(root).is_dir()
        lab.run_container(node.ref, "glia-cg-down", network="none", command=["sleep", "3003"])
        assert node.cgroup(root) in teardown.lab_cgroups(lab.topo)
        # A crash: the state file is gone and a process is left in the node cgroup.
        lab.topo.state_file.unlink()
        path = node.cgroup(root)
        stray = subprocess.Popen(
            ["sleep", "3004"], preexec_fn=lambda: cgroup.move_pid(path, os.getpid())
        )
        report = Lab.open("gliacg", lab_dir("gliacg")).down()
        assert not report.problems, report.problems
        assert f"cgroup {node.cgroup_name}" in report.paths
        assert teardown.lab_cgroups(lab.topo) == []
        assert not path.exists()
        assert cgroup.pid_cgroup(stray.pid) == "/"  # moved out, not killed
        assert leftovers(lab) == []
    finally:
        if stray is not None:
            stray.kill()
            stray.wait(timeout=10)
        lab.down()
