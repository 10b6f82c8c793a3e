"""The agent's side of the mesh: the cluster directory, one RemoteCluster per file.

Started by the agent when its ``clustermesh_dir`` is set. The directory is
watched (:class:`~glia.clustermesh.configdir.ConfigWatcher`): a new file
connects that cluster, a changed file reconnects it (its state is withdrawn
and imported again under the new settings), a removed file withdraws its
state at once. Each remote cluster is admitted only if its record clashes
with nothing already in the mesh, nor with our reserved networks (nodes,
etcd) (:func:`glia.validate.cluster.mesh_conflicts`, established clusters
keep their place). Stopping the agent stops reading but
withdraws nothing: what was imported keeps carrying traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from ipaddress import IPv4Network
from typing import Any

from glia.clustermesh.config import ConfigDiff, RemoteClusterConfig
from glia.clustermesh.configdir import ConfigWatcher
from glia.clustermesh.remote import MeshSinks, RemoteCluster
from glia.model.cluster import ClusterInfo
from glia.validate.cluster import mesh_conflicts

log = logging.getLogger(__name__)


class ClusterMesh:
    def __init__(
        self,
        directory: str,
        local: ClusterInfo,
        sinks: MeshSinks,
        *,
        reserved: Mapping[str, IPv4Network] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.directory = directory
        self.local = local
        self.reserved = dict(reserved or {})  # our networks no remote pod pool may overlap
        self._sinks = sinks
        self.remotes: dict[str, RemoteCluster] = {}
        self._admitted: set[str] = set()
        self.watcher = ConfigWatcher(directory, self._on_change, interval=poll_interval)

    async def start(self) -> None:
        await self.watcher.start()

    async def stop(self) -> None:
        """Stop reading every remote cluster; their state stays in the maps."""
        await self.watcher.stop()
        for rc in self.remotes.values():
            await rc.stop(withdraw=False)

    async def _on_change(self, diff: ConfigDiff) -> None:
        for name in diff.removed:
            await self._disconnect(name)
        for name, cfg in diff.changed.items():
            await self._disconnect(name)
            self._connect(cfg)
        for cfg in diff.added.values():
            self._connect(cfg)

    def _connect(self, cfg: RemoteClusterConfig) -> None:
        rc = RemoteCluster(cfg, self._sinks, self._admit)
        self.remotes[cfg.name] = rc
        rc.start()
        log.info("clustermesh: connecting to %s (%s)", cfg.name, ", ".join(cfg.etcd.endpoints))

    async def _disconnect(self, name: str) -> None:
        rc = self.remotes.pop(name, None)
        self._admitted.discard(name)
        if rc is not None:
            await rc.stop(withdraw=True)
            log.info("clustermesh: %s disconnected and withdrawn", name)

    async def _admit(self, rc: RemoteCluster) -> str | None:
        """Whether ``rc``'s record may join the mesh beside ours and the others'."""
        records = {n: r.info for n, r in self.remotes.items() if r.info is not None}
        refused = mesh_conflicts(
            self.local, records, incumbents=frozenset(self._admitted), reserved=self.reserved
        )
        reason = refused.get(rc.name)
        if reason is None:
            self._admitted.add(rc.name)
        return reason

    def status(self) -> dict[str, Any]:
        return {
            "clusters": [self.remotes[n].status() for n in sorted(self.remotes)],
            "config_dir": self.directory,
            "config_errors": dict(self.watcher.errors),
        }

    @property
    def healthy_summary(self) -> str:
        states = [f"{n} {r.state}" for n, r in sorted(self.remotes.items())]
        return ", ".join(states) if states else "no remote clusters configured"
