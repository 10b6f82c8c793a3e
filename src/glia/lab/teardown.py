"""``glia lab down``: remove everything a lab made, whatever state it is in.

Called by :meth:`glia.lab.lab.Lab.down` and before ``up`` rebuilds over
leftovers. Works when the lab is up, half built, crashed (``state.json``
missing or stale: the lab's names tell what is its) or absent. It touches only
what carries the lab's prefix, plus the podman namespaces of containers found
in the lab's own podman storage. Order matters:

0. the lab's supervisor (by its record, and by its command line when the
   state file is gone), so it restarts nothing of what follows;
1. containers (``podman rm -af`` per node, so podman and the CNI plugin remove
   their namespaces while the agents still answer);
2. processes: recorded PIDs whose cmdline still holds their token, then any
   process left inside one of the lab's namespaces (never this process or its
   ancestors);
3. namespaces with the lab's prefix (nodes, etcd, world, underlay);
4. the lab's bpffs pins (``/sys/fs/bpf/glia/lab-<lab>``);
5. the nodes' cgroups (``glia-lab-<lab>-c<i>-n<j>`` in the cgroup2 hierarchy and in
   each v1 hierarchy podman's ``--cgroup-parent`` filled), with whatever podman
   left below them; processes still inside go back to the hierarchy's root;
   then the cgroup2 mount glia made at ``/run/glia/cgroup2``, once unused;
6. mounts under the lab directory, then the directory itself (only if it holds
   the lab's marker file), and podman's CNI result cache of the lab's containers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glia.datapath import cgroup
from glia.lab import docker, netns, processes, state, supervision, topology, underlay
from glia.lab.podman import NodePodman, PodmanError
from glia.lab.topology import Topology

CNI_RESULTS = Path("/var/lib/cni/results")


@dataclass
class DownReport:
    containers: list[str] = field(default_factory=list)  # "c1/n1/web"
    processes: list[str] = field(default_factory=list)  # names or "pid N"
    namespaces: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # pins and directories removed
    problems: list[str] = field(default_factory=list)  # what could not be removed, and why

    @property
    def empty(self) -> bool:
        return not (self.containers or self.processes or self.namespaces or self.paths)


def lab_topology(name: str, lab_dir: Path) -> Topology:
    """The lab as large as its state file says or its names on this machine show."""
    try:
        st = state.load(lab_dir / "state.json")
    except state.StateError:
        st = None
    nodes_dir = lab_dir / "nodes"
    dirs = [p.name for p in nodes_dir.iterdir()] if nodes_dir.is_dir() else []
    clusters, nodes = topology.discover_shape(name, netns.list_names(), dirs)
    if st is not None:
        clusters, nodes = max(clusters, st.clusters), max(nodes, st.nodes)
    return topology.build(name, max(clusters, 1), max(nodes, 1), lab_dir)


def down(topo: Topology, note: Callable[[str], None] = lambda _: None) -> DownReport:
    report = DownReport()
    try:
        recorded = state.load(topo.state_file)
    except state.StateError as e:
        report.problems.append(str(e))
        recorded = None

    _stop_supervisor(topo, recorded, report, note)
    if recorded is not None:
        # Again: the supervisor may have restarted a daemon before it stopped.
        with contextlib.suppress(state.StateError):
            recorded = state.load(topo.state_file) or recorded
    sandboxes, container_ids = _remove_containers(topo, report, note)
    # While the agents run: docker's removals reach the driver (docs/docker.md).
    gone, dockerds = docker.stop_all(topo, report.problems, note)
    report.containers += gone
    report.processes += dockerds

    note("stopping processes")
    records = list(recorded.processes.values()) if recorded else []
    # Daemons first, etcd last: an agent or operator that cleans up on SIGTERM
    # still reaches its kvstore.
    daemons = [r for r in records if not r.name.endswith("-etcd")]
    report.processes += processes.stop(daemons)
    report.processes += processes.stop([r for r in records if r not in daemons])
    stray = _stray_pids(topo)
    if stray:
        try:
            processes.kill_pids(dict.fromkeys(stray))
        except processes.ProcessError as e:
            report.problems.append(str(e))
        report.processes += [f"pid {p}" for p in sorted(stray)]

    note("removing namespaces")
    report.namespaces += underlay.remove(topo)
    for path in sandboxes:
        # A container's namespace that podman failed to remove (e.g. a CNI DEL error).
        if Path(path).exists() and Path(path).parent == netns.NETNS_DIR:
            try:
                netns.delete(Path(path).name)
                report.namespaces.append(Path(path).name)
            except netns.NetnsError as e:
                report.problems.append(str(e))

    if topo.bpf_dir.exists():
        note(f"removing pins {topo.bpf_dir}")
        shutil.rmtree(topo.bpf_dir, ignore_errors=True)
        _record_removal(topo.bpf_dir, report)

    _remove_cgroups(topo, report, note)
    _remove_dir(topo, report, note)
    # The shared parents (/sys/fs/bpf/glia, /run/glia) go too once nothing
    # else uses them; rmdir refuses while another lab or an agent has pins.
    for parent in (topo.bpf_dir.parent, topo.dir.parent):
        if parent.name == "glia":
            with contextlib.suppress(OSError):
                parent.rmdir()
    for cid in container_ids:
        for f in CNI_RESULTS.glob(f"*-{cid}-*"):
            f.unlink(missing_ok=True)
    return report


def _stop_supervisor(
    topo: Topology,
    recorded: state.LabState | None,
    report: DownReport,
    note: Callable[[str], None],
) -> None:
    token = supervision.supervisor_token(topo)
    found: dict[int, str | None] = {}
    sup = recorded.supervisor if recorded is not None else None
    if sup is not None and processes.alive(sup):
        found[sup.pid] = token
    for proc in Path("/proc").iterdir():
        # A supervisor whose record is lost with state.json (it would exit on
        # its own at its next poll; not waiting for that keeps down exact).
        if proc.name.isdigit():
            line = processes.cmdline(int(proc.name))
            if line is not None and token in line:
                found[int(proc.name)] = token
    if not found:
        return
    note("stopping the supervisor")
    try:
        processes.kill_pids(found)
    except processes.ProcessError as e:
        report.problems.append(str(e))
    report.processes += ["supervisor"] + [f"pid {p}" for p in sorted(found)[1:]]


def _remove_containers(
    topo: Topology, report: DownReport, note: Callable[[str], None]
) -> tuple[list[str], list[str]]:
    sandboxes: list[str] = []
    ids: list[str] = []
    for node in topo.nodes:
        pm = NodePodman(node)
        if not pm.configured():
            continue
        try:
            gone = pm.remove_all()
        except PodmanError as e:
            report.problems.append(str(e))
            continue
        if gone:
            note(f"{node.ref}: removed containers {', '.join(c.name for c in gone)}")
        report.containers += [f"{node.ref}/{c.name}" for c in gone]
        sandboxes += [c.netns_path for c in gone if c.netns_path]
        ids += [c.id for c in gone if c.id]
    return sandboxes, ids


def lab_cgroups(topo: Topology) -> list[Path]:
    """The lab's node cgroups present on the machine, in every cgroup hierarchy."""
    found = []
    for point, root, _version in cgroup.cgroup_mounts():
        if root != "/":
            continue  # a subtree mounted elsewhere: the node cgroups sit at the top
        try:
            with os.scandir(point) as entries:
                names = sorted(e.name for e in entries if e.is_dir() and topo.is_own_cgroup(e.name))
        except OSError:
            continue
        found += [Path(point) / name for name in names]
    return found


def _remove_cgroups(topo: Topology, report: DownReport, note: Callable[[str], None]) -> None:
    removed: dict[str, None] = {}
    for path in lab_cgroups(topo):
        try:
            if cgroup.remove_cgroup(path):
                removed[path.name] = None
        except cgroup.CgroupError as e:
            report.problems.append(str(e))
    if removed:
        note(f"removed cgroups {', '.join(removed)}")
        report.paths += [f"cgroup {name}" for name in removed]
    try:
        cgroup.release_glia_mount()
    except cgroup.CgroupError as e:
        report.problems.append(str(e))


def _stray_pids(topo: Topology) -> set[int]:
    """Processes still inside one of the lab's namespaces."""
    mine = processes.own_lineage()
    found: set[int] = set()
    for name in netns.list_names():
        if topo.is_own_netns(name):
            try:
                found.update(netns.pids(name))
            except netns.NetnsError:
                continue
    return found - mine


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix) or point == str(root):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _remove_dir(topo: Topology, report: DownReport, note: Callable[[str], None]) -> None:
    root = topo.dir
    if not root.exists():
        return
    marker = topo.marker_file
    if not marker.exists() or marker.read_text().strip() != topo.name:
        report.problems.append(
            f"left {root} in place: it has no {marker.name} marker naming lab {topo.name!r}"
        )
        return
    for point in _mounts_under(root):
        proc = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if _mounts_under(root):
        report.problems.append(f"left {root} in place: mounts remain under it")
        return
    note(f"removing {root}")
    shutil.rmtree(root, ignore_errors=True)
    _record_removal(root, report)


def _record_removal(path: Path, report: DownReport) -> None:
    if path.exists():
        report.problems.append(f"could not remove all of {path}")
    else:
        report.paths.append(str(path))
