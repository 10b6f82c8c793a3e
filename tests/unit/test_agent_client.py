"""AgentClient against a real HTTP server on a unix socket (the fake agent).

:class:`FakeAgent` is also used by the CNI plugin and CLI tests: it answers
every route of docs/agent-api.md with canned data, records the requests, and
can be told to answer anything else (errors, garbage, silence).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from glia.agent import client as client_mod
from glia.agent.client import (
    DEFAULT_SOCKET,
    AgentClient,
    AgentError,
    AgentProtocolError,
    AgentUnreachable,
)

# (status, body): body is JSON-encoded unless it is bytes (sent as is).
Answer = tuple[int, Any]
Route = Answer | Callable[[Any], Answer]

NODE = {
    "name": "n1",
    "cluster": "c1",
    "cluster_id": 1,
    "node_ip": "198.18.1.1",
    "pod_cidr": "10.1.1.0/24",
    "health_ip": None,
    "boot_id": "b00t",
}
STATUS = {
    "node": NODE,
    "cluster": "c1",
    "cluster_id": 1,
    "kvstore": {"endpoints": ["https://198.18.0.10:2379"], "ok": True},
    "datapath": {"pin_dir": "/sys/fs/bpf/glia/c1-n1", "ok": True},
    "endpoints": 2,
    "identities": 2,
    "uptime": 3723.4,
    "healthy": True,
    "subsystems": {
        "kvstore": {"ok": True, "msg": "connected"},
        "datapath": {"ok": True, "msg": "loaded"},
    },
}
NODES = [
    {**NODE, "name": "n2", "node_ip": "198.18.1.2", "pod_cidr": "10.1.2.0/24"},
    NODE,
]
ENDPOINTS = [
    {
        "container_id": "f00dcafe0123456789",
        "namespace": "default",
        "name": "web",
        "cluster": "c1",
        "node": "n1",
        "ip": "10.1.1.5",
        "identity": 65792,
        "labels": {"app": "web"},
        "state": "ready",
        "ready": True,
        "ifname": "eth0",
        "host_ifname": "glia0f00dcafe",
        "netns": "/run/netns/netns-1",
        "mac": "02:00:00:00:00:05",
        "host_mac": "02:00:00:00:01:01",
    },
    {
        "container_id": "abc",
        "namespace": "default",
        "name": "db",
        "cluster": "c1",
        "node": "n1",
        "ip": "10.1.1.6",
        "identity": 5,
        "labels": {},
        "state": "waiting-for-identity",
        "ready": False,
        "ifname": "eth0",
        "host_ifname": "glia0abc",
        "netns": "/run/netns/netns-2",
        "mac": "02:00:00:00:00:06",
        "host_mac": "02:00:00:00:01:01",
    },
]
IDENTITIES = [
    {"id": 65793, "labels": {"app": "db", "io.cilium.k8s.policy.cluster": "c1"}},
    {"id": 65792, "labels": {"app": "web", "io.cilium.k8s.policy.cluster": "c1"}},
]
IPCACHE = [
    {
        "prefix": "10.2.0.0/16",
        "identity": 6,
        "tunnel_endpoint": "198.18.2.1",
        "cluster_id": 2,
        "flags": 0,
    },
    {
        "prefix": "10.1.1.5/32",
        "identity": 65792,
        "tunnel_endpoint": "0.0.0.0",
        "cluster_id": 1,
        "flags": 1,
    },
]
BPF_ENDPOINTS = [
    {
        "ip": "10.1.1.6",
        "ifindex": 8,
        "identity": 5,
        "mac": "02:00:00:00:00:06",
        "node_mac": "02:00:00:00:01:01",
        "flags": 0,
    },
    {
        "ip": "10.1.1.5",
        "ifindex": 7,
        "identity": 65792,
        "mac": "02:00:00:00:00:05",
        "node_mac": "02:00:00:00:01:01",
        "flags": 0,
    },
]
METRICS = [
    {"reason": "FORWARDED", "code": 0, "direction": "egress", "packets": 1234567, "bytes": 99},
    {"reason": "DROP_POLICY", "code": 133, "direction": "ingress", "packets": 3, "bytes": 180},
]

MESH_DIR = "/run/glia/lab/nodes/c1-n1/clustermesh"
CLUSTERMESH = {
    "clusters": [
        {
            "name": "c3",
            "id": 3,
            "state": "stale",
            "ready": True,
            "pod_pools": ["10.3.0.0/16"],
            "service_cidr": "100.68.0.0/15",
            "nodes": 1,
            "endpoints": 1,
            "identities": 1,
            "services": 0,
            "rejected": 0,
            "last_error": "etcd https://198.18.3.254:2379: connection refused",
            "heartbeat_age": 75.5,
            "last_sync_seconds": 0.5,
            "stale_since": 75.0,
        },
        {
            "name": "c2",
            "id": 2,
            "state": "synced",
            "ready": True,
            "pod_pools": ["10.2.0.0/16", "10.20.0.0/16"],
            "service_cidr": "100.66.0.0/15",
            "nodes": 2,
            "endpoints": 1234,
            "identities": 3,
            "services": 1,
            "rejected": 2,
            "last_error": None,
            "heartbeat_age": 1.25,
            "last_sync_seconds": 0.042,
            "stale_since": None,
        },
        {
            "name": "c4",
            "id": 1,
            "state": "refused",
            "ready": False,
            "pod_pools": [],
            "service_cidr": None,
            "nodes": 0,
            "endpoints": 0,
            "identities": 0,
            "services": 0,
            "rejected": 0,
            "last_error": "cluster id 1 is ours (c1)",
            "heartbeat_age": None,
            "last_sync_seconds": None,
            "stale_since": None,
        },
    ],
    "config_dir": MESH_DIR,
    "config_errors": {
        f"{MESH_DIR}/c5.yaml": f"{MESH_DIR}/c5.yaml: ca_file is missing",
        f"{MESH_DIR}/c6.yml": f"{MESH_DIR}/c6.yml: cluster files end in .yaml (rename it)",
    },
}


def add_result(req: Any) -> Answer:
    """What the agent answers to ADD: a complete 1.0 result for the request's netns."""
    return 200, {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": req["ifname"], "mac": "02:00:00:00:00:05", "sandbox": req["netns"]}
        ],
        "ips": [{"address": "10.1.1.5/24", "gateway": "10.1.1.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.1.1"}],
        "dns": {},
    }


def default_routes() -> dict[tuple[str, str], Route]:
    return {
        ("POST", "/v1/cni/add"): add_result,
        ("POST", "/v1/cni/del"): (200, {}),
        ("POST", "/v1/cni/check"): (200, {}),
        ("POST", "/v1/cni/gc"): (200, {"removed": 0}),
        ("GET", "/v1/cni/status"): (200, {}),
        ("GET", "/v1/status"): (200, STATUS),
        ("GET", "/v1/nodes"): (200, NODES),
        ("GET", "/v1/endpoints"): (200, ENDPOINTS),
        ("GET", "/v1/identities"): (200, IDENTITIES),
        ("GET", "/v1/bpf/ipcache"): (200, IPCACHE),
        ("GET", "/v1/bpf/endpoints"): (200, BPF_ENDPOINTS),
        ("GET", "/v1/bpf/metrics"): (200, METRICS),
        ("GET", "/v1/clustermesh"): (200, CLUSTERMESH),
    }


def error(status: int, code: int, msg: str, details: str = "") -> Answer:
    return status, {"error": {"code": code, "msg": msg, "details": details}}


class FakeAgent:
    """An HTTP/1.1 server on a unix socket, in a thread, answering per the API contract."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.routes = default_routes()
        self.requests: list[tuple[str, str, Any]] = []
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def answer(self, method: str, path: str, route: Route) -> None:
        self.routes[(method, path)] = route

    def bodies(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]

    def start(self) -> None:
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                agent.requests.append((method, self.path, body))
                route = agent.routes.get((method, self.path))
                if route is None:
                    status, answer = error(404, 999, f"no route {method} {self.path}")
                else:
                    status, answer = route(body) if callable(route) else route
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def address_string(self) -> str:
                return "unix"

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

        self._server = Server(self.path, Handler)
        # A short poll interval: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if os.path.exists(self.path):
            os.unlink(self.path)


@contextmanager
def short_tmpdir() -> Iterator[str]:
    """A glia-prefixed temp dir with a short path (unix socket paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="glia-unit-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def running_fake_agent() -> Iterator[FakeAgent]:
    with short_tmpdir() as d:
        agent = FakeAgent(os.path.join(d, "agent.sock"))
        agent.start()
        try:
            yield agent
        finally:
            agent.stop()


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with running_fake_agent() as a:
        yield a


# -- tests ------------------------------------------------------------------------


def test_routes_return_the_agents_data(agent: FakeAgent) -> None:
    c = AgentClient(agent.path)
    assert c.status() == STATUS
    assert c.nodes() == NODES
    assert c.endpoints() == ENDPOINTS
    assert c.identities() == IDENTITIES
    assert c.bpf_ipcache() == IPCACHE
    assert c.bpf_endpoints() == BPF_ENDPOINTS
    assert c.bpf_metrics() == METRICS
    assert c.clustermesh() == CLUSTERMESH
    assert c.cni_status() == {}
    assert [(m, p) for m, p, _ in agent.requests] == [
        ("GET", "/v1/status"),
        ("GET", "/v1/nodes"),
        ("GET", "/v1/endpoints"),
        ("GET", "/v1/identities"),
        ("GET", "/v1/bpf/ipcache"),
        ("GET", "/v1/bpf/endpoints"),
        ("GET", "/v1/bpf/metrics"),
        ("GET", "/v1/clustermesh"),
        ("GET", "/v1/cni/status"),
    ]


def test_post_sends_the_json_body(agent: FakeAgent) -> None:
    c = AgentClient(agent.path)
    req = {"command": "ADD", "container_id": "c1", "netns": "/run/netns/x", "ifname": "eth0"}
    result = c.cni_add(req)
    assert result["ips"][0]["address"] == "10.1.1.5/24"
    assert result["interfaces"][0]["sandbox"] == "/run/netns/x"
    assert c.cni_del({"x": 1}) == {}
    assert c.cni_check({"y": 2}) == {}
    assert c.cni_gc({"valid_attachments": []}) == {"removed": 0}
    assert agent.bodies("/v1/cni/add") == [req]
    assert agent.bodies("/v1/cni/del") == [{"x": 1}]
    assert agent.bodies("/v1/cni/check") == [{"y": 2}]
    assert agent.bodies("/v1/cni/gc") == [{"valid_attachments": []}]


def test_error_body_becomes_agent_error(agent: FakeAgent) -> None:
    agent.answer(
        "GET", "/v1/cni/status", error(503, 50, "glia agent is not ready", "kvstore: down")
    )
    with pytest.raises(AgentError) as ei:
        AgentClient(agent.path).cni_status()
    assert (ei.value.code, ei.value.msg, ei.value.details, ei.value.http_status) == (
        50,
        "glia agent is not ready",
        "kvstore: down",
        503,
    )


def test_error_without_the_contract_shape_still_is_an_agent_error(agent: FakeAgent) -> None:
    agent.answer(
        "GET", "/v1/status", (500, b"500 Internal Server Error\n\nServer got itself in trouble")
    )
    agent.answer("GET", "/v1/nodes", (400, {"what": "no error key"}))
    agent.answer("GET", "/v1/endpoints", (400, {"error": {"code": "x", "msg": 3}}))
    c = AgentClient(agent.path)
    with pytest.raises(AgentError) as ei:
        c.status()
    assert ei.value.code == 999 and ei.value.http_status == 500
    assert "Server got itself in trouble" in ei.value.details
    with pytest.raises(AgentError) as ei:
        c.nodes()
    assert ei.value.code == 999 and "no error key" in ei.value.details
    with pytest.raises(AgentError) as ei:
        c.endpoints()
    assert ei.value.code == 999 and ei.value.msg == "HTTP 400 from the agent"


def test_unknown_route_is_an_agent_error(agent: FakeAgent) -> None:
    with pytest.raises(AgentError) as ei:
        AgentClient(agent.path).get("/v1/nope")
    assert ei.value.http_status == 404


def test_malformed_success_answers_are_protocol_errors(agent: FakeAgent) -> None:
    agent.answer("GET", "/v1/status", (200, b"not json"))
    agent.answer("GET", "/v1/nodes", (200, {"not": "a list"}))
    agent.answer("GET", "/v1/endpoints", (200, [1, 2]))
    agent.answer("POST", "/v1/cni/add", (200, []))
    agent.answer("GET", "/v1/clustermesh", (200, [CLUSTERMESH]))
    c = AgentClient(agent.path)
    with pytest.raises(AgentProtocolError, match="not JSON"):
        c.status()
    with pytest.raises(AgentProtocolError, match="expected a JSON list"):
        c.nodes()
    with pytest.raises(AgentProtocolError, match="expected a JSON list"):
        c.endpoints()
    with pytest.raises(AgentProtocolError, match="expected a JSON object"):
        c.cni_add({})
    with pytest.raises(AgentProtocolError, match="/v1/clustermesh: expected a JSON object"):
        c.clustermesh()


def test_missing_socket_is_unreachable() -> None:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        with pytest.raises(AgentUnreachable) as ei:
            AgentClient(path).status()
    assert ei.value.socket_path == path
    assert ei.value.transient
    assert f"cannot connect to the glia agent at {path}: No such file or directory" == str(ei.value)


def test_stale_socket_is_unreachable_and_transient() -> None:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # the file stays, nobody listens: what a killed agent leaves
        with pytest.raises(AgentUnreachable) as ei:
            AgentClient(path).status()
    assert ei.value.transient
    assert "Connection refused" in str(ei.value)


def test_a_path_through_a_file_is_unreachable_but_not_transient() -> None:
    with short_tmpdir() as d:
        with open(os.path.join(d, "file"), "w"):
            pass
        path = os.path.join(d, "file", "agent.sock")
        with pytest.raises(AgentUnreachable) as ei:
            AgentClient(path).status()
    assert not ei.value.transient  # ENOTDIR: waiting will not fix a wrong path
    assert "Not a directory" in str(ei.value)


def test_silent_agent_times_out() -> None:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)  # accepts (in the backlog) but never answers
        try:
            start = time.monotonic()
            with pytest.raises(AgentProtocolError) as ei:
                AgentClient(path, timeout=0.2).status()
            assert time.monotonic() - start < 5
        finally:
            srv.close()
    assert ei.value.timeout
    assert "no answer within 0.2s" in str(ei.value)


def test_agent_closing_the_connection_is_a_protocol_error() -> None:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)

        def hang_up() -> None:
            conn, _ = srv.accept()
            conn.recv(65536)
            conn.close()

        t = threading.Thread(target=hang_up, daemon=True)
        t.start()
        try:
            with pytest.raises(AgentProtocolError) as ei:
                AgentClient(path, timeout=5).status()
        finally:
            t.join(timeout=5)
            srv.close()
    assert not ei.value.timeout
    assert "GET /v1/status" in str(ei.value)


def test_default_socket_is_the_agents_default() -> None:
    from glia.agent.config import DEFAULT_SOCKET as AGENT_DEFAULT
    from glia.cni.spec import DEFAULT_AGENT_SOCKET

    assert DEFAULT_SOCKET == AGENT_DEFAULT == DEFAULT_AGENT_SOCKET == client_mod.DEFAULT_SOCKET


def test_answer_before_the_body_is_read_still_reaches_the_caller() -> None:
    """An agent may refuse a body over its limit and close without reading the rest."""
    answer = json.dumps(
        {"error": {"code": 7, "msg": "request body of 4194304 bytes exceeds the limit"}}
    ).encode()
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)

        def refuse() -> None:
            conn, _ = srv.accept()
            conn.recv(4096)  # the head and a little of the body
            conn.sendall(
                b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer)
            )
            conn.close()  # with most of the body unread

        t = threading.Thread(target=refuse, daemon=True)
        t.start()
        try:
            with pytest.raises(AgentError) as ei:
                AgentClient(path, timeout=10).post("/v1/config/apply", {"x": "y" * 4 * 2**20})
        finally:
            t.join(timeout=5)
            srv.close()
    assert (ei.value.http_status, ei.value.code) == (413, 7)
    assert ei.value.msg == "request body of 4194304 bytes exceeds the limit"
