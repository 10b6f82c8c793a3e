"""glia.docker.labels: a Docker endpoint's labels and DNS names from dockerd's API,
asked of a fake dockerd (aiohttp on a unix socket) as the agent asks the real one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from glia.agent.labels import LabelsUnavailable
from glia.docker.driver import DockerState
from glia.docker.labels import DockerLabels, RuntimeLabels, runtime_info
from glia.endpoint.hooks import RuntimeInfo

NID = "a" * 64
EID = "b" * 64
CID = "c0ffee123456" + "d" * 52


def inspect(**over: Any) -> dict[str, Any]:
    """``GET /containers/<id>/json`` as dockerd answers for API v1.41 (trimmed)."""
    return {
        "Id": CID,
        "Name": "/glia-web",
        "Config": {"Labels": {"app": "web", "tier": "front"}},
        "NetworkSettings": {
            "Networks": {
                "bridge": {"NetworkID": "f" * 64, "EndpointID": "e" * 64, "Aliases": ["nope"]},
                "glia": {"NetworkID": NID, "EndpointID": EID, "Aliases": ["Db", CID[:12]]},
            }
        },
        **over,
    }


class FakeDockerd:
    """Answers the two calls glia makes; ``attached`` False until Join has finished."""

    def __init__(self) -> None:
        self.container = inspect()
        self.attached = True
        self.calls: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1.41/networks/{id}", self._network)
        app.router.add_get("/v1.41/containers/{id}/json", self._container)
        return app

    async def _network(self, req: web.Request) -> web.Response:
        self.calls.append(req.path)
        if req.match_info["id"] != NID:
            return web.json_response({"message": "no such network"}, status=404)
        ctrs = {CID: {"Name": "glia-web", "EndpointID": EID}} if self.attached else {}
        self.attached = True  # the next call finds it: Join has finished
        return web.json_response({"Id": NID, "Name": "glia", "Containers": ctrs})

    async def _container(self, req: web.Request) -> web.Response:
        self.calls.append(req.path)
        if req.match_info["id"] != CID:
            return web.json_response({"message": "no such container"}, status=404)
        return web.json_response(self.container)


@pytest.fixture
async def dockerd(tmp_path: Path) -> AsyncIterator[tuple[FakeDockerd, str]]:
    fake = FakeDockerd()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    sock = str(tmp_path / "docker.sock")
    await web.UnixSite(runner, sock).start()
    try:
        yield fake, sock
    finally:
        await runner.cleanup()


def _state(tmp_path: Path) -> DockerState:
    state = DockerState(tmp_path / "docker.json")
    state.put(EID, NID, "10.1.0.7")
    return state


async def test_labels_name_and_aliases_of_the_glia_network(
    dockerd: tuple[FakeDockerd, str], tmp_path: Path
) -> None:
    fake, sock = dockerd
    fake.attached = False  # the first look finds no container: retried
    got = await DockerLabels(sock, _state(tmp_path)).labels(EID)
    assert got == RuntimeInfo({"app": "web", "tier": "front"}, ("glia-web", "Db", CID[:12]))
    assert fake.calls == [
        f"/v1.41/networks/{NID}",
        f"/v1.41/networks/{NID}",
        f"/v1.41/containers/{CID}/json",
    ]


async def test_an_unknown_endpoint_goes_to_the_other_source(
    dockerd: tuple[FakeDockerd, str], tmp_path: Path
) -> None:
    class Podman:
        async def labels(self, container_id: str) -> RuntimeInfo:
            return RuntimeInfo({"app": "pod"})

    _, sock = dockerd
    docker = DockerLabels(sock, _state(tmp_path), timeout=0.5)
    both = RuntimeLabels(docker, Podman())
    assert await both.labels("9" * 64) == RuntimeInfo({"app": "pod"}, ())
    with pytest.raises(LabelsUnavailable):
        await docker.labels("9" * 64)


def test_names_from_an_inspect_answer() -> None:
    # The attachment is found by endpoint id, or by network id (its key is a name).
    by_net = inspect()
    by_net["NetworkSettings"]["Networks"]["glia"]["EndpointID"] = ""
    assert runtime_info(by_net, NID, EID).aliases == ("glia-web", "Db", CID[:12])
    # No aliases, no name, odd shapes: only what is there, never an error.
    bare = inspect(Name="/", NetworkSettings={"Networks": {"glia": {"EndpointID": EID}}})
    assert runtime_info(bare, NID, EID) == RuntimeInfo({"app": "web", "tier": "front"}, ())
    odd = inspect(Name=None, Config={}, NetworkSettings={"Networks": None})
    assert runtime_info(odd, NID, EID) == RuntimeInfo({}, ())
    mixed = inspect()
    mixed["NetworkSettings"]["Networks"]["glia"]["Aliases"] = ["ok", 7, None]
    assert runtime_info(mixed, NID, EID).aliases == ("glia-web", "ok")
    with pytest.raises(ValueError):
        runtime_info(inspect(Config={"Labels": ["a=b"]}), NID, EID)
