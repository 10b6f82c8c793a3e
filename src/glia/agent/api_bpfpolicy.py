"""Agent API routes of enforced policy: ``GET /v1/policy/endpoints`` and ``GET /v1/bpf/policy``.

Mounted by :class:`glia.agent.api.ApiServer` through :func:`add_routes`; called
by ``glia bpf policy list`` (:mod:`glia.cli.bpfpolicy`). What each local
endpoint's identity has programmed (:class:`glia.agent.policy.PolicySync`),
and the policy map's rows of one endpoint read back from the kernel, with the
labels of each peer identity and the rules each entry's cookie stands for.
Errors (docs/agent-api.md): 400 code 7 without ``endpoint``, 404 code 7 for
an endpoint this node does not have, 503 code 50 before the datapath and
policy run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from glia.agent.api_http import CODE_INVALID, CODE_NOT_READY, ApiError
from glia.agent.policy import PolicySync
from glia.datapath.loader import Datapath
from glia.endpoint.manager import EndpointManager
from glia.model.endpoint import Endpoint
from glia.model.identity import MIN_LOCAL

T = TypeVar("T")


class PolicyAgent(Protocol):
    """What these routes need of the agent (:class:`glia.agent.daemon.Agent` has it)."""

    @property
    def endpoints(self) -> EndpointManager | None: ...

    @property
    def datapath(self) -> Datapath | None: ...

    @property
    def policy(self) -> PolicySync | None: ...

    async def run_dp(self, fn: Callable[[], T]) -> T: ...


def add_routes(app: web.Application, agent: PolicyAgent) -> None:
    """Mount the routes on the agent's API application."""

    def running() -> tuple[PolicySync, Datapath, EndpointManager]:
        if agent.policy is None or agent.datapath is None or agent.endpoints is None:
            raise ApiError(503, CODE_NOT_READY, "policy is not running yet")
        return agent.policy, agent.datapath, agent.endpoints

    async def policy_endpoints(request: web.Request) -> web.Response:
        policy, _dp, endpoints = running()
        return web.json_response([endpoint_view(policy, ep) for ep in endpoints.all()])

    async def bpf_policy(request: web.Request) -> web.Response:
        policy, dp, endpoints = running()
        wanted = request.query.get("endpoint", "").strip()
        if not wanted:
            raise ApiError(400, CODE_INVALID, "endpoint= is required (ID, IP or NAME)")
        eps = find_endpoints(endpoints.all(), wanted)
        if not eps:
            raise ApiError(404, CODE_INVALID, f"no endpoint {wanted!r} on this node")
        subject = eps[0].identity
        table = dp.policy

        def read() -> tuple[list[Any], tuple[bool, bool]]:
            return table.rows(subject), table.enforced().get(subject, (False, False))

        rows, (ingress, egress) = await agent.run_dp(read)
        peers: dict[int, list[str]] = {}
        out_rows = []
        for row in rows:
            d = row.to_dict()
            if row.peer not in peers:
                peers[row.peer] = policy.peer_labels(row.peer)
            d["peer_labels"] = peers[row.peer]
            d["rules"] = policy.rules_for_cookie(row.cookie)
            out_rows.append(d)
        return web.json_response(
            {
                "endpoints": [f"{e.namespace}/{e.name}" for e in eps],
                "identity": subject,
                "labels": policy.peer_labels(subject) if subject >= MIN_LOCAL else [],
                "ingress_enforced": ingress,
                "egress_enforced": egress,
                "rows": out_rows,
            }
        )

    app.router.add_get("/v1/policy/endpoints", policy_endpoints, allow_head=False)
    app.router.add_get("/v1/bpf/policy", bpf_policy, allow_head=False)


def endpoint_view(policy: PolicySync, ep: Endpoint) -> dict[str, Any]:
    """One local endpoint's enforced policy, as PolicySync programmed it."""
    programmed = policy.programmed.get(ep.identity)
    return {
        "endpoint": f"{ep.namespace}/{ep.name}",
        "container_id": ep.container_id,
        "ip": ep.ip,
        "identity": ep.identity,
        "labels": dict(ep.labels),
        "ingress_enforced": bool(programmed and programmed.ingress_enforced),
        "egress_enforced": bool(programmed and programmed.egress_enforced),
        "entries": len(programmed.entries) if programmed else 0,
    }


def find_endpoints(eps: list[Endpoint], wanted: str) -> list[Endpoint]:
    """The local endpoints ``wanted`` names, all of one identity (they share its entries).

    By IP, ``namespace/name``, a name unique on this node, a container id (or a
    prefix of 6 or more characters), or an identity number.
    """
    found: list[Endpoint] = []
    try:
        ip = str(ipaddress.IPv4Address(wanted))
        found = [e for e in eps if e.ip == ip]
    except ValueError:
        if "/" in wanted:
            ns, _, name = wanted.partition("/")
            found = [e for e in eps if (e.namespace, e.name) == (ns, name)]
        else:
            found = [e for e in eps if e.name == wanted]
            if not found and len(wanted) >= 6:
                found = [e for e in eps if e.container_id.startswith(wanted)]
            if not found and wanted.isdigit():
                found = [e for e in eps if e.identity == int(wanted)]
    identities = {e.identity for e in found}
    if len(identities) > 1:
        names = ", ".join(sorted(f"{e.namespace}/{e.name}" for e in found))
        raise ApiError(400, CODE_INVALID, f"{wanted!r} names several endpoints: {names}")
    if found:
        # Every endpoint sharing the identity shares the entries.
        found = [e for e in eps if e.identity == found[0].identity]
    return found
