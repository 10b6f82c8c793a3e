"""Agent API routes for declared resources (docs/services.md).

Mounted by :class:`glia.agent.api.ApiServer` through :func:`add_routes`; called
by ``glia apply/delete -f`` and ``glia get services|policies``
(:class:`glia.agent.client.AgentClient`). A file's documents are ``v1 Service``
and ``cilium.io/v2 CiliumNetworkPolicy`` objects; the documents a client sends
are validated again here (:mod:`glia.declared`): a client is never trusted.
Policies are stored with this agent's cluster, in the same transaction as the
Services (:mod:`glia.policy.store`). Errors are ``{"error": {"code", "msg", "details"}}``
(:mod:`glia.agent.api_http`): HTTP 400 with code 7 for invalid input (``msg``
has one line per problem, each naming the field), 413 with code 7 for a body
over :data:`~glia.agent.api_http.MAX_REQUEST_BODY`, 503 with code 11 when the
kvstore is unavailable or the agent not yet connected, 409 with code 11 after
too many conflicting concurrent writes. The routes answer so on any
application that mounts them, not only on :class:`glia.agent.api.ApiServer`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from glia import declared
from glia.agent.api_http import (
    CODE_INVALID,
    CODE_TRY_AGAIN,
    ApiError,
    error_response,
    read_json_object,
)
from glia.kvstore.client import KVClient
from glia.kvstore.errors import KVStoreError
from glia.policy import manifest as policy_manifest
from glia.policy import store as policy_store
from glia.service import clusterip, manifest, store
from glia.service.manifest import ManifestError
from glia.service.manifest_render import to_manifest

if TYPE_CHECKING:
    from glia.agent.config import AgentConfig

log = logging.getLogger(__name__)

MAX_DOCUMENTS = 1000


class ConfigAgent(Protocol):
    """What these routes need of the agent (:class:`glia.agent.daemon.Agent` has it)."""

    @property
    def kv(self) -> KVClient | None: ...

    @property
    def config_kv(self) -> KVClient | None: ...

    @property
    def cfg(self) -> AgentConfig: ...


Route = Callable[[web.Request], Awaitable[Any]]


def _route(fn: Route) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Turns a handler's result into JSON and every expected failure into the error body."""

    async def handler(request: web.Request) -> web.Response:
        try:
            return web.json_response(await fn(request))
        except ApiError as e:
            return e.response()
        except ManifestError as e:
            return error_response(400, CODE_INVALID, str(e))
        except clusterip.ClusterIPExhausted as e:
            return error_response(400, CODE_INVALID, str(e))
        except store.StoreConflict as e:
            return error_response(409, CODE_TRY_AGAIN, str(e))
        except KVStoreError as e:
            return error_response(503, CODE_TRY_AGAIN, f"kvstore: {e}")

    return handler


def add_routes(app: web.Application, agent: ConfigAgent) -> None:
    """Mount ``/v1/config/*`` on the agent's API application."""

    def kv() -> KVClient:
        # Declared resources go through the CLI path's own etcd user, never
        # the node's (which may write only its node's records).
        if agent.cfg.config_etcd is None:
            raise ApiError(
                503,
                CODE_INVALID,
                "this agent serves no declared resources: its config has no config_etcd "
                "(the etcd user of the CLI path, see docs/kvstore.md)",
            )
        if agent.config_kv is None:
            raise ApiError(503, CODE_TRY_AGAIN, "glia agent is not connected to the kvstore yet")
        return agent.config_kv

    def service_cidr() -> str:
        cidr = agent.cfg.service_cidr
        if not cidr:
            raise ApiError(
                503, CODE_TRY_AGAIN, "this agent has no service_cidr configured: cannot apply"
            )
        return cidr

    async def body(request: web.Request) -> tuple[list[Any], str]:
        data = await read_json_object(request)
        docs = data.get("documents")
        if not isinstance(docs, list) or not docs:
            raise ApiError(400, CODE_INVALID, '"documents" must be a non-empty list of objects')
        if len(docs) > MAX_DOCUMENTS:
            raise ApiError(
                400, CODE_INVALID, f"{len(docs)} documents: at most {MAX_DOCUMENTS} per request"
            )
        source = data.get("source")
        return docs, source if isinstance(source, str) and source else "request"

    def in_file_order(numbers: list[int], results: list[Any]) -> dict[str, Any]:
        # The store answers Services first, then policies: back to the file's order.
        ordered = sorted(zip(numbers, results, strict=True), key=lambda nr: nr[0])
        return {"results": [asdict(r) for _, r in ordered]}

    async def apply(request: web.Request) -> Any:
        docs, source = await body(request)
        cidr = agent.cfg.service_cidr or None
        parsed = declared.parse(docs, source, service_cidr=cidr, cluster=agent.cfg.cluster)
        if parsed.services:
            cidr = service_cidr()
        results = await store.apply(
            kv(),
            parsed.services,
            cidr or "",
            max_txn_ops=agent.cfg.etcd_max_txn_ops,
            records=[policy_store.record(p) for p in parsed.policies],
        )
        numbers = [d.index for d in parsed.services] + [p.index for p in parsed.policies]
        return in_file_order(numbers, results)

    async def delete(request: web.Request) -> Any:
        docs, source = await body(request)
        refs = declared.parse_refs(docs, source)
        results = await store.delete(
            kv(),
            [r for _, r in refs.services],
            max_txn_ops=agent.cfg.etcd_max_txn_ops,
            records=[policy_store.ref_record(r) for _, r in refs.policies],
        )
        numbers = [n for n, _ in refs.services] + [n for n, _ in refs.policies]
        return in_file_order(numbers, results)

    def ns_and_name(request: web.Request) -> tuple[str | None, str | None]:
        ns = request.query.get("namespace") or None
        name = request.query.get("name") or None
        for what, value in (("namespace", ns), ("name", name)):
            if value is not None and ("/" in value or not value.strip()):
                raise ApiError(400, CODE_INVALID, f"invalid {what} {value!r}")
        return ns, name

    async def config_policies(request: web.Request) -> Any:
        ns, name = ns_and_name(request)
        if name is not None:
            ns = ns or policy_manifest.DEFAULT_NAMESPACE
            policy = await policy_store.get_policy(kv(), ns, name)
            policies = [policy] if policy is not None else []
        else:
            policies = await policy_store.list_policies(kv(), ns)
        return [policy_manifest.to_manifest(p) for p in policies]

    async def config_services(request: web.Request) -> Any:
        ns, name = ns_and_name(request)
        if name is not None:
            spec = await store.get_spec(kv(), ns or manifest.DEFAULT_NAMESPACE, name)
            specs = [spec] if spec is not None else []
        else:
            specs = await store.list_specs(kv(), ns)
        return [to_manifest(s) for s in specs]

    r = app.router
    r.add_post("/v1/config/apply", _route(apply))
    r.add_post("/v1/config/delete", _route(delete))
    r.add_get("/v1/config/services", _route(config_services), allow_head=False)
    r.add_get("/v1/config/policies", _route(config_policies), allow_head=False)
