"""``GET /metrics`` over TCP for Prometheus, on the daemon's event loop.

Started by :func:`glia.agent.process.serve` and :func:`glia.operator.daemon.serve`
when their config sets ``prometheus_listen``. ``render`` is the daemon's
async exposition (it may read the datapath on the agent's datapath thread
first), so a scrape never blocks the loop on BPF syscalls.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

Render = Callable[[], Awaitable[bytes]]
PATH = "/metrics"
# The classic text format every Prometheus parses (generate_latest writes it; the
# library's "latest" 1.0.0 differs only for names outside [a-zA-Z0-9_:]).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def parse_listen(text: str) -> tuple[str, int]:
    """``"ADDR:PORT"`` -> (host, port); ``":PORT"`` listens on every address,
    ``"[::1]:PORT"`` on an IPv6 one. ValueError names what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"prometheus_listen {text!r}: expected ADDR:PORT, e.g. 127.0.0.1:9962")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class MetricsServer:
    """An aiohttp site of its own answering ``GET /metrics`` with ``render()``."""

    def __init__(self, render: Render) -> None:
        self._render = render
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None  # where it listens once started

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PATH, self._metrics)
        return app

    async def start(self, listen: str = "", sock: socket.socket | None = None) -> None:
        """Listen on ``listen`` (:func:`parse_listen`), or on ``sock``, a bound socket
        (tests make it in a network namespace of their own)."""
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(self._runner, sock)
        else:
            host, port = parse_listen(listen)
            site = web.TCPSite(self._runner, host or None, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        server = site._server  # aiohttp keeps the asyncio server here
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.address = sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
