"""What the endpoint manager (:mod:`glia.endpoint.manager`) is handed by the agent.

``LabelSource``: what a container's runtime says of it (:class:`RuntimeInfo`),
asked after the endpoint exists (:mod:`glia.agent.labels` for podman,
:mod:`glia.docker.labels` for Docker).
``EndpointHooks``: policy following the endpoints (:mod:`glia.agent.policy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol


class RuntimeInfo(NamedTuple):
    """A container as its runtime describes it once the endpoint exists."""

    labels: dict[str, str]
    # DNS names the runtime knows the container by on glia's network, as the
    # runtime spells them (the manager folds and checks them). Docker's come
    # only now (its container name, --network-alias); podman's came at ADD.
    aliases: tuple[str, ...] = ()


class LabelSource(Protocol):
    async def labels(self, container_id: str) -> RuntimeInfo: ...


class EndpointHooks(Protocol):
    async def identity_ready(self, identity: int, labels: Mapping[str, str]) -> None: ...

    def endpoints_changed(self) -> None: ...
