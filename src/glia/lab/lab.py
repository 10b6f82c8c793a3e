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
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from glia.agent.client import AgentClient
from glia.agent.config import AgentConfig
from glia.agent.config import load as agent_config_load
from glia.cni.config import conflist
from glia.datapath import cgroup
from glia.kvstore import rbac
from glia.kvstore.config import EtcdConfig
from glia.lab import configs, health, netns, processes, state, status, teardown, topology, underlay
from glia.lab.errors import LabAlreadyUp, LabError
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

    def _record(self, name: str) -> processes.ProcessRecord | None:
        st = self.state()
        return st.processes.get(name) if st else None

    def _put_record(self, rec: processes.ProcessRecord) -> None:
        st = self.state()
        if st is None:
            raise LabError(f"lab {self.name!r} has no state file {self.topo.state_file}")
        self._save(dataclasses.replace(st, processes={**st.processes, rec.name: rec}))

    def is_up(self) -> bool:
        """Built completely, every namespace there, every recorded process alive."""
        try:
            st = self.state()
        except LabError:
            return False
        if st is None or not st.complete:
            return False
        # As recorded: this object may describe the shape the lab is about to get.
        built = topology.build(self.name, st.clusters, st.nodes, self.topo.dir)
        if not all(netns.exists(ns) for ns in built.netns_names):
            return False
        return all(processes.alive(r) for r in st.processes.values())

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
        """Build the lab; False (and nothing done) when it is already up in this shape.

        ``agents=False`` builds namespaces, etcd and podman only. On failure the
        lab stays as far as it got (for its logs) and :class:`LabError` says what
        failed; :meth:`down` removes it.
        """
        _check_host(agents)
        shape = (len(self.topo.clusters), len(self.topo.clusters[0].nodes), agents)
        try:
            st = None if recreate else self.state()
        except LabError:
            st = None  # an unreadable state file: leftovers, removed below
        if st is not None and self.is_up():
            if (st.clusters, st.nodes, st.agents) == shape:
                self.reporter.note(f"lab {self.name!r} is already up")
                return False
            raise LabAlreadyUp(
                f"lab {self.name!r} is already up with {st.clusters} cluster(s) of {st.nodes} "
                f"node(s) {'with' if st.agents else 'without'} agents; "
                "`glia lab up --recreate` rebuilds it in the new shape"
            )
        if self.leftovers():
            self.reporter.step(f"removing the earlier lab {self.name!r}")
            self.down()

        started = time.monotonic()
        self.topo.dir.mkdir(parents=True, exist_ok=True)
        self.topo.marker_file.write_text(self.name + "\n")
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
        st = self.state()
        assert st is not None
        self._save(dataclasses.replace(st, complete=True))
        self.reporter.step(f"lab {self.name!r} is up ({time.monotonic() - started:.1f} s)")
        return True

    def _start_etcds(self) -> None:
        self.reporter.step("etcd: one per cluster, TLS, client-certificate auth, RBAC")
        for c in self.topo.clusters:
            try:
                self.etcd(c.name).start()
            except EtcdError as e:
                raise LabError(f"{c.name}: {e}") from None
        for c in self.topo.clusters:
            try:
                self.etcd(c.name).wait_ready(ETCD_TIMEOUT)
                self.etcd(c.name).bootstrap_auth(
                    rbac.cluster_users(c.name, [n.name for n in c.nodes])
                )
            except EtcdError as e:
                raise LabError(f"{c.name}: {e}") from None
            self._record_etcd(c)

    def _record_etcd(self, c: ClusterSpec) -> None:
        server = self.etcd(c.name)
        if server.pid is None:
            raise LabError(f"{c.name}: etcd was not started by this process")
        self._put_record(
            processes.ProcessRecord(
                name=c.etcd_process,
                pid=server.pid,
                argv=server.command(),
                log=str(c.etcd_log),
                token=f"--data-dir={c.etcd_data_dir}",
                netns=c.etcd_netns,
                started=time.time(),
            )
        )
        self.reporter.note(f"{c.name}: etcd at {c.etcd_endpoint} (pid {server.pid})")

    def stop_etcd(self, cluster: str, *, kill: bool = False) -> None:
        """Take ``cluster``'s etcd down (SIGTERM, or SIGKILL as a crash); its data stays."""
        c = self.topo.cluster(cluster)
        server = self.etcd(c.name)
        if server.running:
            if kill:
                server.kill()
            else:
                server.stop()
            return
        rec = self._record(c.etcd_process)  # started by another process: by recorded PID
        if rec is not None:
            processes.stop([rec])

    def start_etcd(self, cluster: str) -> None:
        """Start ``cluster``'s etcd again on its data (after :meth:`stop_etcd`)."""
        c = self.topo.cluster(cluster)
        try:
            self.etcd(c.name).start(keep_data=True)
            self.etcd(c.name).wait_ready(ETCD_TIMEOUT)
        except EtcdError as e:
            raise LabError(f"{c.name}: {e}") from None
        self._record_etcd(c)

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
        c = self.topo.cluster(cluster)
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
        self._put_record(rec)
        self.reporter.note(f"{c.name}: operator pid {rec.pid}, log {rec.log}")
        return rec

    def stop_operator(self, cluster: str) -> None:
        rec = self._record(self.topo.cluster(cluster).operator_process)
        if rec is not None:
            processes.stop([rec])

    def start_agent(self, node: str, *, wait: bool = True) -> processes.ProcessRecord:
        n = self.node(node)
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
        self._put_record(rec)
        self.reporter.note(f"{n.ref}: agent pid {rec.pid}, log {rec.log}")
        if wait:
            self.wait_agents([n.ref])
        return rec

    def stop_agent(self, node: str, *, kill: bool = False) -> None:
        """SIGTERM (then SIGKILL) the node's agent, or SIGKILL at once as a crash
        (``kill``); its datapath stays (pins outlive it)."""
        rec = self._record(self.node(node).agent_process)
        if rec is None:
            return
        try:
            if kill:
                processes.kill(rec)
            else:
                processes.stop([rec])
        except processes.ProcessError as e:
            raise LabError(str(e)) from None

    def restart_agent(self, node: str) -> processes.ProcessRecord:
        self.stop_agent(node)
        return self.start_agent(node, wait=True)

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
        """Poll each agent's ``GET /v1/status`` until ``healthy``; fail fast if a daemon exits."""
        specs = [self.node(n) for n in nodes] if nodes else list(self.topo.nodes)
        st = self.state()
        recs = st.processes if st else {}
        names = [n.agent_process for n in specs] + [c.operator_process for c in self.topo.clusters]
        daemons = [recs[name] for name in names if name in recs]
        health.wait_agents(specs, daemons, self.reporter.note, timeout)

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
    if agents:
        for exe in ("glia", "glia-cni"):
            if not (bin_dir() / exe).exists():
                raise LabError(f"{bin_dir() / exe} is missing: install glia into this venv")


def _daemon_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


__all__ = ["Lab", "LabAlreadyUp", "LabError", "QuietReporter", "Reporter", "TopologyError"]
