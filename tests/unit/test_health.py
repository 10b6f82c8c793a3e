"""Backend health: threshold logic and the prober's reporting."""

from __future__ import annotations

import asyncio
import socket

from glia.model.service import HealthCheck, ProbeType
from glia.service.health import HealthProber, ProbeState, ProbeTarget, probe_http, probe_tcp


def test_thresholds() -> None:
    check = HealthCheck(failure_threshold=2, success_threshold=2)
    s = ProbeState()
    assert not s.observe(True, check, 1.0)  # one success is not enough
    assert s.observe(True, check, 2.0) and s.ready and s.since == 2.0
    assert not s.observe(False, check, 3.0, "refused")  # one failure is not enough
    assert s.ready
    assert s.observe(False, check, 4.0, "refused") and not s.ready
    assert s.detail == "refused"
    assert not s.observe(True, check, 5.0)  # success streak restarts
    assert s.observe(True, check, 6.0) and s.ready


def test_undecided_until_threshold() -> None:
    check = HealthCheck(failure_threshold=3, success_threshold=1)
    s = ProbeState()
    s.observe(False, check, 1.0)
    assert not s.decided and not s.ready


async def test_prober_reports_changes() -> None:
    healthy = {"ok": True}
    changes = asyncio.Event()

    async def fake_probe(t: ProbeTarget) -> tuple[bool, str]:
        return healthy["ok"], "" if healthy["ok"] else "refused"

    async def on_change() -> None:
        changes.set()

    p = HealthProber(on_change, probe=fake_probe)
    check = HealthCheck(interval=0.01, failure_threshold=2, success_threshold=1)
    t = ProbeTarget("default/web", "10.1.0.5", 80, check)
    p.set_targets({t, ProbeTarget("default/x", "10.1.0.6", 80, HealthCheck(type=ProbeType.NONE))})
    await asyncio.wait_for(changes.wait(), 2)
    assert [(r.ip, r.ready) for r in p.results()] == [("10.1.0.5", True)]
    changes.clear()
    healthy["ok"] = False
    await asyncio.wait_for(changes.wait(), 2)
    assert [(r.ready, r.detail) for r in p.results()] == [(False, "refused")]
    assert p.set_targets(set())  # dropping a target changes the results
    assert p.results() == []
    await p.stop()


async def test_real_probes_on_loopback() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    ok, _ = await probe_tcp("127.0.0.1", port, 1.0)
    assert ok
    srv.close()
    ok, detail = await probe_tcp("127.0.0.1", port, 1.0)
    assert not ok and "refused" in detail.lower()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = await r.readline()
        status = b"200 OK" if b"/healthz" in line else b"503 Unavailable"
        w.write(b"HTTP/1.0 " + status + b"\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    hport = server.sockets[0].getsockname()[1]
    assert (await probe_http("127.0.0.1", hport, "/healthz", 1.0))[0]
    ok, detail = await probe_http("127.0.0.1", hport, "/other", 1.0)
    assert not ok and "503" in detail
    server.close()
    await server.wait_closed()
