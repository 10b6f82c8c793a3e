"""The lab as one object: ``up``, ``repair``, ``down``, ``status``, daemons, exec, containers.

Called by the ``glia lab`` CLI (:mod:`glia.cli.lab`), the demo
(:mod:`glia.lab.demo`), the supervisor (:mod:`glia.lab.supervisor`), the
end-to-end tests (``tests/e2e/conftest.py``) and ``bench/``.

:class:`Lab` is made of parts, one module each, over a shared base
(:class:`glia.lab.base.LabBase`: the topology, ``state.json`` under its lock,
the daemons' configuration):

- :class:`glia.lab.daemons.LabDaemons`: start, stop, restart, kill and
  reconfigure etcd, operators, agents and the supervisor; wait for health;
- :class:`glia.lab.workloads.LabWorkloads`: commands and containers in the nodes;
- this module: the lab as a whole. ``up`` composes the pure topology with the
  pieces that do I/O: namespaces and the underlay (:mod:`glia.lab.underlay`),
  the world's HTTP server (:mod:`glia.lab.world`, for egress),
  one etcd per cluster (TLS and RBAC on), podman per node
  (:mod:`glia.lab.podman`), a cgroup v2 directory per node for socket
  load-balancing (:mod:`glia.datapath.cgroup`; the node's containers join it
  and its agent attaches there), and the glia daemons, all recorded in
  ``state.json``; ``down`` removes it all (:mod:`glia.lab.teardown`).

``up`` ends by starting the lab's supervisor (``glia lab supervise``), which
restarts a daemon that dies. ``up`` of a lab that exists in the same shape
restarts what is down and keeps everything else (:meth:`Lab.repair`); only
``recreate`` wipes it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any

from glia.cni.config import bridge_conflist, chained_conflist, conflist, split_chained_block
from glia.cni.install import PYTHON_PLUGIN_NAME
from glia.datapath import cgroup
from glia.kvstore import rbac
from glia.lab import (
    configs,
    hostsetup,
    netns,
    processes,
    state,
    status,
    supervision,
    teardown,
    topology,
    underlay,
)
from glia.lab.base import QuietReporter, Reporter, bin_dir, cni_plugin
from glia.lab.daemons import AGENTS_TIMEOUT, ETCD_TIMEOUT, SUPERVISOR, LabDaemons, _daemon_env
from glia.lab.errors import DaemonExited, LabAlreadyUp, LabError
from glia.lab.etcd import EtcdError
from glia.lab.podman import (
    BRIDGE_DEVICE,
    BRIDGE_NETWORK,
    CHAINED_NETWORK,
    SYSTEM_CNI_DIR,
    NodePodman,
    PodmanError,
    build_rootfs,
)
from glia.lab.state import LabState
from glia.lab.topology import IMAGE, TopologyError
from glia.lab.workloads import LabWorkloads

DEFAULT_CLUSTERS = 1
DEFAULT_NODES = 2
OCI_HOOK = "glia-oci-hook"  # console script that puts containers into their node's cgroup
_TOOLS = ("ip", "nsenter", "etcd", "etcdctl", "podman", "runc", "tar")


class Lab(LabDaemons, LabWorkloads):
    """One lab, by name and directory; the lab itself may be up or not."""

    @classmethod
    def open(
        cls,
        name: str | None = None,
        lab_dir: Path | None = None,
        *,
        clusters: int | None = None,
        nodes: int | None = None,
        reporter: Reporter | None = None,
    ) -> Lab:
        """The lab ``name`` (default ``$GLIA_LAB_NAME`` or "glia"); its shape from
        ``clusters``/``nodes``, else from its state file, else 1 cluster of 2 nodes."""
        name = topology.validate_lab_name(name or topology.default_lab_name())
        lab_dir = lab_dir or topology.default_lab_dir(name)
        try:
            st = state.load(lab_dir / "state.json")
        except state.StateError:
            st = None
        c = clusters or (st.clusters if st else DEFAULT_CLUSTERS)
        n = nodes or (st.nodes if st else DEFAULT_NODES)
        return cls(topology.build(name, c, n, lab_dir), reporter)

    def is_up(self) -> bool:
        """Built completely, every namespace there, every recorded process (the
        supervisor's too) alive."""
        try:
            st = self.state()
        except LabError:
            return False
        if st is None or not st.complete:
            return False
        if self._missing_netns(st):
            return False
        if st.supervisor is None or not processes.alive(st.supervisor):
            return False
        return all(processes.alive(r) for r in st.processes.values())

    def _missing_netns(self, st: LabState) -> list[str]:
        # As recorded: this object may describe the shape the lab is about to get.
        built = topology.build(self.name, st.clusters, st.nodes, self.topo.dir)
        return [ns for ns in built.netns_names if not netns.exists(ns)]

    def leftovers(self) -> bool:
        """Whether anything of this lab exists on the machine."""
        return (
            self.topo.dir.exists()
            or self.topo.bpf_dir.exists()
            or any(self.topo.is_own_netns(n) for n in netns.list_names())
            or bool(teardown.lab_cgroups(self.topo))
        )

    # --- up ------------------------------------------------------------------

    def up(
        self, *, agents: bool = True, recreate: bool = False, timeout: float = AGENTS_TIMEOUT
    ) -> bool:
        """Build the lab, or start again what is down in the lab that exists.

        Returns False (and nothing done) when it is already up in this shape.
        A lab that exists in this shape is never rebuilt: its dead daemons
        (and its supervisor) are started again, its namespaces, containers,
        etcd data, Services and pins are kept (:meth:`repair`). A lab in another
        shape is an error (:class:`LabAlreadyUp`) unless ``recreate``, which
        removes it and builds it anew. ``agents=False`` builds namespaces, etcd
        and podman only. On failure the lab stays as far as it got (for its
        logs) and :class:`LabError` says what failed; :meth:`down` removes it.
        """
        _check_host(agents)
        shape = (len(self.topo.clusters), len(self.topo.clusters[0].nodes), agents)
        try:
            st = None if recreate else self.state()
        except LabError:
            st = None  # an unreadable state file: leftovers, removed below
        if st is not None and st.complete:
            if (st.clusters, st.nodes, st.agents) != shape:
                up = self.is_up()
                raise LabAlreadyUp(
                    f"lab {self.name!r} {'is already up' if up else 'exists'} with "
                    f"{st.clusters} cluster(s) of {st.nodes} node(s) "
                    f"{'with' if st.agents else 'without'} agents; `glia lab up --recreate` "
                    "rebuilds it in the new shape (removing its containers)"
                    + ("" if up else "; `glia lab up` without a shape restarts what is down")
                )
            restarted = self.repair(timeout=timeout)
            if not restarted:
                self.reporter.note(f"lab {self.name!r} is already up")
            return bool(restarted)
        if self.leftovers():
            # Never a complete lab (that one is kept above): a build that failed
            # or was interrupted, or a lab whose state file is gone.
            self.reporter.step(f"removing the earlier lab {self.name!r}")
            self.down()

        started = time.monotonic()
        self.topo.dir.mkdir(parents=True, exist_ok=True)
        self.topo.marker_file.write_text(self.name + "\n")
        with self.locked():
            self._save(
                LabState(
                    name=self.name,
                    dir=str(self.topo.dir),
                    clusters=shape[0],
                    nodes=shape[1],
                    agents=agents,
                    created=time.time(),
                )
            )
        self.reporter.step(f"network: {len(self.topo.netns_names)} namespaces on a bridge")
        try:
            underlay.build(self.topo)
        except netns.NetnsError as e:
            raise LabError(f"building the underlay failed: {e}") from None
        self.start_world()
        self._start_etcds()
        self._setup_podman(self._create_cgroups())
        if agents:
            self._write_daemon_configs()
            self.reporter.step("operators")
            for c in self.topo.clusters:
                self.start_operator(c.name)
            self.reporter.step("agents")
            for n in self.topo.nodes:
                self.start_agent(n.ref, wait=False)
            self.wait_agents(timeout=timeout)
            self._write_chained_networks()
        self.start_supervisor()
        self._update(lambda st: dataclasses.replace(st, complete=True))
        self.reporter.step(f"lab {self.name!r} is up ({time.monotonic() - started:.1f} s)")
        return True

    def repair(self, timeout: float = AGENTS_TIMEOUT) -> list[str]:
        """Start every daemon of the built lab that is not running, and its supervisor.

        Returns the process names started ([] when all ran). Touches nothing
        else: namespaces, containers, etcd data, Services and pins stay. A
        paused (SIGSTOPped) daemon is alive and left alone. A lab whose
        namespaces are gone cannot be repaired: the error says so.
        """
        st = self.state()
        if st is None or not st.complete:
            raise LabError(f"lab {self.name!r} is not built (`glia lab up` builds it)")
        missing = self._missing_netns(st)
        if missing:
            raise LabError(
                f"lab {self.name!r} lost its namespaces {', '.join(missing)}; "
                "`glia lab up --recreate` rebuilds it (removing its containers)"
            )
        expected = {d.process for d in supervision.daemons(self.topo, agents=st.agents)}
        todo = [
            d
            for d in supervision.daemons(self.topo)
            if (d.process in expected or d.process in st.processes)
            and (d.process not in st.processes or not processes.alive(st.processes[d.process]))
        ]
        for d in todo:
            self.reporter.step(f"starting {d.process} again")
            if d.kind is supervision.Kind.ETCD:
                self.start_etcd(d.target)
            elif d.kind is supervision.Kind.OPERATOR:
                self.start_operator(d.target)
            else:
                self.start_agent(d.target, wait=False)
        done = [d.process for d in todo]
        world = st.processes.get(topology.WORLD_PROCESS)
        if world is None or not processes.alive(world):
            self.start_world()
            done.append(topology.WORLD_PROCESS)
        if st.supervisor is None or not processes.alive(st.supervisor):
            self.start_supervisor()
            done.append(SUPERVISOR)
        agents = [d.target for d in todo if d.kind is supervision.Kind.AGENT]
        if agents:
            self._wait_started(agents, timeout)
        if done:
            self.reporter.step(
                f"lab {self.name!r}: started {', '.join(done)} again; "
                "namespaces, containers, etcd data and Services kept"
            )
        return done

    def start_world(self) -> processes.ProcessRecord:
        """The world's HTTP server (:mod:`glia.lab.world`) in ``<lab>-world``; recorded."""
        rec = self._record(topology.WORLD_PROCESS)
        if rec is not None and processes.alive(rec):
            return rec
        argv = [
            str(bin_dir() / "python"),
            "-m",
            "glia.lab.world",
            "--bind",
            str(topology.WORLD_IP),
            "--port",
            str(topology.WORLD_PORT),
            "--lab",
            self.name,
            "--dir",
            str(self.topo.world_log.parent),
        ]
        try:
            rec = processes.spawn(
                topology.WORLD_PROCESS,
                argv,
                log=self.topo.world_log,
                token=str(self.topo.world_log.parent),
                netns_name=self.topo.world_netns,
                env=_daemon_env(),
            )
        except processes.ProcessError as e:
            raise LabError(str(e)) from None
        self._put_record(rec)
        self.reporter.note(f"world: {self.topo.world_url} pid {rec.pid}, log {rec.log}")
        return rec

    def _start_etcds(self) -> None:
        self.reporter.step("etcd: one per cluster, TLS, client-certificate auth, RBAC")
        for c in self.topo.clusters:
            try:
                self.etcd(c.name).start()
            except EtcdError as e:
                raise LabError(f"{c.name}: {e}") from None
            self._put_record(self._etcd_record(c))
        for c in self.topo.clusters:
            try:
                self.etcd(c.name).wait_ready(ETCD_TIMEOUT)
                self.etcd(c.name).bootstrap_auth(
                    rbac.cluster_users(c.name, [n.name for n in c.nodes])
                )
            except EtcdError as e:
                raise LabError(f"{c.name}: {e}") from None

    def _create_cgroups(self) -> Path:
        """Each node's cgroup v2 directory (before podman runs); the cgroup2 mount point."""
        try:
            root = cgroup.ensure_cgroup2_root()
            for n in self.topo.nodes:
                cgroup.create_cgroup(n.cgroup(root))
        except cgroup.CgroupError as e:
            raise LabError(f"node cgroups for socket load-balancing: {e}") from None
        self.reporter.note(
            f"cgroups under {root}: {', '.join(n.cgroup_name for n in self.topo.nodes)}"
        )
        return root

    def _setup_podman(self, cgroup_root: Path) -> None:
        self.reporter.step(f"podman: storage, glia CNI network and image {IMAGE} per node")
        hook = bin_dir() / OCI_HOOK
        if not hook.exists():
            raise LabError(f"{hook} is missing: install glia into this venv (scripts/setup.sh)")
        self.topo.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        # As `glia cni install` lays them out, but linked (a rebuilt fast path counts at
        # once): the fast path, and next to it the Python plugin it hands over to.
        for name, target in (
            ("glia-cni", cni_plugin()),
            (PYTHON_PLUGIN_NAME, bin_dir() / "glia-cni"),
        ):
            link = self.topo.cni_bin_dir / name
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        build_rootfs(self.topo.rootfs_dir)
        for n in self.topo.nodes:
            pm = NodePodman(n)
            by_docs = n == self.topo.host_setup_node  # its plugin and network: glia cni install
            pm.write_config(
                [hostsetup.cni_bin_dir(n) if by_docs else self.topo.cni_bin_dir, SYSTEM_CNI_DIR],
                None if by_docs else conflist(str(n.socket)),
                hook=hook,
                cgroup=n.cgroup(cgroup_root),
            )
            try:
                pm.import_image(self.topo.rootfs_dir)
            except PodmanError as e:
                raise LabError(str(e)) from None

    def _write_chained_networks(self) -> None:
        """Each node's ``glia-chained`` (ptp) and ``glia-bridge`` (bridge) networks, in
        the two halves of the block its agent keeps for chained plugins."""
        for n in self.topo.nodes:
            block = self.agent(n.ref).status().get("chained_cidr")
            if not isinstance(block, str):
                raise LabError(f"{n.ref}: the agent reports no chained_cidr")
            ptp_range, bridge_range = split_chained_block(block)
            sock, dns = str(n.socket), (str(n.ip),)
            # host-local keeps a directory per network under the first; tuning
            # (IPv6 off in the pod) keeps nothing for sysctls, but never in /run.
            ipam, tuning = str(n.podman_dir / "cni-ipam"), str(n.podman_dir / "cni-tuning")
            pm = NodePodman(n)
            pm.write_network(
                CHAINED_NETWORK,
                chained_conflist(
                    ptp_range, sock, nameservers=dns, ipam_data_dir=ipam, tuning_data_dir=tuning
                ),
            )
            pm.write_network(
                BRIDGE_NETWORK,
                bridge_conflist(
                    bridge_range,
                    sock,
                    bridge=BRIDGE_DEVICE,
                    nameservers=dns,
                    ipam_data_dir=ipam,
                    tuning_data_dir=tuning,
                ),
            )

    def _write_daemon_configs(self) -> None:
        for c in self.topo.clusters:
            configs.write_yaml(c.operator_config, self.operator_config(c.name))
        for n in self.topo.nodes:
            n.dir.mkdir(parents=True, exist_ok=True)
            self.write_clustermesh_dir(n.ref)
            if n == self.topo.host_setup_node:
                self.set_up_as_host(n.ref)
            else:
                configs.write_yaml(n.agent_config, self.agent_config(n.ref))

    # --- down, status ---------------------------------------------------------

    def down(self) -> teardown.DownReport:
        """Remove everything of this lab (also after a crash, also when nothing is up)."""
        topo = teardown.lab_topology(self.name, self.topo.dir)
        report = teardown.down(topo, self.reporter.note)
        # teardown ended them by PID (after the containers, while etcd still
        # answered the agents); this only reaps the ones this object started.
        for server in self._etcd.values():
            server.stop()
        self._etcd.clear()
        return report

    def status(self) -> dict[str, Any]:
        """Everything ``glia lab status`` shows, as plain data (see :mod:`glia.lab.status`)."""
        return status.collect(self.topo, self.state(), self.is_up())


def _check_host(agents: bool) -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, BPF, podman)")
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    if not os.path.ismount("/sys/fs/bpf"):
        raise LabError("bpffs is not mounted at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)")
    # The supervisor is `glia lab supervise`, with or without agents.
    for exe in ("glia", "glia-cni") if agents else ("glia",):
        if not (bin_dir() / exe).exists():
            raise LabError(f"{bin_dir() / exe} is missing: install glia into this venv")
    if agents and not os.access(cni_plugin(), os.X_OK):
        raise LabError(f"{cni_plugin()} is missing: build it with `make bpf`")


__all__ = [
    "DaemonExited",
    "Lab",
    "LabAlreadyUp",
    "LabError",
    "QuietReporter",
    "Reporter",
    "TopologyError",
    "bin_dir",
]
