"""The agent's /metrics over TCP, on loopback of a network namespace of the test's own.

The datapath is loaded into a private pin directory (as in
test_monitor_datapath.py) and counts two packets run through
``from_endpoint`` with BPF_PROG_TEST_RUN: one forwarded to a local endpoint,
one dropped. Then the agent process's own wiring
(:func:`glia.agent.process._serve_metrics` with ``prometheus_listen``) serves
the metrics of a real :class:`~glia.agent.api.ApiServer`, and a scrape over TCP
inside the namespace sees the map's counters, named as ``glia bpf metrics``
names them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import netns_util as nu
import pytest
from prometheus_client.parser import text_string_to_metric_families
from two_pods import NODE_IP, VXLAN_PORT, A, B, from_a, two_pod_datapath

from glia.agent.api import ApiServer
from glia.agent.config import AgentConfig
from glia.agent.process import _serve_metrics
from glia.agent.subsystems import Subsystem
from glia.datapath.loader import Datapath
from glia.datapath.packets import udp
from glia.datapath.testrun import run_program
from glia.metrics.http import MetricsServer

pytestmark = pytest.mark.root

LISTEN = "127.0.0.1:9962"


@pytest.fixture
def datapath() -> Iterator[tuple[Datapath, str]]:
    with two_pod_datapath("metrics") as got:
        yield got


class Agent:
    """What the metrics read of :class:`glia.agent.daemon.Agent`: config, datapath, health."""

    def __init__(self, dp: Datapath, executor: ThreadPoolExecutor) -> None:
        self.cfg = AgentConfig("c1", 1, "n1", NODE_IP, prometheus_listen=LISTEN)
        self.ready = asyncio.Event()
        self.datapath = dp
        ok = Subsystem()
        ok.set(True, "programs loaded")
        self.status = {"datapath": ok}
        self._executor = executor

    async def run_dp(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)


async def _scrape(host: str, port: int) -> tuple[str, str]:
    """(status line and headers, body) of GET /metrics over TCP."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return head, body


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_a_scrape_over_tcp_shows_the_datapath_counters(datapath: tuple[Datapath, str]) -> None:
    dp, ns = datapath
    for packet in (from_a(B[0], udp(40000, 53)), from_a(NODE_IP, udp(40000, VXLAN_PORT))):
        nu.call_in(ns, run_program, dp.prog_fd("from_endpoint"), packet, ingress_ifindex=A[1])
    rows = dp.metrics.read()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="datapath")
    tmp = tempfile.mkdtemp(prefix="glia-met-")

    async def body() -> tuple[str, str]:
        agent = Agent(dp, executor)
        api = ApiServer(agent, os.path.join(tmp, "agent.sock"))  # type: ignore[arg-type]
        bad = await _serve_metrics(AgentConfig("c1", 1, "n1", NODE_IP, prometheus_listen="x"), api)
        assert isinstance(bad, str) and "prometheus_listen 'x'" in bad
        server = await _serve_metrics(agent.cfg, api)
        assert isinstance(server, MetricsServer) and server.address == ("127.0.0.1", 9962)
        try:
            return await _scrape("127.0.0.1", 9962)
        finally:
            await server.stop()

    try:
        head, text = nu.call_in(ns, lambda: asyncio.run(body()))
    finally:
        executor.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert head.split()[1] == "200"
    assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    got = _samples(text)
    assert {r.reason.name for r in rows} >= {"FORWARDED", "DROP_OVERLAY_PORT"}
    for r in rows:  # exactly what `glia bpf metrics` reads from the map
        labels = (("direction", r.direction), ("reason", r.reason.name))
        assert got[("glia_datapath_packets_total", labels)] == r.packets
        assert got[("glia_datapath_bytes_total", labels)] == r.bytes
    assert sum(v for (n, _), v in got.items() if n == "glia_datapath_packets_total") == sum(
        r.packets for r in rows
    )
    assert got[("glia_subsystem_status", (("state", "ok"), ("subsystem", "datapath")))] == 1
