"""Agent API routes for policy: ``POST /v1/policy/trace``, ``GET /v1/policy`` (docs/agent-api.md).

Mounted by :class:`glia.agent.api.ApiServer` through :func:`add_routes`;
called by ``glia policy trace`` and ``glia policy get`` (:mod:`glia.cli.policy`).
Thin: the request is parsed and its ends resolved by :mod:`glia.policy.trace`,
the listing built by :mod:`glia.policy.view`; this module only reads what those
need. This cluster's policies come from its store through the CLI path's
user (``config_kv``, as :mod:`glia.agent.api_config`), another cluster's once
per trace over that cluster's read-only connection
(:meth:`glia.clustermesh.remote.RemoteCluster.list_policies`): no peer is
asked to trace. A side whose cluster cannot be read is not guessed: 503 with
code 11 naming the cluster and the side. The routes answer their documented
errors on any application that mounts them (:func:`_errors`), not only on
:class:`glia.agent.api.ApiServer`'s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from glia.agent.api_http import (
    CODE_INVALID,
    CODE_TRY_AGAIN,
    ApiError,
    error_response,
    read_json_object,
)
from glia.kvstore.client import KVClient
from glia.kvstore.errors import KVStoreError
from glia.model.identity import MIN_LOCAL
from glia.policy import store as policy_store
from glia.policy import trace
from glia.policy.model import Policy
from glia.policy.peers import Peer
from glia.policy.view import policy_view

if TYPE_CHECKING:
    from glia.agent.daemon import Agent
    from glia.clustermesh.mesh import ClusterMesh


def add_routes(app: web.Application, agent: Agent) -> None:
    """Mount ``/v1/policy`` and ``/v1/policy/trace`` on the agent's API application."""

    def config_kv() -> KVClient:
        if agent.cfg.config_etcd is None:
            raise ApiError(
                503,
                CODE_INVALID,
                "this agent cannot read its cluster's policies: its config has no config_etcd "
                "(the etcd user of the CLI path, see docs/kvstore.md)",
            )
        if agent.config_kv is None:
            raise ApiError(503, CODE_TRY_AGAIN, "glia agent is not connected to the kvstore yet")
        return agent.config_kv

    def identities() -> trace.Identities:
        cache = agent.identities
        if cache is None:
            return {}
        return {cluster: table.by_id for cluster, table in cache.tables.items()}

    def mesh() -> ClusterMesh | None:
        # getattr: an agent without clustermesh (and the API tests' stand-in) may lack it.
        m: ClusterMesh | None = getattr(agent, "mesh", None)
        return m

    def clusters() -> list[str]:
        mesh_ = mesh()
        return [agent.cfg.cluster, *(mesh_.remotes if mesh_ is not None else ())]

    async def read(cluster: str) -> policy_store.PolicyListing:
        if cluster == agent.cfg.cluster:
            return await policy_store.read_policies(config_kv())
        mesh_ = mesh()
        remote = mesh_.remotes.get(cluster) if mesh_ is not None else None
        if remote is None:
            raise KVStoreError(f"cluster {cluster} is not in this agent's mesh any more")
        return await remote.list_policies()

    async def post_trace(request: web.Request) -> web.Response:
        body = await read_json_object(request)
        local = agent.cfg.cluster
        try:
            req = trace.parse_request(body)
            known, idents = clusters(), identities()
            src = trace.resolve_end(req.src, _field(body, "src"), local, known, idents)
            dst = trace.resolve_end(req.dst, _field(body, "dst"), local, known, idents)
        except trace.TraceError as e:
            raise ApiError(400, CODE_INVALID, str(e)) from None
        policies: dict[str, list[Policy]] = {}
        warnings: list[str] = []
        for cluster in trace.clusters_to_read(src, dst):
            try:
                listing = await read(cluster)
            except ApiError as e:
                raise ApiError(e.status, e.code, _unjudged(cluster, src, dst, e.msg)) from None
            except KVStoreError as e:
                raise ApiError(503, CODE_TRY_AGAIN, _unjudged(cluster, src, dst, str(e))) from None
            policies[cluster] = listing.policies
            warnings += [f"cluster {cluster}: skipped invalid record {s}" for s in listing.skipped]
        return web.json_response(trace.answer(src, dst, req.proto, req.dport, policies, warnings))

    async def get_policy(request: web.Request) -> web.Response:
        ns = request.query.get("namespace") or None
        name = request.query.get("name") or None
        for what, value in (("namespace", ns), ("name", name)):
            if value is not None and ("/" in value or not value.strip()):
                raise ApiError(400, CODE_INVALID, f"invalid {what} {value!r}")
        if name is not None:
            ns = ns or trace.DEFAULT_NAMESPACE
        listing = await policy_store.read_policies(config_kv(), ns)
        eps = agent.endpoints.all() if agent.endpoints is not None else []
        labels = [e.labels for e in eps if e.identity >= MIN_LOCAL]
        view = policy_view(listing, agent.cfg.cluster, labels)
        if name is not None:
            view["policies"] = [
                p for p in view["policies"] if p.get("metadata", {}).get("name") == name
            ]
        return web.json_response(view)

    r = app.router
    r.add_get("/v1/policy", _errors(get_policy), allow_head=False)
    r.add_post("/v1/policy/trace", _errors(post_trace))


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _errors(fn: Handler) -> Handler:
    """Expected failures as the API's error body (docs/agent-api.md, "Errors")."""

    async def handler(request: web.Request) -> web.Response:
        try:
            return await fn(request)
        except ApiError as e:
            return e.response()
        except KVStoreError as e:
            return error_response(503, CODE_TRY_AGAIN, f"kvstore: {e}")

    return handler


def _field(body: dict[str, Any], end: str) -> str:
    """How the request named an end, for messages: ``src`` or ``src_identity``."""
    return f"{end}_identity" if body.get(f"{end}_identity") is not None else end


def _unjudged(cluster: str, src: Peer, dst: Peer, why: str) -> str:
    sides = " and ".join(trace.sides_judged_by(cluster, src, dst))
    return f"cannot judge the {sides}: the policies of cluster {cluster} cannot be read: {why}"
