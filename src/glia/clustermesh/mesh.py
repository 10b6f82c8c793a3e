"""The agent's side of the mesh: the cluster directory, one RemoteCluster per file.

Started by the agent when its ``clustermesh_dir`` is set. The directory is
watched (:class:`~glia.clustermesh.configdir.ConfigWatcher`): a new file
connects that cluster, a changed file is taken without a gap
(:meth:`~glia.clustermesh.remote.RemoteCluster.reconfigure`: new settings at
once, or a new connection whose first lists replace what the old one
imported), a removed file withdraws its state at once. Each remote cluster
is admitted only if its record clashes with nothing already in the mesh,
nor with our reserved networks (nodes, etcd)
(:func:`glia.validate.cluster.mesh_conflicts`, established clusters keep
their place). Stopping the agent stops reading but withdraws nothing: what
was imported keeps carrying traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from ipaddress import IPv4Network
from typing import Any

from glia.clustermesh.config import ConfigDiff, RemoteClusterConfig
from glia.clustermesh.configdir import ConfigWatcher
from glia.clustermesh.remote import RemoteCluster
from glia.clustermesh.sinks import MeshSinks
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

    async def wait_synced(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` s until every remote cluster configured now has
        listed its state once (or was refused); the names of those that have not.

        The agent waits before its own first lists, so that its first writes of
        the maps hold the remote clusters' state (an agent restart then changes
        nothing that an earlier run imported)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            behind = sorted(
                n for n, rc in self.remotes.items() if not rc.synced and rc.state != "refused"
            )
            if not behind or loop.time() >= deadline:
                return behind
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop reading every remote cluster; their state stays in the maps."""
        await self.watcher.stop()
        for rc in self.remotes.values():
            await rc.stop(withdraw=False)

    async def _on_change(self, diff: ConfigDiff) -> None:
        for name in diff.removed:
            await self._disconnect(name)
        for name, cfg in diff.changed.items():
            rc = self.remotes.get(name)
            if rc is None:
                self._connect(cfg)
            else:
                await rc.reconfigure(cfg)
        for cfg in diff.added.values():
            self._connect(cfg)

    def _connect(self, cfg: RemoteClusterConfig) -> None:
        rc = RemoteCluster(cfg, self._sinks, self._admit)
        self.remotes[cfg.name] = rc
        rc.start()
        log.info("clustermesh: connecting to %s (%s)", cfg.name, ", ".join(cfg.etcd.endpoints))

    async def _disconnect(self, name: str) -> None:
        rc = self.remotes.get(name)
        if rc is not None:
            # Listed (as "withdrawn") until its state is out of every table.
            await rc.stop(withdraw=True)
            log.info("clustermesh: %s disconnected and withdrawn", name)
        self.remotes.pop(name, None)
        self._admitted.discard(name)

    async def _admit(self, rc: RemoteCluster) -> str | None:
        """Whether ``rc``'s record may join the mesh beside ours and the others'."""
        records = {n: r.info for n, r in self.remotes.items() if r.info is not None}
        refused = mesh_conflicts(
            self.local, records, incumbents=frozenset(self._admitted), reserved=self.reserved
        )
        reason = refused.get(rc.name)
        if reason is None:
            self._admitted.add(rc.name)
        else:
            self._admitted.discard(rc.name)  # refused now: no longer in the mesh first
        return reason

    def status(self) -> dict[str, Any]:
        return {
            "clusters": [self.remotes[n].status() for n in sorted(self.remotes)],
            "config_dir": self.directory,
            "config_errors": dict(self.watcher.errors),
        }

    @property
    def healthy_summary(self) -> str:
        """One line for ``glia status``: each remote's state, and what it had rejected."""
        states = []
        for st in self.status()["clusters"]:
            rejected = f" ({st['rejected']} records rejected)" if st["rejected"] else ""
            states.append(f"{st['name']} {st['state']}{rejected}")
        return ", ".join(states) if states else "no remote clusters configured"
