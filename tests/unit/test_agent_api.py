"""The agent API's HTTP contract: a real ApiServer on a unix socket, and docs/agent-api.md.

The agent behind it is a plain object holding the state the routes read (no
kvstore, no datapath): errors of the HTTP layer (no route, wrong method, body
over the limit, malformed JSON) do not depend on it, and the routes that need
a kvstore answer their documented 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_agent_client import short_tmpdir

from glia.agent.api import ApiServer
from glia.agent.api_http import MAX_REQUEST_BODY
from glia.agent.client import AgentClient, AgentError
from glia.agent.config import AgentConfig
from glia.kvstore.config import EtcdConfig
from glia.model import codec
from glia.model.service import Backend, ClusterService, Protocol, ServicePort

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent-api.md"
SERVICE_CIDR = "100.64.0.0/16"


class AgentState:
    """What the API reads of :class:`glia.agent.daemon.Agent`, before anything is connected."""

    def __init__(self) -> None:
        self.cfg = AgentConfig(
            "c1", 1, "n1", "198.18.1.1", service_cidr=SERVICE_CIDR, config_etcd=EtcdConfig()
        )
        self.ready = asyncio.Event()
        self.status: dict[str, Any] = {}
        self.kv = None
        self.config_kv = None
        self.identities = None
        self.endpoints = None
        self.datapath = None
        self.services = None
        self.policy = None
        self.docker = None

    def status_dict(self) -> dict[str, Any]:
        return {"healthy": False, "node": None}


@pytest.fixture
async def api() -> AsyncIterator[str]:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        server = ApiServer(AgentState(), path)  # type: ignore[arg-type]
        await server.start()
        try:
            yield path
        finally:
            await server.stop()


def _raw(path: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request as bytes over the socket; (status, headers, body) of the answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def request(
    path: str, method: str, route: str, body: bytes = b"", headers: tuple[str, ...] = ()
) -> tuple[int, dict[str, str], Any]:
    head = [f"{method} {route} HTTP/1.0", "Host: localhost", *headers]
    if body and not any(h.lower().startswith("transfer-encoding") for h in headers):
        head.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    status, hdrs, answer = await asyncio.to_thread(_raw, path, raw)
    assert hdrs.get("Content-Type", "").startswith("application/json"), (status, answer)
    return status, hdrs, json.loads(answer)


def error(code: int, msg: str, details: str = "") -> dict[str, Any]:
    return {"error": {"code": code, "msg": msg, "details": details}}


# -- the route table and the documentation ---------------------------------------------


def served_routes() -> set[tuple[str, str]]:
    app = ApiServer(AgentState(), "/nonexistent/agent.sock").build_app()  # type: ignore[arg-type]
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}


def documented_routes() -> set[tuple[str, str]]:
    """The ``METHOD /path`` of every row of the route table in docs/agent-api.md."""
    text = DOC.read_text()
    table = text.split("## Routes", 1)[1]
    return set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE|HEAD) (/[^`?\s]*)`", table, re.M))


def test_every_route_is_documented_and_every_documented_route_is_served() -> None:
    served, documented = served_routes(), documented_routes()
    assert len(served) >= 18  # the table was walked (cni, status, lists, bpf, config)
    assert served - documented == set(), "served but missing from docs/agent-api.md"
    assert documented - served == set(), "in docs/agent-api.md but not served"


def test_the_documented_limit_is_the_limit() -> None:
    text = DOC.read_text()
    assert f"{MAX_REQUEST_BODY:,} bytes" in text
    assert f"at most **{MAX_REQUEST_BODY // 1024 // 1024} MiB**" in text


# -- errors of the HTTP layer ------------------------------------------------------------


async def test_unknown_route_is_a_json_404(api: str) -> None:
    status, _, body = await request(api, "GET", "/v1/nope")
    assert status == 404
    assert body == error(7, "no route /v1/nope (the routes are listed in docs/agent-api.md)")
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(AgentClient(api).get, "/v2/status")
    assert (ei.value.http_status, ei.value.code) == (404, 7)
    assert ei.value.msg.startswith("no route /v2/status")


@pytest.mark.parametrize(
    ("method", "route", "allowed"),
    [
        ("GET", "/v1/cni/add", "POST"),
        ("DELETE", "/v1/status", "GET"),
        ("HEAD", "/v1/nodes", "GET"),
        ("PUT", "/v1/config/apply", "POST"),
        ("POST", "/v1/services", "GET"),
    ],
)
async def test_wrong_method_is_a_json_405(api: str, method: str, route: str, allowed: str) -> None:
    raw = f"{method} {route} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode()
    status, headers, body = await asyncio.to_thread(_raw, api, raw)
    assert status == 405
    assert headers["Allow"] == allowed
    if method != "HEAD":  # a HEAD answer has no body
        assert json.loads(body) == error(
            7, f"method {method} is not allowed on {route} (allowed: {allowed})"
        )


async def test_body_over_the_limit_names_the_limit(api: str) -> None:
    size = MAX_REQUEST_BODY + 1
    status, _, body = await request(api, "POST", "/v1/cni/add", b" " * size)
    assert status == 413
    assert body["error"]["code"] == 7
    assert body["error"]["msg"] == (
        f"request body of {size} bytes exceeds the limit of {MAX_REQUEST_BODY} bytes (8 MiB)"
    )
    # Through the client, which sends the whole body before it reads the answer.
    docs = [{"pad": "x" * 1024}] * (MAX_REQUEST_BODY // 1000)
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(AgentClient(api).config_apply, docs, "big.yaml")
    assert ei.value.http_status == 413, ei.value
    assert f"exceeds the limit of {MAX_REQUEST_BODY} bytes" in ei.value.msg


async def test_chunked_body_over_the_limit_names_the_limit(api: str) -> None:
    chunk = b"x" * (1024 * 1024)
    n = MAX_REQUEST_BODY // len(chunk) + 1
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(n)) + b"0\r\n\r\n"
    head = b"POST /v1/config/apply HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + framed
    status, _, body = await asyncio.to_thread(_raw, api, raw)
    assert status == 413
    assert json.loads(body)["error"]["msg"] == (
        f"request body exceeds the limit of {MAX_REQUEST_BODY} bytes (8 MiB)"
    )


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        (b"{nope", "request body is not valid JSON: Expecting property name enclosed in "
         "double quotes at line 1 column 2"),
        (b'{"a": 1,\n "b": }', "request body is not valid JSON: Expecting value at line 2 "
         "column 7"),
        (b"\xff\xfe{}", "request body is not UTF-8 text (invalid byte at offset 0)"),
        (b"[1, 2]", "request body must be a JSON object, not an array"),
        (b'"text"', "request body must be a JSON object, not a string"),
        (b"  ", "request body is empty: expected JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "request body is not valid JSON: nested too deeply"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("route", ["/v1/cni/add", "/v1/cni/gc", "/v1/config/apply"])
async def test_malformed_body_is_a_400_naming_the_problem(
    api: str, route: str, body: bytes, msg: str
) -> None:
    status, _, answer = await request(api, "POST", route, body)
    assert (status, answer) == (400, error(7, msg))


# -- routes answer their documented shapes without a kvstore or datapath -----------------


async def test_routes_answer_json_before_the_agent_is_connected(api: str) -> None:
    c = AgentClient(api)
    assert await asyncio.to_thread(c.status) == {"healthy": False, "node": None}
    assert await asyncio.to_thread(c.nodes) == []
    assert await asyncio.to_thread(c.endpoints) == []
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(c.cni_status)
    assert (ei.value.http_status, ei.value.code) == (503, 50)
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(c.bpf_ipcache)
    assert (ei.value.http_status, ei.value.code, ei.value.msg) == (
        503,
        50,
        "datapath not loaded yet",
    )
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(c.cni_add, {"command": "ADD"})
    assert (ei.value.http_status, ei.value.code) == (503, 11)
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(c.services)
    assert (ei.value.http_status, ei.value.code) == (503, 50)
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(c.config_services)
    assert (ei.value.http_status, ei.value.code) == (503, 11)


async def test_policy_routes_before_policy_runs(api: str) -> None:
    c = AgentClient(api)
    for call in (c.policy_endpoints, lambda: c.bpf_policy("web")):
        with pytest.raises(AgentError) as ei:
            await asyncio.to_thread(call)
        assert (ei.value.http_status, ei.value.code, ei.value.msg) == (
            503,
            50,
            "policy is not running yet",
        )


def service(i: int) -> dict[str, Any]:
    """A Service of over 1 KiB of JSON: twice the ~500 bytes of a typical one."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"service-{i:04d}",
            "namespace": "shop",
            "labels": {"app": f"service-{i:04d}", "tier": "backend", "team": "payments"},
            "annotations": {
                "service.cilium.io/global": "true",
                "service.cilium.io/shared": "true",
                "service.glia.io/health-check": "http",
                "service.glia.io/health-check-path": "/healthz",
                "example.com/owner": "payments-team@example.com",
                "example.com/runbook": f"https://runbooks.example.com/shop/service-{i:04d}",
                "example.com/description": "Takes the orders of the shop's web front end.",
            },
        },
        "spec": {
            "selector": {"app": f"service-{i:04d}", "tier": "backend"},
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"},
                {"name": "grpc", "port": 9000, "targetPort": 9000, "protocol": "TCP"},
                {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
            ],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
        },
    }


async def test_a_file_of_1000_services_fits_the_body_limit(api: str) -> None:
    docs = [service(i) for i in range(1000)]
    size = len(json.dumps({"documents": docs, "source": "big.yaml"}))
    assert 1024 * 1024 < size < MAX_REQUEST_BODY  # over aiohttp's default limit of 1 MiB
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(AgentClient(api).config_apply, docs, "big.yaml")
    # Read whole and validated: what stops it is the missing kvstore, not the size.
    assert (ei.value.http_status, ei.value.code) == (503, 11)
    assert ei.value.msg == "glia agent is not connected to the kvstore yet"


# -- GET /v1/clustermesh -------------------------------------------------------------------

MESH_STATUS: dict[str, Any] = {
    "clusters": [
        {
            "name": "c2",
            "id": 2,
            "state": "synced",
            "ready": True,
            "pod_pools": ["10.2.0.0/16"],
            "service_cidr": "100.66.0.0/15",
            "nodes": 2,
            "endpoints": 3,
            "identities": 2,
            "services": 1,
            "rejected": 0,
            "last_error": None,
            "heartbeat_age": 1.5,
            "last_sync_seconds": 0.25,
            "stale_since": None,
        }
    ],
    "config_dir": "/run/glia/lab/nodes/c1-n1/clustermesh",
    "config_errors": {"/run/glia/lab/nodes/c1-n1/clustermesh/c3.yml": "rename it"},
}


class Mesh:
    """What the route reads of the agent's ClusterMesh: its status."""

    def __init__(self) -> None:
        self.calls = 0

    def status(self) -> dict[str, Any]:
        self.calls += 1
        return MESH_STATUS


@contextlib.asynccontextmanager
async def serving(agent: AgentState) -> AsyncIterator[AgentClient]:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        server = ApiServer(agent, path)  # type: ignore[arg-type]
        await server.start()
        try:
            yield AgentClient(path)
        finally:
            await server.stop()


async def test_clustermesh_is_the_meshs_status() -> None:
    agent = AgentState()
    agent.mesh = Mesh()  # type: ignore[attr-defined]
    async with serving(agent) as c:
        assert await asyncio.to_thread(c.clustermesh) == MESH_STATUS
        assert await asyncio.to_thread(c.get, "/v1/clustermesh") == MESH_STATUS
    assert agent.mesh.calls == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("has_attribute", [False, True], ids=["no-mesh-attribute", "mesh-none"])
async def test_clustermesh_of_an_agent_alone_is_empty(has_attribute: bool) -> None:
    agent = AgentState()
    if has_attribute:
        agent.mesh = None  # type: ignore[attr-defined]
    async with serving(agent) as c:
        answer = await asyncio.to_thread(c.clustermesh)
    assert answer == {"clusters": [], "config_dir": "", "config_errors": {}}


async def test_a_failing_mesh_status_is_a_json_500() -> None:
    class Broken:
        def status(self) -> dict[str, Any]:
            raise RuntimeError("boom")

    agent = AgentState()
    agent.mesh = Broken()  # type: ignore[attr-defined]
    async with serving(agent) as c:
        with pytest.raises(AgentError) as ei:
            await asyncio.to_thread(c.clustermesh)
    assert (ei.value.http_status, ei.value.code, ei.value.msg) == (500, 999, "RuntimeError: boom")


class Programmed:
    """What ``GET /v1/services`` reads of :class:`glia.agent.services.AgentServices`."""

    def __init__(self, synced: bool, services: list[ClusterService]) -> None:
        self.synced = synced
        self._services = services

    def programmed(self) -> list[ClusterService]:
        return self._services


MERGED = ClusterService(
    "default",
    "web",
    "c1",
    1,
    "100.64.0.20",
    [ServicePort(80, 80)],
    [
        Backend("10.1.1.5", 80, Protocol.TCP, "", 80, "n1", "c1", "default/a", True, True),
        Backend("10.2.1.5", 80, Protocol.TCP, "", 80, "n1", "c2", "default/b", False, False),
    ],
    global_=True,
    affinity="local",
)


async def test_services_are_what_the_maps_hold_merged() -> None:
    agent = AgentState()
    agent.services = Programmed(True, [MERGED])  # type: ignore[assignment]
    async with serving(agent) as c:
        answer = await asyncio.to_thread(c.services)
    assert answer == [codec.to_dict(MERGED)]
    assert [(b["cluster"], b["preferred"], b["ready"]) for b in answer[0]["backends"]] == [
        ("c1", True, True),
        ("c2", False, False),
    ]


@pytest.mark.parametrize("synced", [None, False], ids=["no-lb-yet", "not-synced"])
async def test_services_before_the_first_sync_are_a_503(synced: bool | None) -> None:
    agent = AgentState()
    if synced is not None:
        agent.services = Programmed(synced, [MERGED])  # type: ignore[assignment]
    async with serving(agent) as c:
        with pytest.raises(AgentError) as ei:
            await asyncio.to_thread(c.services)
    assert (ei.value.http_status, ei.value.code) == (503, 50)
    assert "not synchronised yet" in ei.value.msg


async def test_metrics_route_is_text_and_counts_the_cni_calls(api: str) -> None:
    c = AgentClient(api)
    with pytest.raises(AgentError):
        await asyncio.to_thread(c.cni_add, {"command": "ADD"})  # not ready: an error
    status, headers, body = await asyncio.to_thread(
        _raw, api, b"GET /v1/metrics HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    assert (status, headers["Content-Type"]) == (200, "text/plain; version=0.0.4; charset=utf-8")
    text = await asyncio.to_thread(c.get_text, "/v1/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    key = ("glia_cni_requests_total", (("command", "ADD"), ("outcome", "error")))
    assert samples[key] == 1
    assert samples[("glia_cni_duration_seconds_count", (("command", "ADD"),))] == 1
    assert b"glia_cni_requests_total" in body


async def test_glia_metrics_prints_the_agents_text(api: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from glia.cli.main import app

    result = await asyncio.to_thread(CliRunner().invoke, app, ["metrics", "--socket", api])
    assert result.exit_code == 0, result.output
    families = {f.name for f in text_string_to_metric_families(result.output)}
    assert {"glia_cni_requests", "glia_cni_duration_seconds"} <= families
    gone = str(tmp_path / "none.sock")
    result = await asyncio.to_thread(CliRunner().invoke, app, ["metrics", "--socket", gone])
    assert result.exit_code == 1
    assert "cannot reach the glia agent" in result.output
