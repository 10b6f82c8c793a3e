"""Serving the Docker libnetwork driver (glia.docker) from the agent.

Called by :class:`glia.agent.daemon.Agent` when ``docker_plugin_socket`` is
set: the label source learns Docker's endpoints (before the endpoint manager
exists), the plugin socket opens once the endpoints are restored. A socket
that cannot be opened leaves the agent up; the docker subsystem says why.
"""

from __future__ import annotations

import logging
from pathlib import Path

from glia.agent.config import AgentConfig
from glia.agent.labels import NoRuntimeLabels, PodmanLabels
from glia.agent.subsystems import Subsystem
from glia.docker.driver import DockerDriver, DockerState
from glia.docker.labels import DockerLabels, RuntimeLabels
from glia.docker.protocol import CONTAINER_IFNAME
from glia.docker.server import PluginServer
from glia.endpoint.hooks import LabelSource
from glia.endpoint.manager import EndpointManager
from glia.ipam.local import LocalIPAM

log = logging.getLogger(__name__)


class DockerPlugin:
    def __init__(self, cfg: AgentConfig, state_dir: Path) -> None:
        self._cfg = cfg
        self.state = DockerState(state_dir / "docker.json")
        self.status = Subsystem()
        self._server: PluginServer | None = None

    @classmethod
    def configured(cls, cfg: AgentConfig, state_dir: Path) -> DockerPlugin | None:
        return cls(cfg, state_dir) if cfg.docker_plugin_socket else None

    def labels(self, other: LabelSource) -> LabelSource:
        """Docker endpoints' labels from dockerd's API (none without ``docker_api_socket``)."""
        if not self._cfg.docker_api_socket:
            return other
        return RuntimeLabels(DockerLabels(self._cfg.docker_api_socket, self.state), other)

    def attachments(self) -> list[tuple[str, str]]:
        """(endpoint id, ifname) of the driver's endpoints: a CNI GC keeps them."""
        return [(eid, CONTAINER_IFNAME) for eid in self.state.ids()]

    async def start(self, ipam: LocalIPAM, endpoints: EndpointManager) -> None:
        path = self._cfg.docker_plugin_socket
        server = PluginServer(DockerDriver(ipam, endpoints, self.state, self._cfg.node_ip), path)
        try:
            await server.start()
        except OSError as e:
            msg = f"cannot listen on {path}: {e.strerror or e}"
            log.error("docker: %s", msg)
            self.status.set(True, msg, degraded=True)
            return
        self._server = server
        labels = self._cfg.docker_api_socket or "none (no docker_api_socket)"
        self.status.set(True, f"driver {path}; labels from {labels}")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()


def runtime_labels(cfg: AgentConfig, docker: DockerPlugin | None) -> LabelSource:
    """Where endpoints' labels come from: podman (``runtime``), and dockerd for the
    Docker driver's endpoints."""
    other: LabelSource = (
        PodmanLabels(cfg.runtime_env) if cfg.runtime == "podman" else NoRuntimeLabels()
    )
    return docker.labels(other) if docker is not None else other
