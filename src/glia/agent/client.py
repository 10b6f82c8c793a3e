"""Synchronous client of the agent's REST API (docs/agent-api.md) over its unix socket.

Called by the CNI plugin (:mod:`glia.cni`), which must start fast, and by the
``glia`` CLI. It therefore uses only the standard library (a minimal HTTP/1.0 exchange
over the unix socket) and must not import pydantic, aiohttp, typer or
rich. Each call opens its own connection: the plugin makes one or two calls per
run and the CLI one, so a connection pool would buy nothing.
"""

from __future__ import annotations

import errno
import json
import socket
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

DEFAULT_SOCKET = "/run/glia/agent.sock"

# Connect errors that mean "the agent is not (yet) there": worth waiting for.
TRANSIENT_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN})

_MAX_ERROR_TEXT = 300
_MAX_HEADER_LINE = 8192


class AgentClientError(Exception):
    """Base of everything this client raises."""


class AgentUnreachable(AgentClientError):
    """Connecting to the socket failed: it is missing, refused, or not accessible."""

    def __init__(self, socket_path: str, error: OSError) -> None:
        self.socket_path = socket_path
        self.error = error
        reason = error.strerror or str(error) or type(error).__name__
        super().__init__(f"cannot connect to the glia agent at {socket_path}: {reason}")

    @property
    def transient(self) -> bool:
        """True when the agent may simply not be up yet (no socket, or nobody listening)."""
        return self.error.errno in TRANSIENT_ERRNOS


class AgentError(AgentClientError):
    """The agent answered with an error body ``{"error": {"code", "msg", "details"}}``.

    For the ``/v1/cni/*`` routes ``code`` is a CNI error code that the plugin
    prints unchanged.
    """

    def __init__(self, code: int, msg: str, details: str, http_status: int) -> None:
        self.code = code
        self.msg = msg
        self.details = details
        self.http_status = http_status
        text = f"{msg} ({details})" if details else msg
        super().__init__(f"agent error {code} (HTTP {http_status}): {text}")


class AgentProtocolError(AgentClientError):
    """The connection was made but the call failed: timeout, reset, or a malformed answer."""

    def __init__(self, socket_path: str, reason: str, *, timeout: bool = False) -> None:
        self.socket_path = socket_path
        self.reason = reason
        self.timeout = timeout
        super().__init__(f"glia agent at {socket_path}: {reason}")


class _BadResponse(Exception):
    pass


def _exchange(socket_path: str, timeout: float, request: bytes) -> tuple[int, bytes]:
    """Send one HTTP/1.0 request over a unix socket; return (status, body).

    Hand-written instead of ``http.client`` because importing that module
    (it pulls in the ``email`` package) costs the CNI plugin ~30 ms on every
    container start, a third of its run time; HTTP/1.0 with ``Connection:
    close`` needs no more than reading to EOF.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(socket_path)
        except TimeoutError:
            raise
        except OSError as e:
            raise AgentUnreachable(socket_path, e) from e
        send_error: OSError | None = None
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError) as e:
            # The agent may answer before it has read the whole body (a body
            # over its limit) and then close: its answer says why, so read it.
            send_error = e
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                if not chunks:
                    raise
                break  # the answer came; the reset only says the body went unread
            if not chunk:
                break
            chunks.append(chunk)
        if send_error is not None and not chunks:
            raise send_error
    finally:
        sock.close()
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise _BadResponse(f"malformed HTTP response {raw[:60]!r}")
    return int(status_line[1]), body


class AgentClient:
    """One agent, addressed by its API socket. Methods block for at most ``timeout`` s per I/O."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    # -- generic calls -------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, json.dumps(body).encode())

    def get_text(self, path: str) -> str:
        """A route answering text (``GET /v1/metrics``); errors as for JSON routes."""
        status, raw = self._roundtrip("GET", path, None, accept="text/plain")
        if status >= 400:
            self._decode("GET", path, status, raw)  # raises the error the body names
        return raw.decode("utf-8", errors="replace")

    def _call(self, method: str, path: str, payload: bytes | None) -> Any:
        status, raw = self._roundtrip(method, path, payload)
        return self._decode(method, path, status, raw)

    def _roundtrip(
        self, method: str, path: str, payload: bytes | None, accept: str = "application/json"
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.0", "Host: localhost", f"Accept: {accept}"]
        if payload is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + (payload or b"")
        try:
            return _exchange(self.socket_path, self.timeout, request)
        except TimeoutError as e:
            raise AgentProtocolError(
                self.socket_path,
                f"{method} {path}: no answer within {self.timeout:g}s",
                timeout=True,
            ) from e
        except _BadResponse as e:
            raise AgentProtocolError(self.socket_path, f"{method} {path}: {e}") from e
        except OSError as e:
            raise AgentProtocolError(self.socket_path, f"{method} {path}: {_describe(e)}") from e

    def _decode(self, method: str, path: str, status: int, raw: bytes) -> Any:
        try:
            data = json.loads(raw) if raw.strip() else None
        except (ValueError, UnicodeDecodeError):
            if status >= 400:
                text = raw.decode(errors="replace").strip()[:_MAX_ERROR_TEXT]
                raise AgentError(999, f"HTTP {status} from the agent", text, status) from None
            raise AgentProtocolError(
                self.socket_path, f"{method} {path}: the answer is not JSON (HTTP {status})"
            ) from None
        if status >= 400:
            raise _error_from_body(status, data)
        return data

    # -- streams -------------------------------------------------------------------

    def monitor(self, types: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
        """``GET /v1/monitor``: the node's datapath events, one JSON object per line,
        as they come (docs/monitor.md), until the agent ends the stream (an
        ``{"type": "end"}`` item, then the iterator ends). A connection that
        breaks without it raises :class:`AgentProtocolError`.

        Still the hand-written HTTP/1.0 exchange, not aiohttp's client: this
        module stays standard-library only (the CNI plugin imports it and must
        start fast), and to an HTTP/1.0 request aiohttp answers a stream
        unframed, closed by the agent, so reading lines to EOF is the whole
        protocol (no chunked decoding). The headers must come within
        ``timeout``; events may then be any time apart.
        """
        query = urllib.parse.urlencode([("type", t) for t in types])
        path = "/v1/monitor" + (f"?{query}" if query else "")
        head = f"GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: application/x-ndjson\r\n\r\n"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.socket_path)
            except TimeoutError as e:
                raise AgentProtocolError(
                    self.socket_path,
                    f"GET {path}: no connection within {self.timeout:g}s",
                    timeout=True,
                ) from e
            except OSError as e:
                raise AgentUnreachable(self.socket_path, e) from e
            stream = sock.makefile("rb")
            try:
                sock.sendall(head.encode())
                status = self._stream_status(stream, path)
                if status >= 400:
                    self._decode("GET", path, status, stream.read())
                    raise AgentProtocolError(self.socket_path, f"GET {path}: HTTP {status}")
                sock.settimeout(None)
                yield from self._lines(stream, path)
            except TimeoutError as e:
                raise AgentProtocolError(
                    self.socket_path,
                    f"GET {path}: no answer within {self.timeout:g}s",
                    timeout=True,
                ) from e
            except OSError as e:
                raise AgentProtocolError(
                    self.socket_path, f"GET {path}: connection lost ({_describe(e)})"
                ) from e
            finally:
                stream.close()
        finally:
            sock.close()

    def _stream_status(self, stream: Any, path: str) -> int:
        """Read the status line and headers; the status code."""
        status_line = stream.readline(_MAX_HEADER_LINE)
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            what = "closed the connection" if not status_line else f"answered {status_line[:60]!r}"
            raise AgentProtocolError(self.socket_path, f"GET {path}: the agent {what}")
        while True:
            line = stream.readline(_MAX_HEADER_LINE)
            if not line:
                raise AgentProtocolError(
                    self.socket_path, f"GET {path}: the connection closed within the headers"
                )
            if line in (b"\r\n", b"\n"):
                return int(parts[1])

    def _lines(self, stream: Any, path: str) -> Iterator[dict[str, Any]]:
        while True:
            line = stream.readline()
            if not line.endswith(b"\n"):
                raise AgentProtocolError(
                    self.socket_path,
                    f"GET {path}: the connection to the agent was lost "
                    "(it closed the stream without saying why)",
                )
            try:
                item = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                raise AgentProtocolError(
                    self.socket_path, f"GET {path}: a line is not JSON: {line[:80]!r}"
                ) from None
            if not isinstance(item, dict):
                raise AgentProtocolError(
                    self.socket_path, f"GET {path}: expected JSON objects, got {_kind(item)}"
                )
            yield item
            if item.get("type") == "end":
                return

    # -- routes (docs/agent-api.md) -------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._dict(self.get("/v1/status"), "/v1/status")

    def nodes(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/nodes"), "/v1/nodes")

    def endpoints(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/endpoints"), "/v1/endpoints")

    def identities(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/identities"), "/v1/identities")

    def bpf_ipcache(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/bpf/ipcache"), "/v1/bpf/ipcache")

    def bpf_endpoints(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/bpf/endpoints"), "/v1/bpf/endpoints")

    def bpf_metrics(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/bpf/metrics"), "/v1/bpf/metrics")

    def bpf_lb(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/bpf/lb"), "/v1/bpf/lb")

    def bpf_ct(self) -> list[dict[str, Any]]:
        return self._list(self.get("/v1/bpf/ct"), "/v1/bpf/ct")

    def bpf_policy(self, endpoint: str) -> dict[str, Any]:
        """The policy map rows of a local endpoint's identity (``GET /v1/bpf/policy``)."""
        path = "/v1/bpf/policy"
        query = urllib.parse.urlencode({"endpoint": endpoint})
        return self._dict(self.get(f"{path}?{query}"), path)

    def policy_endpoints(self) -> list[dict[str, Any]]:
        """Each local endpoint's identity and enforced policy (``GET /v1/policy/endpoints``)."""
        return self._list(self.get("/v1/policy/endpoints"), "/v1/policy/endpoints")

    def clustermesh(self) -> dict[str, Any]:
        """Every remote cluster's state and the remote cluster directory's problems."""
        return self._dict(self.get("/v1/clustermesh"), "/v1/clustermesh")

    def cni_add(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self.post("/v1/cni/add", req), "/v1/cni/add")

    def cni_del(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self.post("/v1/cni/del", req), "/v1/cni/del")

    def cni_check(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self.post("/v1/cni/check", req), "/v1/cni/check")

    def cni_gc(self, req: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self.post("/v1/cni/gc", req), "/v1/cni/gc")

    def cni_status(self) -> dict[str, Any]:
        return self._dict(self.get("/v1/cni/status"), "/v1/cni/status")

    # -- declared resources and Services (docs/services.md) -----------------------------

    def config_apply(self, documents: list[Any], source: str) -> dict[str, Any]:
        """Store the manifests' resources: ``{"results": [{kind, name, action, ...}]}``."""
        body = {"documents": documents, "source": source}
        return self._dict(self.post("/v1/config/apply", body), "/v1/config/apply")

    def config_delete(self, documents: list[Any], source: str) -> dict[str, Any]:
        """Delete the resources the manifests name: ``{"results": [{..., "action"}]}``."""
        body = {"documents": documents, "source": source}
        return self._dict(self.post("/v1/config/delete", body), "/v1/config/delete")

    def config_services(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Declared Services as Kubernetes ``v1 Service`` objects."""
        query = {k: v for k, v in (("namespace", namespace), ("name", name)) if v}
        path = "/v1/config/services"
        full = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        return self._list(self.get(full), path)

    def config_policies(
        self, namespace: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Declared policies as ``cilium.io/v2 CiliumNetworkPolicy`` objects."""
        query = {k: v for k, v in (("namespace", namespace), ("name", name)) if v}
        path = "/v1/config/policies"
        full = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        return self._list(self.get(full), path)

    def policy(self, namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
        """The policies the agent's cluster enforces: ``{"cluster", "revision", "policies",
        "skipped"}`` (docs/agent-api.md)."""
        query = {k: v for k, v in (("namespace", namespace), ("name", name)) if v}
        path = "/v1/policy"
        full = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        return self._dict(self.get(full), path)

    def policy_trace(self, request: dict[str, Any]) -> dict[str, Any]:
        """The verdict on one connection and the rules that decided it (docs/policy.md)."""
        return self._dict(self.post("/v1/policy/trace", request), "/v1/policy/trace")

    def services(self) -> list[dict[str, Any]]:
        """The cluster's ClusterService records (frontends, backends with readiness)."""
        return self._list(self.get("/v1/services"), "/v1/services")

    def _dict(self, data: Any, path: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise AgentProtocolError(
                self.socket_path, f"{path}: expected a JSON object, got {_kind(data)}"
            )
        return data

    def _list(self, data: Any, path: str) -> list[dict[str, Any]]:
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise AgentProtocolError(
                self.socket_path, f"{path}: expected a JSON list of objects, got {_kind(data)}"
            )
        return data


def _error_from_body(status: int, data: Any) -> AgentError:
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        text = json.dumps(data)[:_MAX_ERROR_TEXT]
        return AgentError(999, f"HTTP {status} from the agent", text, status)
    code = err.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        code = 999
    msg = err.get("msg")
    details = err.get("details")
    return AgentError(
        code,
        msg if isinstance(msg, str) and msg else f"HTTP {status} from the agent",
        details if isinstance(details, str) else "" if details is None else json.dumps(details),
        status,
    )


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _kind(data: Any) -> str:
    if data is None:
        return "an empty answer"
    if isinstance(data, list):
        return "a list with non-object items"
    return type(data).__name__
