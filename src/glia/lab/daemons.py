"""The lab's daemons: start, stop, restart and kill etcd, operators, agents and the supervisor.

:class:`LabDaemons` is the part of :class:`glia.lab.lab.Lab` that runs the
daemons; its callers are ``Lab.up`` and ``Lab.repair``, the supervisor
(:mod:`glia.lab.supervisor`, through ``start_*``), ``glia lab restart``
(:mod:`glia.cli.lab`) and the end-to-end tests, which stop, kill, pause and
reconfigure daemons to see what the others do meanwhile.

Process names in the state: ``c1-etcd``, ``c1-operator``, ``c1-n1-agent``.
The daemons run as detached processes (:mod:`glia.lab.processes`) recorded in
``state.json``; etcd through :class:`glia.lab.etcd.EtcdServer`, operators and
agents as ``glia operator|agent --config FILE`` in a node's namespace.

Daemons are supervised: the lab's supervisor (``glia lab supervise``)
restarts a daemon that dies. Stopping one on purpose (``stop_*``, unless
``kill=True`` simulates a crash) marks it stopped in the state first, so the
supervisor leaves it down; every ``start_*`` clears the mark and returns the
live record when the daemon already runs. Starting and marking happen under
the state lock, so the supervisor and a command never both start a daemon.
Waiting for agents to be healthy is :mod:`glia.lab.health`'s; an agent that
exits while started here is left stopped, not restarted in a loop.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glia.agent.client import AgentClient
from glia.agent.config import AgentConfig
from glia.agent.config import load as agent_config_load
from glia.lab import configs, health, hostsetup, processes, supervision, topology
from glia.lab.base import LabBase, bin_dir
from glia.lab.errors import DaemonExited, LabError
from glia.lab.etcd import EtcdError
from glia.lab.topology import ClusterSpec, NodeSpec
from glia.operator.config import OperatorConfig
from glia.operator.config import load as operator_config_load

SUPERVISOR = "supervisor"  # its name in messages and in ``lab down``'s report
AGENTS_TIMEOUT = 90.0  # seconds for every agent to report healthy
ETCD_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class _Glia:
    """A glia daemon of the lab: ``glia COMMAND --config CONFIG`` in a node's namespace."""

    command: str  # "agent", "operator"
    who: str  # in messages: the node ("c1/n1") or the cluster ("c1")
    process: str  # its name in the state
    config: Path
    log: Path
    netns: str
    # The node set up as on a host: its unit's ExecStart, its config from `glia config`.
    by_docs: bool = False


def _agent(n: NodeSpec, by_docs: bool) -> _Glia:
    return _Glia("agent", n.ref, n.agent_process, n.agent_config, n.agent_log, n.netns, by_docs)


def _operator(c: ClusterSpec) -> _Glia:
    n = c.operator_node
    return _Glia("operator", c.name, c.operator_process, c.operator_config, c.operator_log, n.netns)


class LabDaemons(LabBase):
    """Start, stop, restart and reconfigure the lab's daemons; wait for its agents."""

    # --- etcd ----------------------------------------------------------------

    def stop_etcd(self, cluster: str, *, kill: bool = False, stay_down: bool | None = None) -> None:
        """Take ``cluster``'s etcd down: SIGTERM, or SIGKILL as a crash (``kill``); its data stays.

        ``stay_down`` (default: ``not kill``) marks it stopped on purpose, so the
        supervisor leaves it down; a crash (``kill`` alone) is restarted by it.
        """
        c = self.topo.cluster(cluster)
        server = self.etcd(c.name)
        rec = self._mark_stopped(c.etcd_process, _stays_down(kill, stay_down))
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

    # --- operators -----------------------------------------------------------

    def start_operator(self, cluster: str) -> processes.ProcessRecord:
        """Start ``cluster``'s operator; the live record when it runs already."""
        c = self.topo.cluster(cluster)
        return self._start_glia(_operator(c), lambda: self.operator_config(c.name))

    def stop_operator(
        self, cluster: str, *, kill: bool = False, stay_down: bool | None = None
    ) -> None:
        """SIGTERM (then SIGKILL) ``cluster``'s operator, or SIGKILL at once as a crash
        (``kill``: the supervisor restarts it unless ``stay_down``)."""
        self._stop(self.topo.cluster(cluster).operator_process, kill, _stays_down(kill, stay_down))

    def restart_operator(self, cluster: str) -> processes.ProcessRecord:
        """SIGTERM ``cluster``'s operator and start it again (``glia lab restart --operator``)."""
        self.stop_operator(cluster)
        return self.start_operator(cluster)

    def reconfigure_operator(self, cluster: str, **changes: Any) -> processes.ProcessRecord:
        """Change settings of ``cluster``'s operator (``identity_gc_grace=1.0``) and restart it."""
        c = self.topo.cluster(cluster)
        _rewrite_config(
            _operator(c), operator_config_load, lambda: self.operator_config(c.name), changes
        )
        self.stop_operator(c.name)
        return self.start_operator(c.name)

    # --- agents --------------------------------------------------------------

    def start_agent(self, node: str, *, wait: bool = True) -> processes.ProcessRecord:
        """Start the node's agent; the live record when it runs already (e.g. the
        supervisor restarted it). ``wait``: until it reports healthy."""
        n = self.node(node)
        if not n.agent_config.exists():
            # Written with its config when it has none (what the lab's tests
            # changed in the directory since stays as they left it).
            self.write_clustermesh_dir(n.ref)
        rec = self._start_glia(self._agent(n), lambda: self.agent_config(n.ref))
        if wait:
            self._wait_started([n.ref])
        return rec

    def _agent(self, n: NodeSpec) -> _Glia:
        return _agent(n, by_docs=n == self.topo.host_setup_node)

    def set_up_as_host(self, node: str) -> list[str]:
        """Run the README's host steps for ``node`` (:mod:`glia.lab.hostsetup`): its
        certificates, config, CNI plugin and units; the commands run."""
        n = self.node(node)
        self.reporter.note(f"{n.ref}: set up as a host (README), log {hostsetup.log_file(n)}")
        return self._host_setup(n).run(self.agent_config(n.ref))

    def _host_setup(self, n: NodeSpec) -> hostsetup.HostSetup:
        ca = self.etcd(n.cluster).ca
        return hostsetup.HostSetup(n, self.topo.cluster(n.cluster), bin_dir() / "glia", ca)

    def stop_agent(self, node: str, *, kill: bool = False, stay_down: bool | None = None) -> None:
        """SIGTERM (then SIGKILL) the node's agent, or SIGKILL at once as a crash
        (``kill``); its datapath stays (pins outlive it).

        Stopped on purpose it stays down until started again; a crash is
        restarted by the supervisor, unless ``stay_down`` (a crash that is
        left down, for tests of what happens while an agent is dead).
        """
        self._stop(self.node(node).agent_process, kill, _stays_down(kill, stay_down))

    def restart_agent(self, node: str) -> processes.ProcessRecord:
        """SIGTERM the node's agent, start it again, wait until healthy (``glia lab restart``)."""
        self.stop_agent(node)
        return self.start_agent(node, wait=True)

    def reconfigure_agent(self, node: str, **changes: Any) -> processes.ProcessRecord:
        """Change settings of the node's agent (``lease_ttl=5``) and restart it."""
        n = self.node(node)
        _rewrite_config(
            self._agent(n),
            agent_config_load,
            lambda: self.agent_config(n.ref),
            changes,
        )
        self.stop_agent(n.ref)
        return self.start_agent(n.ref, wait=True)

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

    # --- the supervisor ------------------------------------------------------

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

    # --- starting and stopping, for every daemon ------------------------------

    def _start_glia(
        self, d: _Glia, make_config: Callable[[], AgentConfig | OperatorConfig]
    ) -> processes.ProcessRecord:
        """Start operator or agent ``d`` (its config file written first if missing);
        the live record when it runs already."""

        def spawn() -> processes.ProcessRecord:
            if d.by_docs:
                n = self.node(d.who)
                if not d.config.exists():
                    self.set_up_as_host(n.ref)
                elif not (hostsetup.units_dir(n) / "glia-agent.service").exists():
                    self._host_setup(n).units()
                argv = hostsetup.agent_argv(n)
            else:
                if not d.config.exists():
                    configs.write_yaml(d.config, make_config())
                argv = [str(bin_dir() / "glia"), d.command, "--config", str(d.config)]
            rec = processes.spawn(
                d.process,
                argv,
                log=d.log,
                token=str(d.config),
                netns_name=d.netns,
                env=_daemon_env(),
            )
            self.reporter.note(f"{d.who}: {d.command} pid {rec.pid}, log {rec.log}")
            return rec

        return self._start(d.process, spawn)[0]

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

    def _stop(self, name: str, kill: bool, stay_down: bool) -> None:
        """Signal daemon ``name`` (SIGTERM then SIGKILL, or SIGKILL at once if ``kill``),
        marked stopped on purpose first if ``stay_down``; nothing if never started."""
        rec = self._mark_stopped(name, stay_down)
        if rec is not None:
            self._signal(rec, kill)

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
        self._stop(name, kill=False, stay_down=True)


def _stays_down(kill: bool, stay_down: bool | None) -> bool:
    """Whether a stop leaves the daemon down: by default a stop does, a crash (``kill``)
    does not (the supervisor restarts it)."""
    return (not kill) if stay_down is None else stay_down


def _rewrite_config(
    d: _Glia,
    load: Callable[[Path], AgentConfig | OperatorConfig],
    default: Callable[[], AgentConfig | OperatorConfig],
    changes: Mapping[str, Any],
) -> None:
    """Write ``d``'s config file with ``changes`` applied to what it holds (``default()``
    when it has none yet); an unknown setting is a :class:`LabError`, nothing written."""
    cfg = load(d.config) if d.config.exists() else default()
    try:
        new = dataclasses.replace(cfg, **changes)
    except TypeError as e:
        raise LabError(f"{d.who}: invalid {d.command} setting: {e}") from None
    configs.write_yaml(d.config, new)


def _daemon_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
