"""The agent's REST API on a root-only unix socket (docs/agent-api.md).

Called by glia-cni and the CLI. Handlers translate HTTP to calls on the
:class:`~glia.agent.daemon.Agent`'s subsystems. Every error, the handlers' and
aiohttp's own (no route, wrong method, body over
:data:`~glia.agent.api_http.MAX_REQUEST_BODY`, malformed JSON), comes back as
``{"error": {"code", "msg", "details"}}`` (:mod:`glia.agent.api_http`), with
CNI error codes on ``/v1/cni/*``. :meth:`ApiServer.build_app` holds the route
table; a unit test checks it against docs/agent-api.md.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from glia.agent import api_bpfpolicy, api_cni_exec, api_config, api_monitor, api_policy
from glia.agent.api_http import (
    CODE_INTERNAL,
    MAX_REQUEST_BODY,
    ApiError,
    cni_http_status,
    error_response,
    http_error,
    read_json_object,
)
from glia.agent.metrics import AgentMetrics, CniStats
from glia.datapath.ct import ct_entries
from glia.endpoint.manager import CNI_NOT_READY, CNI_TRY_AGAIN, CniError
from glia.kvstore import keys
from glia.kvstore.errors import KVStoreError
from glia.metrics import http as metrics_http
from glia.model import codec
from glia.model.node import Node

if TYPE_CHECKING:
    from glia.agent.daemon import Agent

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# GET /v1/clustermesh of an agent without remote clusters.
NO_MESH: dict[str, Any] = {"clusters": [], "config_dir": "", "config_errors": {}}


class ApiServer:
    def __init__(self, agent: Agent, socket_path: str) -> None:
        self._agent = agent
        self._path = socket_path
        self._runner: web.AppRunner | None = None
        self.cni_stats = CniStats()
        self.metrics = AgentMetrics(agent, self.cni_stats)

    def build_app(self) -> web.Application:
        """The application: every route of docs/agent-api.md, behind the error middleware."""
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_REQUEST_BODY)
        r = app.router
        r.add_post("/v1/cni/add", self._cni_add)
        r.add_post("/v1/cni/del", self._cni_del)
        r.add_post("/v1/cni/check", self._cni_check)
        r.add_post("/v1/cni/gc", self._cni_gc)
        # No implicit HEAD routes: the API answers exactly the documented methods.
        r.add_get("/v1/cni/status", self._cni_status, allow_head=False)
        r.add_get("/v1/status", self._status, allow_head=False)
        r.add_get("/v1/nodes", self._nodes, allow_head=False)
        r.add_get("/v1/endpoints", self._endpoints, allow_head=False)
        r.add_get("/v1/identities", self._identities, allow_head=False)
        r.add_get("/v1/bpf/ipcache", self._bpf_ipcache, allow_head=False)
        r.add_get("/v1/bpf/endpoints", self._bpf_endpoints, allow_head=False)
        r.add_get("/v1/bpf/metrics", self._bpf_metrics, allow_head=False)
        r.add_get("/v1/bpf/lb", self._bpf_lb, allow_head=False)
        r.add_get("/v1/bpf/ct", self._bpf_ct, allow_head=False)
        r.add_get("/v1/clustermesh", self._clustermesh, allow_head=False)
        r.add_get("/v1/services", self._services, allow_head=False)
        r.add_get("/v1/metrics", self._metrics, allow_head=False)
        api_config.add_routes(app, self._agent)
        api_bpfpolicy.add_routes(app, self._agent)
        api_monitor.add_routes(app, self._agent)
        api_policy.add_routes(app, self._agent)
        api_cni_exec.add_routes(app, self)
        return app

    async def start(self) -> None:
        app = self.build_app()
        Path(self._path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.path.exists(self._path):
            os.unlink(self._path)  # a socket left by a killed agent
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.UnixSite(self._runner, self._path)
        await site.start()
        os.chmod(self._path, 0o600)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            return http_error(request, e)
        except ApiError as e:
            return e.response()
        except CniError as e:
            return error_response(cni_http_status(e.code), e.code, e.msg, e.details)
        except KVStoreError as e:
            return error_response(503, CNI_TRY_AGAIN, f"kvstore: {e}")
        except Exception as e:
            log.exception("API %s %s failed", request.method, request.path)
            return error_response(500, CODE_INTERNAL, f"{type(e).__name__}: {e}")

    @property
    def ready(self) -> bool:
        """The CNI calls can be served (else they answer code 11)."""
        return self._agent.ready.is_set() and self._agent.endpoints is not None

    def _ready_endpoints(self) -> Any:
        if not self.ready:
            msgs = [f"{n}: {s.msg}" for n, s in self._agent.status.items() if not s.ok]
            raise CniError(CNI_TRY_AGAIN, "glia agent is not ready yet", "; ".join(msgs))
        return self._agent.endpoints

    async def _body(self, request: web.Request) -> dict[str, Any]:
        return await read_json_object(request)

    # The CNI calls, for the HTTP routes and for the fast path's in-process client
    # (glia.agent.api_cni_exec): CniError carries the CNI code either way.

    # Timed here, not in the routes, so the fast path's calls are counted too.

    async def cni_add(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.cni_stats.timed("ADD"):
            result: dict[str, Any] = await self._ready_endpoints().add(body)
        return result

    async def cni_del(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.cni_stats.timed("DEL"):
            await self._ready_endpoints().delete(body)
        return {}

    async def cni_check(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.cni_stats.timed("CHECK"):
            await self._ready_endpoints().check(body)
        return {}

    async def cni_gc(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.cni_stats.timed("GC"):
            return await self._cni_gc_body(body)

    async def _cni_gc_body(self, body: dict[str, Any]) -> dict[str, Any]:
        valid = []
        for a in body.get("valid_attachments") or []:
            if not isinstance(a, dict) or not isinstance(a.get("containerID"), str):
                raise CniError(7, "valid_attachments entries need a containerID string")
            valid.append((a["containerID"], str(a.get("ifname") or "eth0")))
        if self._agent.docker is not None:  # Docker's endpoints are not the CNI runtime's
            valid += self._agent.docker.attachments()
        removed = await self._ready_endpoints().gc(valid)
        return {"removed": removed}

    async def cni_status(self) -> dict[str, Any]:
        if not self._agent.ready.is_set():
            msgs = [f"{n}: {s.msg}" for n, s in self._agent.status.items() if not s.ok]
            raise CniError(CNI_NOT_READY, "glia agent is not ready", "; ".join(msgs))
        return {}

    async def _cni_add(self, request: web.Request) -> web.Response:
        body = await self._body(request)  # a malformed request is wrong, ready or not
        return web.json_response(await self.cni_add(body))

    async def _cni_del(self, request: web.Request) -> web.Response:
        return web.json_response(await self.cni_del(await self._body(request)))

    async def _cni_check(self, request: web.Request) -> web.Response:
        return web.json_response(await self.cni_check(await self._body(request)))

    async def _cni_gc(self, request: web.Request) -> web.Response:
        return web.json_response(await self.cni_gc(await self._body(request)))

    async def _cni_status(self, request: web.Request) -> web.Response:
        return web.json_response(await self.cni_status())

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._agent.status_dict())

    async def _nodes(self, request: web.Request) -> web.Response:
        kv = self._agent.kv
        if kv is None:
            return web.json_response([])
        items, _ = await kv.list(keys.nodes(self._agent.cfg.cluster))
        out = []
        for item in items:
            try:
                out.append(codec.to_dict(codec.decode(Node, item.value)))
            except codec.InvalidValue as e:
                log.warning("skipping invalid node %s: %s", item.key, e)
        return web.json_response(out)

    async def _endpoints(self, request: web.Request) -> web.Response:
        eps = self._agent.endpoints.all() if self._agent.endpoints else []
        return web.json_response([codec.to_dict(e) for e in eps])

    async def _identities(self, request: web.Request) -> web.Response:
        cache = self._agent.identities
        if cache is None:  # not started yet
            return web.json_response([])
        idents = sorted(cache.all(), key=lambda i: i.id)
        return web.json_response([{"id": i.id, "labels": i.labels} for i in idents])

    async def _clustermesh(self, request: web.Request) -> web.Response:
        mesh = getattr(self._agent, "mesh", None)
        if mesh is None:  # no clustermesh_dir: this cluster is alone
            return web.json_response(NO_MESH)
        return web.json_response(mesh.status())

    def _dp(self) -> Any:
        if self._agent.datapath is None:
            raise CniError(CNI_NOT_READY, "datapath not loaded yet")
        return self._agent.datapath

    async def _bpf_ipcache(self, request: web.Request) -> web.Response:
        dp = self._dp()
        rows = await self._agent.run_dp(dp.ipcache.items)
        out = [
            {
                "prefix": prefix,
                "identity": info.identity,
                "tunnel_endpoint": info.tunnel_endpoint,
                "cluster_id": info.cluster_id,
                "flags": getattr(info, "flags", 0),
            }
            for prefix, info in rows
        ]
        return web.json_response(sorted(out, key=lambda r: str(r["prefix"])))

    async def _bpf_endpoints(self, request: web.Request) -> web.Response:
        dp = self._dp()
        rows = await self._agent.run_dp(dp.endpoints.items)
        out = [
            {
                "ip": ip,
                "ifindex": info.ifindex,
                "identity": info.identity,
                "mac": info.mac,
                "node_mac": info.node_mac,
                "flags": getattr(info, "flags", 0),
            }
            for ip, info in rows
        ]
        return web.json_response(sorted(out, key=lambda r: str(r["ip"])))

    async def _bpf_lb(self, request: web.Request) -> web.Response:
        services = self._agent.services
        if services is None:
            raise CniError(CNI_NOT_READY, "service load-balancing is not running yet")
        return web.json_response(await self._agent.run_dp(services.lb.lb_rows))

    async def _services(self, request: web.Request) -> web.Response:
        services = self._agent.services
        if services is None or not services.synced:
            raise CniError(CNI_NOT_READY, "the Services are not synchronised yet")
        return web.json_response([codec.to_dict(s) for s in services.programmed()])

    async def _bpf_ct(self, request: web.Request) -> web.Response:
        dp = self._dp()
        now = time.monotonic_ns()
        rows = await self._agent.run_dp(lambda: [r.to_dict(now) for r in ct_entries(dp)])
        return web.json_response(rows)

    async def _metrics(self, request: web.Request) -> web.Response:
        # The same text as prometheus_listen's /metrics, for `glia metrics`.
        body = await self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": metrics_http.CONTENT_TYPE})

    async def _bpf_metrics(self, request: web.Request) -> web.Response:
        dp = self._dp()
        rows = await self._agent.run_dp(dp.metrics.read)
        out = [
            {
                "reason": r.reason.name,
                "code": int(r.reason),
                "direction": r.direction,
                "packets": r.packets,
                "bytes": r.bytes,
            }
            for r in rows
        ]
        return web.json_response(out)
