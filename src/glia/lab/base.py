"""What every part of :class:`glia.lab.lab.Lab` shares: the topology, the state file, configs.

:class:`LabBase` is the root of ``Lab``'s parts, each a subclass in its own
module: the daemons' lifecycle (:class:`glia.lab.daemons.LabDaemons`),
commands and containers in the nodes (:class:`glia.lab.workloads.LabWorkloads`)
and the lab as a whole, built, repaired and removed (:class:`glia.lab.lab.Lab`).
Nobody builds a ``LabBase`` alone; the parts call each other only through it.

It holds one lab by name and directory (the lab itself may be up or not):
``state.json`` read and written under its lock (:mod:`glia.lab.state`; the
supervisor writes it from another process), the lab's nodes by ``c1/n1``,
the etcd server of each cluster (:class:`glia.lab.etcd.EtcdServer`) and the
configuration each daemon is given (:mod:`glia.lab.configs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from glia import native
from glia.agent.config import AgentConfig
from glia.datapath import cgroup
from glia.kvstore import rbac
from glia.kvstore.config import EtcdConfig
from glia.lab import configs, processes, state, supervision, topology
from glia.lab.errors import LabError
from glia.lab.etcd import RW_USER, EtcdServer
from glia.lab.state import LabState
from glia.lab.topology import ETCD_PEER_PORT, ETCD_PORT, NodeSpec, Topology
from glia.operator.config import OperatorConfig


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


def cni_plugin() -> Path:
    """glia-cni's compiled fast path (the installed package's, else ``make bpf``'s); it runs
    the Python plugin itself whenever it cannot hand an invocation to the agent."""
    return native.cni_fastpath()


class LabBase:
    """One lab, by name and directory; the lab itself may be up or not."""

    def __init__(self, topo: Topology, reporter: Reporter | None = None) -> None:
        self.topo = topo
        self.reporter: Reporter = reporter or QuietReporter()
        self._etcd: dict[str, EtcdServer] = {}

    @property
    def name(self) -> str:
        return self.topo.name

    @property
    def dir(self) -> Path:
        return self.topo.dir

    def node(self, node: str) -> NodeSpec:
        t = topology.parse_target(node, allow_container=False)
        return self.topo.node(t.cluster, t.node)

    # --- state ---------------------------------------------------------------

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
            native.bpf_obj_dir(),
            socket_lb_cgroup=self.node_cgroup(n.ref),
            config_etcd=self.etcd_config(n.cluster, rbac.CONFIG_USER),
            clustermesh_dir=n.clustermesh_dir if self.meshed else None,
        )

    @property
    def meshed(self) -> bool:
        """Whether the lab's clusters form a mesh (more than one cluster)."""
        return len(self.topo.clusters) > 1

    def write_clustermesh_dir(self, node: str) -> Path | None:
        """Write the node's remote cluster directory (every other cluster, read as
        ``glia-remote`` with that cluster's own CA and certificate); its path, or None
        in a lab of one cluster. Needs every cluster's PKI (made when etcd starts)."""
        if not self.meshed:
            return None
        n = self.node(node)
        remotes = [(c, self.etcd_config(c.name, rbac.RO_USER)) for c in self.topo.clusters]
        configs.write_clustermesh_dir(n.clustermesh_dir, configs.clustermesh_files(n, remotes))
        return n.clustermesh_dir

    def operator_config(self, cluster: str) -> OperatorConfig:
        return configs.operator_config(
            self.topo.cluster(cluster), self.etcd_config(cluster, rbac.OPERATOR_USER)
        )

    def node_cgroup(self, node: str) -> Path | None:
        """The node's cgroup v2 directory (None while cgroup2 is mounted nowhere)."""
        root = cgroup.cgroup2_root()
        return self.node(node).cgroup(root) if root is not None else None
