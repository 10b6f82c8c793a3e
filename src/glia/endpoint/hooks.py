"""What the endpoint manager (:mod:`glia.endpoint.manager`) is handed by the agent.

``LabelSource``: a container's runtime labels, asked after the endpoint exists
(:mod:`glia.agent.labels` for podman, :mod:`glia.docker.labels` for Docker).
``EndpointHooks``: policy following the endpoints (:mod:`glia.agent.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class LabelSource(Protocol):
    async def labels(self, container_id: str) -> dict[str, str]: ...


class EndpointHooks(Protocol):
    async def identity_ready(self, identity: int, labels: Mapping[str, str]) -> None: ...

    def endpoints_changed(self) -> None: ...
