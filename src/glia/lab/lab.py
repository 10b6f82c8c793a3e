"""The lab as one object: ``up``, ``down``, ``status``, exec and containers.

Called by the ``glia lab`` CLI (:mod:`glia.cli.lab`), the demo
(:mod:`glia.lab.demo`) and the end-to-end tests (``tests/e2e/conftest.py``).
It composes the pure topology with the pieces that do I/O: namespaces and the
underlay (:mod:`glia.lab.underlay`), one etcd per cluster
(:class:`glia.lab.etcd.EtcdServer`, TLS and RBAC on), podman per node
(:mod:`glia.lab.podman`), a cgroup v2 directory per node for socket
load-balancing (:mod:`glia.datapath.cgroup`; the node's containers join it and
its agent attaches there), and the glia daemons as detached processes
(:mod:`glia.lab.processes`), all recorded in ``state.json``.

Process names in the state: ``c1-etcd``, ``c1-operator``, ``c1-n1-agent``.

Daemons are supervised: ``up`` ends by starting the lab's supervisor
(``glia lab supervise``, :mod:`glia.lab.supervisor`), which restarts a daemon
that dies. Stopping one on purpose (:meth:`Lab.stop_agent` and friends, unless
``kill=True`` simulates a crash) marks it stopped in the state first, so the
supervisor leaves it down; every ``start_*`` clears the mark and returns the
live record when the daemon already runs. ``up`` of a lab that exists in the
same shape restarts what is down and keeps everything else; only
``recreate`` wipes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from glia.agent.client import AgentClient
from glia.agent.config import AgentConfig
from glia.agent.config import load as agent_config_load
from glia.cni.config import conflist
from glia.datapath import cgroup
from glia.kvstore import rbac
from glia.kvstore.config import EtcdConfig
from glia.lab import (
    configs,
    health,
    netns,
    processes,
    state,
    status,
    supervision,
    teardown,
    topology,
    underlay,
)
from glia.lab.errors import DaemonExited, LabAlreadyUp, LabError
from glia.lab.etcd import RW_USER, EtcdError, EtcdServer
from glia.lab.podman import SYSTEM_CNI_DIR, Container, NodePodman, PodmanError, build_rootfs
from glia.lab.state import LabState
from glia.lab.topology import (
    ETCD_PEER_PORT,
    ETCD_PORT,
    IMAGE,
    ClusterSpec,
    NodeSpec,
    Topology,
    TopologyError,
)
from glia.operator.config import OperatorConfig
from glia.operator.config import load as operator_config_load

SUPERVISOR = "supervisor"  # its name in messages and in ``lab down``'s report
DEFAULT_CLUSTERS = 1
DEFAULT_NODES = 2
OCI_HOOK = "glia-oci-hook"  # console script that puts containers into their node's cgroup
AGENTS_TIMEOUT = 90.0  # seconds for every agent to report healthy
ETCD_TIMEOUT = 30.0
_TOOLS = ("ip", "nsenter", "etcd", "etcdctl", "podman", "runc", "tar")


class Reporter(Protocol):
    """Progress of long operations, for the CLI to show (tests pass nothing)."""

    def step(self, text: str) -> None:
        """A new phase starts."""

    def note(self, text: str) -> None:
        """Something worth a line within the current phase."""


class QuietReporter:
    def step(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


def bin_dir() -> Path:
    """The directory of the Python that runs glia: ``<repo>/.venv/bin`` in a checkout."""
    return Path(sys.executable).parent


def repo_dir() -> Path:
    return Path(__file__).resolve().parents[3]


class Lab:
    """One lab, by name and directory; the lab itself may be up or not."""

    def __init__(self, topo: Topology, reporter: Reporter | None = None) -> None:
        self.topo = topo
        self.reporter: Reporter = reporter or QuietReporter()
        self._etcd: dict[str, EtcdServer] = {}

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

    # --- state ---------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.topo.name

    @property
    def dir(self) -> Path:
        return self.topo.dir

    def state(self) -> LabState | None:
        try:
            return state.load(self.topo.state_file)
        except state.StateError as e:
            raise LabError(str(e)) from None

    def _save(self, st: LabState) -> LabState:
        state.save(self.topo.state_file, st)
        return st

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the lab's state lock: read, decide and write with no other writer between
        (the supervisor runs in another process). Re-entrant."""
        try:
            with state.locked(self.topo.state_file):
                yield
        except state.StateError as e:
            raise LabError(str(e)) from None

    def _update(self, change: Callable[[LabState], LabState]) -> LabState:
        with self.locked():
            st = self.state()
            if st is None:
                raise LabError(f"lab {self.name!r} has no state file {self.topo.state_file}")
            return self._save(change(st))

    def record_watch(self, watch: Mapping[str, supervision.Watch]) -> None:
        """Save the supervisor's records of the daemons (its restarts, backoff)."""
        self._update(lambda st: dataclasses.replace(st, watch=dict(watch)))

    def _record(self, name: str) -> processes.ProcessRecord | None:
        st = self.state()
        return st.processes.get(name) if st else None

    def _put_record(self, rec: processes.ProcessRecord) -> None:
        self._update(lambda st: dataclasses.replace(st, processes={**st.processes, rec.name: rec}))

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

    def cli_env(self) -> dict[str, str]:
        """Environment for ``glia ... --node c1/n1`` commands aimed at this lab."""
        return {
            **os.environ,
            topology.LAB_DIR_ENV: str(self.topo.dir),
            topology.LAB_NAME_ENV: self.name,
        }

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

    def _etcd_record(self, c: ClusterSpec) -> processes.ProcessRecord:
        server = self.etcd(c.name)
        if server.pid is None:
            raise LabError(f"{c.name}: etcd was not started by this process")
        self.reporter.note(f"{c.name}: etcd at {c.etcd_endpoint} (pid {server.pid})")
        return processes.ProcessRecord(
            name=c.etcd_process,
            pid=server.pid,
            argv=server.command(),
            log=str(c.etcd_log),
            token=f"--data-dir={c.etcd_data_dir}",
            netns=c.etcd_netns,
            started=time.time(),
        )

    def stop_etcd(self, cluster: str, *, kill: bool = False, stay_down: bool | None = None) -> None:
        """Take ``cluster``'s etcd down: SIGTERM, or SIGKILL as a crash (``kill``); its data stays.

        ``stay_down`` (default: ``not kill``) marks it stopped on purpose, so the
        supervisor leaves it down; a crash (``kill`` alone) is restarted by it.
        """
        c = self.topo.cluster(cluster)
        server = self.etcd(c.name)
        rec = self._mark_stopped(c.etcd_process, (not kill) if stay_down is None else stay_down)
        if server.running and (rec is None or rec.pid == server.pid):
            # Started by this object: end it through its Popen, which also reaps it.
            if kill:
                server.kill()
            else:
                server.stop()
        elif rec is not None:
            self._signal(rec, kill)

    def start_etcd(self, cluster: str, *, wait: bool = True) -> processes.ProcessRecord:
        """Start ``cluster``'s etcd again on its data (after :meth:`stop_etcd` or a crash);
        the live record when it runs already. ``wait``: until it answers."""
        c = self.topo.cluster(cluster)
        server = self.etcd(c.name)

        def spawn() -> processes.ProcessRecord:
            try:
                server.start(keep_data=True)
            except EtcdError as e:
                raise LabError(f"{c.name}: {e}") from None
            return self._etcd_record(c)

        rec, started = self._start(c.etcd_process, spawn)
        if started and wait:
            try:
                server.wait_ready(ETCD_TIMEOUT)
            except EtcdError as e:
                self._give_up(rec.name)
                raise LabError(f"{c.name}: {e}") from None
        return rec

    def restart_etcd(self, cluster: str) -> processes.ProcessRecord:
        """SIGTERM ``cluster``'s etcd, start it again on its data (``glia lab restart --etcd``)."""
        self.stop_etcd(cluster)
        return self.start_etcd(cluster, wait=True)

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

    def node_cgroup(self, node: str) -> Path | None:
        """The node's cgroup v2 directory (None while cgroup2 is mounted nowhere)."""
        root = cgroup.cgroup2_root()
        return self.node(node).cgroup(root) if root is not None else None

    def _setup_podman(self, cgroup_root: Path) -> None:
        self.reporter.step(f"podman: storage, glia CNI network and image {IMAGE} per node")
        hook = bin_dir() / OCI_HOOK
        if not hook.exists():
            raise LabError(f"{hook} is missing: install glia into this venv (scripts/setup.sh)")
        self.topo.cni_bin_dir.mkdir(parents=True, exist_ok=True)
        link = self.topo.cni_bin_dir / "glia-cni"
        link.unlink(missing_ok=True)
        link.symlink_to(bin_dir() / "glia-cni")
        build_rootfs(self.topo.rootfs_dir)
        for n in self.topo.nodes:
            pm = NodePodman(n)
            pm.write_config(
                [self.topo.cni_bin_dir, SYSTEM_CNI_DIR],
                conflist(str(n.socket)),
                hook=hook,
                cgroup=n.cgroup(cgroup_root),
            )
            try:
                pm.import_image(self.topo.rootfs_dir)
            except PodmanError as e:
                raise LabError(str(e)) from None

    def _write_daemon_configs(self) -> None:
        for c in self.topo.clusters:
            configs.write_yaml(c.operator_config, self.operator_config(c.name))
        for n in self.topo.nodes:
            n.dir.mkdir(parents=True, exist_ok=True)
            configs.write_yaml(n.agent_config, self.agent_config(n.ref))

    # --- configuration -------------------------------------------------------

    def etcd(self, cluster: str) -> EtcdServer:
        """Cluster ``cluster``'s etcd (stop/kill/restart work on one this object started)."""
        c = self.topo.cluster(cluster)
        if c.name not in self._etcd:
            self._etcd[c.name] = EtcdServer(
                c.etcd_process,
                c.etcd_data_dir,
                (str(c.etcd_ip), ETCD_PORT),
                ETCD_PEER_PORT,
                c.pki_dir,
                netns=c.etcd_netns,
                log_file=c.etcd_log,
            )
        return self._etcd[c.name]

    def etcd_config(self, cluster: str, user: str = RW_USER) -> EtcdConfig:
        """Client settings for ``cluster``'s etcd as ``user`` (see :mod:`glia.kvstore.rbac`).

        The endpoint is an underlay address: use it from inside a lab namespace.
        """
        return self.etcd(cluster).client_config(user)

    def agent_config(self, node: str) -> AgentConfig:
        n = self.node(node)
        return configs.agent_config(
            n,
            self.etcd_config(n.cluster, rbac.agent_user(n.name)),
            repo_dir() / "build" / "bpf",
            socket_lb_cgroup=self.node_cgroup(n.ref),
            config_etcd=self.etcd_config(n.cluster, rbac.CONFIG_USER),
        )

    def operator_config(self, cluster: str) -> OperatorConfig:
        return configs.operator_config(
            self.topo.cluster(cluster), self.etcd_config(cluster, rbac.OPERATOR_USER)
        )

    # --- daemons -------------------------------------------------------------

    def node(self, node: str) -> NodeSpec:
        t = topology.parse_target(node, allow_container=False)
        return self.topo.node(t.cluster, t.node)

    def start_operator(self, cluster: str) -> processes.ProcessRecord:
        """Start ``cluster``'s operator; the live record when it runs already."""
        c = self.topo.cluster(cluster)

        def spawn() -> processes.ProcessRecord:
            if not c.operator_config.exists():
                configs.write_yaml(c.operator_config, self.operator_config(c.name))
            argv = [str(bin_dir() / "glia"), "operator", "--config", str(c.operator_config)]
            rec = processes.spawn(
                c.operator_process,
                argv,
                log=c.operator_log,
                token=str(c.operator_config),
                netns_name=c.operator_node.netns,
                env=_daemon_env(),
            )
            self.reporter.note(f"{c.name}: operator pid {rec.pid}, log {rec.log}")
            return rec

        return self._start(c.operator_process, spawn)[0]

    def stop_operator(
        self, cluster: str, *, kill: bool = False, stay_down: bool | None = None
    ) -> None:
        """SIGTERM (then SIGKILL) ``cluster``'s operator, or SIGKILL at once as a crash
        (``kill``: the supervisor restarts it unless ``stay_down``)."""
        c = self.topo.cluster(cluster)
        rec = self._mark_stopped(c.operator_process, (not kill) if stay_down is None else stay_down)
        if rec is not None:
            self._signal(rec, kill)

    def restart_operator(self, cluster: str) -> processes.ProcessRecord:
        """SIGTERM ``cluster``'s operator and start it again (``glia lab restart --operator``)."""
        self.stop_operator(cluster)
        return self.start_operator(cluster)

    def start_agent(self, node: str, *, wait: bool = True) -> processes.ProcessRecord:
        """Start the node's agent; the live record when it runs already (e.g. the
        supervisor restarted it). ``wait``: until it reports healthy."""
        n = self.node(node)

        def spawn() -> processes.ProcessRecord:
            if not n.agent_config.exists():
                configs.write_yaml(n.agent_config, self.agent_config(n.ref))
            argv = [str(bin_dir() / "glia"), "agent", "--config", str(n.agent_config)]
            rec = processes.spawn(
                n.agent_process,
                argv,
                log=n.agent_log,
                token=str(n.agent_config),
                netns_name=n.netns,
                env=_daemon_env(),
            )
            self.reporter.note(f"{n.ref}: agent pid {rec.pid}, log {rec.log}")
            return rec

        rec = self._start(n.agent_process, spawn)[0]
        if wait:
            self._wait_started([n.ref])
        return rec

    def stop_agent(self, node: str, *, kill: bool = False, stay_down: bool | None = None) -> None:
        """SIGTERM (then SIGKILL) the node's agent, or SIGKILL at once as a crash
        (``kill``); its datapath stays (pins outlive it).

        Stopped on purpose it stays down until started again; a crash is
        restarted by the supervisor, unless ``stay_down`` (a crash that is
        left down, for tests of what happens while an agent is dead).
        """
        n = self.node(node)
        rec = self._mark_stopped(n.agent_process, (not kill) if stay_down is None else stay_down)
        if rec is not None:
            self._signal(rec, kill)

    def restart_agent(self, node: str) -> processes.ProcessRecord:
        """SIGTERM the node's agent, start it again, wait until healthy (``glia lab restart``)."""
        self.stop_agent(node)
        return self.start_agent(node, wait=True)

    def start_supervisor(self) -> processes.ProcessRecord:
        """Start the lab's supervisor (:mod:`glia.lab.supervisor`); the live record if it runs."""
        with self.locked():
            st = self.state()
            if st is None:
                raise LabError(f"lab {self.name!r} has no state file {self.topo.state_file}")
            if st.supervisor is not None and processes.alive(st.supervisor):
                return st.supervisor
            # Spawned and recorded under the lock: its first poll, which takes the
            # lock, finds itself recorded (a supervisor that is not exits).
            try:
                rec = processes.spawn(
                    SUPERVISOR,
                    supervision.supervisor_argv(str(bin_dir() / "glia"), self.topo),
                    log=self.topo.supervisor_log,
                    token=supervision.supervisor_token(self.topo),
                    env=_daemon_env(),
                )
            except processes.ProcessError as e:
                raise LabError(str(e)) from None
            self._save(dataclasses.replace(st, supervisor=rec))
        self.reporter.note(f"supervisor pid {rec.pid}, log {rec.log}")
        return rec

    def stop_supervisor(self) -> None:
        """End the lab's supervisor: dead daemons then stay dead until ``lab up``."""
        st = self.state()
        if st is not None and st.supervisor is not None:
            processes.stop([st.supervisor])

    def _start(
        self, name: str, spawn: Callable[[], processes.ProcessRecord]
    ) -> tuple[processes.ProcessRecord, bool]:
        """Daemon ``name``'s live record, spawned unless it runs; whether it was spawned.

        Under the state lock, so the supervisor and this process never both
        start it; starting clears the stopped-on-purpose mark.
        """
        with self.locked():
            rec = self._record(name)
            if rec is not None and processes.alive(rec):
                if rec.stopped:
                    rec = dataclasses.replace(rec, stopped=False)
                    self._put_record(rec)
                return rec, False
            try:
                rec = spawn()
            except processes.ProcessError as e:
                raise LabError(str(e)) from None
            self._put_record(rec)
            return rec, True

    def _mark_stopped(self, name: str, stopped: bool) -> processes.ProcessRecord | None:
        """Daemon ``name``'s record, marked stopped on purpose first if ``stopped``
        (before any signal, so the supervisor never restarts what is being stopped)."""
        with self.locked():
            rec = self._record(name)
            if rec is not None and stopped and not rec.stopped:
                rec = dataclasses.replace(rec, stopped=True)
                self._put_record(rec)
            return rec

    def _signal(self, rec: processes.ProcessRecord, kill: bool) -> None:
        try:
            if kill:
                processes.kill(rec)
            else:
                processes.stop([rec])
        except processes.ProcessError as e:
            raise LabError(str(e)) from None

    def _give_up(self, name: str) -> None:
        """A daemon that failed to start stays down (and is not restarted in a loop):
        marked stopped, and ended if the supervisor restarted it meanwhile."""
        rec = self._mark_stopped(name, True)
        if rec is not None:
            self._signal(rec, kill=False)

    def reconfigure_agent(self, node: str, **changes: Any) -> processes.ProcessRecord:
        """Change settings of the node's agent (``lease_ttl=5``) and restart it."""
        n = self.node(node)
        cfg = agent_config_load(n.agent_config) if n.agent_config.exists() else None
        try:
            new = dataclasses.replace(cfg or self.agent_config(n.ref), **changes)
        except TypeError as e:
            raise LabError(f"{n.ref}: invalid agent setting: {e}") from None
        configs.write_yaml(n.agent_config, new)
        self.stop_agent(n.ref)
        return self.start_agent(n.ref, wait=True)

    def reconfigure_operator(self, cluster: str, **changes: Any) -> processes.ProcessRecord:
        """Change settings of ``cluster``'s operator (``identity_gc_grace=1.0``) and restart it."""
        c = self.topo.cluster(cluster)
        path = c.operator_config
        cfg = operator_config_load(path) if path.exists() else None
        try:
            new = dataclasses.replace(cfg or self.operator_config(c.name), **changes)
        except TypeError as e:
            raise LabError(f"{c.name}: invalid operator setting: {e}") from None
        configs.write_yaml(path, new)
        self.stop_operator(c.name)
        return self.start_operator(c.name)

    def agent(self, node: str, timeout: float = 30.0) -> AgentClient:
        """A client of the node's agent API (its unix socket, reachable from anywhere)."""
        return AgentClient(str(self.node(node).socket), timeout=timeout)

    def wait_agents(
        self, nodes: Sequence[str] | None = None, timeout: float = AGENTS_TIMEOUT
    ) -> None:
        """Poll each agent's ``GET /v1/status`` until ``healthy``; fail fast if a daemon exits
        (:class:`DaemonExited`)."""
        specs = [self.node(n) for n in nodes] if nodes else list(self.topo.nodes)
        st = self.state()
        recs = st.processes if st else {}
        names = [n.agent_process for n in specs] + [c.operator_process for c in self.topo.clusters]
        daemons = [recs[name] for name in names if name in recs]
        health.wait_agents(specs, daemons, self.reporter.note, timeout)

    def _wait_started(self, nodes: Sequence[str], timeout: float = AGENTS_TIMEOUT) -> None:
        """:meth:`wait_agents` after starting them: an agent that exits meanwhile is
        left stopped (not restarted in a loop) and the error says how to start it."""
        try:
            self.wait_agents(nodes, timeout)
        except DaemonExited as e:
            ours = {self.node(n).agent_process: self.node(n) for n in nodes}
            if e.process not in ours:
                raise
            self._give_up(e.process)
            cmd = supervision.Daemon(e.process, supervision.Kind.AGENT, ours[e.process].ref)
            raise DaemonExited(
                e.process,
                f"{e}\nIt stays stopped; after fixing it: "
                f"`{cmd.restart_command(self.name, topology.DEFAULT_LAB)}`",
            ) from None

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

    # --- exec and containers ----------------------------------------------------

    def exec_argv(
        self, target: str, argv: Sequence[str], *, tty: bool = False
    ) -> tuple[list[str], dict[str, str]]:
        """Command line and environment running ``argv`` in ``c1/n1`` or ``c1/n1/CONTAINER``."""
        if not argv:
            raise LabError("no command given (e.g. `glia lab exec c1/n1 -- ip addr`)")
        t = topology.parse_target(target)
        n = self.topo.node(t.cluster, t.node)
        if not netns.exists(n.netns):
            raise LabError(f"{n.ref}: namespace {n.netns} does not exist; is lab {self.name!r} up?")
        if t.container is None:
            return netns.nsenter_argv(n.netns, argv), dict(os.environ)
        pm = NodePodman(n)
        return pm.exec_argv(t.container, argv, tty=tty), pm.env

    def exec(
        self,
        target: str,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in a node or a container, capturing its output."""
        full, env = self.exec_argv(target, argv)
        try:
            proc = subprocess.run(
                full, env=env, input=input, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{target}: {' '.join(argv)} took longer than {timeout:g} s") from None
        if check and proc.returncode != 0:
            raise LabError(
                f"{target}: {' '.join(argv)} exited with {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def node_exec(
        self, node: str, argv: Sequence[str], **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        self.node(node)  # a node, not a container
        return self.exec(node, argv, **kwargs)

    def podman(self, node: str) -> NodePodman:
        return NodePodman(self.node(node))

    def run_container(
        self,
        node: str,
        name: str,
        *,
        labels: Mapping[str, str] | None = None,
        image: str = IMAGE,
        command: Sequence[str] | None = None,
        network: str = "glia",
        cap_add: Sequence[str] = (),
    ) -> Container:
        """Start a container on ``node`` (default: busybox httpd answering its name).

        ``cap_add``: extra capabilities, e.g. ``["NET_ADMIN"]`` to change its addresses.
        """
        n = self.node(node)
        if not netns.exists(n.netns):
            raise LabError(f"{n.ref}: lab {self.name!r} is not up (no namespace {n.netns})")
        extra = [arg for cap in cap_add for arg in ("--cap-add", cap)]
        try:
            return NodePodman(n).run_container(
                name, image=image, labels=labels, command=command, network=network, extra_args=extra
            )
        except PodmanError as e:
            raise LabError(str(e)) from None

    def remove_container(self, node: str, name: str) -> None:
        try:
            self.podman(node).remove(name)
        except PodmanError as e:
            raise LabError(str(e)) from None

    def containers(self, node: str) -> list[Container]:
        try:
            return self.podman(node).containers()
        except PodmanError as e:
            raise LabError(str(e)) from None


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


def _daemon_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


__all__ = [
    "DaemonExited",
    "Lab",
    "LabAlreadyUp",
    "LabError",
    "QuietReporter",
    "Reporter",
    "TopologyError",
]
