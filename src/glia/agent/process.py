"""The agent process: its API socket, signals, start and stop around :class:`Agent`.

``glia agent --config FILE`` calls :func:`run`. The API socket is up before the
agent starts (so ``glia status`` can tell what it waits for); SIGTERM and
SIGINT stop it, keeping the datapath state (maps, programs, endpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from glia.agent.api import ApiServer
from glia.agent.config import AgentConfig
from glia.agent.daemon import Agent
from glia.cni.deletion_queue import DeletionQueue
from glia.kvstore.errors import KVStoreError
from glia.metrics.http import MetricsServer

log = logging.getLogger("glia.agent.daemon")


async def serve(cfg: AgentConfig) -> None:
    agent = Agent(cfg)
    api = ApiServer(agent, cfg.socket)
    # DELs the CNI plugin queued while no agent answered (see
    # glia.cni.deletion_queue): holding the queue lock while the socket appears
    # means a plugin either finds the socket or has queued before it existed.
    queue = DeletionQueue(str(Path(cfg.socket).parent / "cni-delete-queue"))
    with queue.lock(exclusive=True, timeout=10):
        await api.start()
    metrics = await _serve_metrics(cfg, api)
    if isinstance(metrics, str):
        await api.stop()
        raise SystemExit(metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starter = asyncio.create_task(agent.start(), name="agent-start")
    done, _ = await asyncio.wait(
        {starter, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if starter in done and starter.exception() is not None:
        exc = starter.exception()
        log.error("agent failed to start: %s", exc)
        await _stop(metrics)
        await api.stop()
        await agent.stop()
        raise SystemExit(_start_error(exc))
    await agent.replay_queued_deletes(queue)
    await stop.wait()
    log.info("agent stopping (state is kept: maps, programs and endpoints stay)")
    starter.cancel()
    with contextlib.suppress(BaseException):
        await starter
    await _stop(metrics)
    await api.stop()
    await agent.stop()


async def _serve_metrics(cfg: AgentConfig, api: ApiServer) -> MetricsServer | str | None:
    """The /metrics server of ``prometheus_listen`` (None: off), or why it cannot listen."""
    if not cfg.prometheus_listen:
        return None
    server = MetricsServer(api.metrics.render)
    try:
        await server.start(cfg.prometheus_listen)
    except (ValueError, OSError) as e:
        return f"glia agent: prometheus_listen: {e}"
    log.info("serving Prometheus metrics on http://%s/metrics", cfg.prometheus_listen)
    return server


async def _stop(server: MetricsServer | None) -> None:
    if server is not None:
        await server.stop()


def _start_error(exc: BaseException | None) -> str:
    if isinstance(exc, KVStoreError):
        return f"glia agent: kvstore: {exc}"
    return f"glia agent: {type(exc).__name__}: {exc}"


def run(cfg: AgentConfig) -> None:
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.umask(0o077)
    asyncio.run(serve(cfg))
