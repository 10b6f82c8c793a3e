"""``GET /v1/monitor``: the node's datapath events as a stream of JSON lines (NDJSON).

Mounted on the agent's API by :class:`glia.agent.api.ApiServer`; read by
``glia monitor`` (:meth:`glia.agent.client.AgentClient.monitor`). The query's
``type`` values (``drop``, ``policy-verdict``, ``trace``; repeated or
comma-separated; none means all) pick the kinds. The first line says what is
monitored, then one line per event as :func:`glia.agent.monitor.event_dict`
makes it, ``{"type": "lost", "count": n}`` where a slow reader lost events,
and ``{"type": "end", "reason": ...}`` when the agent ends the stream. Lines
are written as events come (docs/monitor.md).

An HTTP/1.0 request gets the body unframed until the agent closes it; an
HTTP/1.1 one gets it chunked (aiohttp decides by the request's version).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from glia.agent.api_http import CODE_INVALID, CODE_NOT_READY, ApiError
from glia.agent.monitor import parse_types
from glia.datapath.errors import DatapathError

if TYPE_CHECKING:
    from glia.agent.daemon import Agent

NDJSON = "application/x-ndjson"
# How often a stream with no events checks that its client is still there:
# a client that left frees its subscription (and the datapath flags) this soon.
IDLE_CHECK = 1.0


def add_routes(app: web.Application, agent: Agent) -> None:
    app.router.add_get("/v1/monitor", _handler(agent), allow_head=False)

    async def _ending(_app: web.Application) -> None:
        # Before the server waits for open requests: streams end now, not at its timeout.
        monitor = getattr(agent, "monitor", None)
        if monitor is not None:
            monitor.close_all("agent stopping")

    app.on_shutdown.append(_ending)


def _line(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode() + b"\n"


def _handler(agent: Agent) -> Any:
    async def monitor(request: web.Request) -> web.StreamResponse:
        try:
            types = parse_types(request.query.getall("type", []))
        except ValueError as e:
            raise ApiError(400, CODE_INVALID, f"query parameter type: {e}") from None
        mon = getattr(agent, "monitor", None)
        if mon is None or not mon.running:
            raise ApiError(503, CODE_NOT_READY, "the datapath event monitor is not running yet")
        try:
            sub = await mon.subscribe(types)
        except DatapathError as e:
            raise ApiError(503, CODE_NOT_READY, f"the datapath event monitor: {e}") from None
        resp = web.StreamResponse(headers={"Content-Type": NDJSON})
        try:
            await resp.prepare(request)
            kinds = sorted(t.label for t in types)
            node = f"{agent.cfg.cluster}/{agent.cfg.node}"
            await resp.write(_line({"type": "start", "node": node, "types": kinds}))
            while True:
                item = await sub.next(timeout=IDLE_CHECK)
                if item is None:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break  # the client left
                    continue
                await resp.write(_line(item))
                if item["type"] == "end":
                    break
        except ConnectionError:
            pass  # the client left while we wrote
        finally:
            mon.unsubscribe(sub)
        return resp

    return monitor
