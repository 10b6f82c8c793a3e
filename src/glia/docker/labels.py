"""Labels of a Docker endpoint's container, from dockerd's API after Join.

Used as the endpoint manager's label source by :mod:`glia.agent.docker_start`:
:class:`RuntimeLabels` asks dockerd for endpoints the Docker driver made (their
"container id" is docker's endpoint id) and the node's other source (podman)
for the rest. No libnetwork call names the container: ``GET /networks/<id>``
maps the endpoint to it, ``GET /containers/<id>/json`` has ``Config.Labels``,
its ``Name`` and the endpoint's ``Aliases`` (``--network-alias``, and the short
container id dockerd adds for API v1.41), which become the endpoint's DNS
aliases. Both answer only once dockerd has finished the Join, so this retries.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from glia.agent.labels import LabelsUnavailable
from glia.docker.driver import DockerState
from glia.endpoint.hooks import LabelSource, RuntimeInfo

API = "http://docker/v1.41"


class DockerLabels:
    def __init__(self, api_socket: str, state: DockerState, timeout: float = 60.0) -> None:
        self._socket = api_socket
        self._state = state
        self._timeout = timeout

    def owns(self, endpoint_id: str) -> bool:
        return self._state.get(endpoint_id) is not None

    async def labels(self, endpoint_id: str) -> RuntimeInfo:
        rec = self._state.get(endpoint_id)
        if rec is None:
            raise LabelsUnavailable(f"docker endpoint {endpoint_id[:12]} is unknown")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        delay, last = 0.1, ""
        conn = aiohttp.UnixConnector(path=self._socket)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
            while loop.time() < deadline:
                try:
                    cid = await _container_of(http, rec["network"], endpoint_id)
                    if cid is not None:
                        info = await _get(http, f"/containers/{cid}/json")
                        return runtime_info(info, rec["network"], endpoint_id)
                    last = "not attached yet"
                except (aiohttp.ClientError, OSError, ValueError) as e:
                    last = str(e) or type(e).__name__
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise LabelsUnavailable(f"docker endpoint {endpoint_id[:12]}: {last}")


def runtime_info(info: dict[str, Any], network: str, endpoint_id: str) -> RuntimeInfo:
    """Labels and DNS names of a container from its ``GET /containers/<id>/json``.

    The names are Docker's as given (``Name`` without its "/", then the aliases
    of the attachment to ``network``); the endpoint manager folds and checks them.
    """
    raw = (info.get("Config") or {}).get("Labels") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"Config.Labels of type {type(raw).__name__}")
    labels = {str(k): str(v) for k, v in raw.items()}
    names: list[str] = []
    name = info.get("Name")
    if isinstance(name, str) and name.lstrip("/"):
        names.append(name.lstrip("/"))
    # Networks is keyed by network name, which libnetwork never tells the
    # driver: the attachment is the one with our endpoint (or network) id.
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for att in nets.values() if isinstance(nets, dict) else ():
        if not isinstance(att, dict):
            continue
        if att.get("EndpointID") == endpoint_id or att.get("NetworkID") == network:
            aliases = att.get("Aliases") or []
            if isinstance(aliases, list):
                names += [a for a in aliases if isinstance(a, str)]
            break
    return RuntimeInfo(labels, tuple(names))


async def _get(http: aiohttp.ClientSession, path: str) -> dict[str, Any]:
    async with http.get(API + path) as resp:
        if resp.status != 200:
            raise ValueError(f"GET {path}: HTTP {resp.status}")
        body = await resp.json(content_type=None)
    if not isinstance(body, dict):
        raise ValueError(f"GET {path}: not an object")
    return body


async def _container_of(http: aiohttp.ClientSession, network: str, eid: str) -> str | None:
    net = await _get(http, f"/networks/{network}")
    for cid, att in (net.get("Containers") or {}).items():
        if isinstance(att, dict) and att.get("EndpointID") == eid:
            return str(cid)
    return None


class RuntimeLabels:
    """Docker's endpoints from dockerd, every other one from ``other``."""

    def __init__(self, docker: DockerLabels, other: LabelSource) -> None:
        self._docker = docker
        self._other = other

    async def labels(self, container_id: str) -> RuntimeInfo:
        if self._docker.owns(container_id):
            return await self._docker.labels(container_id)
        return await self._other.labels(container_id)
