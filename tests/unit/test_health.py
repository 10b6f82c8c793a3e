"""Backend health: threshold logic and the prober's reporting."""

from __future__ import annotations

import asyncio
import socket

from glia.model.service import HealthCheck, ProbeType
from glia.service.health import (
    HealthProber,
    Outcome,
    ProbeState,
    ProbeTarget,
    probe_http,
    probe_tcp,
)


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


def test_a_refusal_is_decisive_other_failures_need_the_threshold() -> None:
    check = HealthCheck(failure_threshold=3, success_threshold=1)
    s = ProbeState()
    assert s.observe(True, check, 1.0) and s.ready
    assert not s.observe(False, check, 2.0, "timed out")
    assert s.observe(False, check, 3.0, "refused", decisive=True) and not s.ready
    assert s.observe(True, check, 4.0) and s.ready
    fresh = ProbeState()  # also before the first verdict
    assert fresh.observe(False, check, 1.0, "refused", decisive=True)
    assert fresh.decided and not fresh.ready


def test_undecided_until_threshold() -> None:
    check = HealthCheck(failure_threshold=3, success_threshold=1)
    s = ProbeState()
    s.observe(False, check, 1.0)
    assert not s.decided and not s.ready


async def test_prober_reports_changes() -> None:
    healthy = {"ok": True}
    changes = asyncio.Event()

    async def fake_probe(t: ProbeTarget) -> Outcome:
        return Outcome(healthy["ok"], "" if healthy["ok"] else "refused")

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
    assert await probe_tcp("127.0.0.1", port, 1.0) == Outcome(True)
    srv.close()
    out = await probe_tcp("127.0.0.1", port, 1.0)
    assert not out.ok and out.refused and "refused" in out.detail.lower()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line = await r.readline()
        status = b"200 OK" if b"/healthz" in line else b"503 Unavailable"
        w.write(b"HTTP/1.0 " + status + b"\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    hport = server.sockets[0].getsockname()[1]
    assert (await probe_http("127.0.0.1", hport, "/healthz", 1.0)).ok
    out = await probe_http("127.0.0.1", hport, "/other", 1.0)
    assert not out.ok and not out.refused and "503" in out.detail  # needs the threshold
    server.close()
    await server.wait_closed()
    out = await probe_http("127.0.0.1", hport, "/healthz", 1.0)
    assert not out.ok and out.refused


async def test_a_poke_probes_at_once_and_a_refusal_withdraws_without_the_threshold() -> None:
    listening = {"ok": True}
    probed: list[float] = []
    changes = asyncio.Event()

    async def fake_probe(t: ProbeTarget) -> Outcome:
        probed.append(asyncio.get_running_loop().time())
        if listening["ok"]:
            return Outcome(True)
        return Outcome(False, "connection refused", refused=True)

    async def on_change() -> None:
        changes.set()

    p = HealthProber(on_change, probe=fake_probe)
    slow = HealthCheck(interval=30.0, failure_threshold=3, success_threshold=1)
    web = ProbeTarget("default/web", "10.1.0.5", 80, slow)
    other = ProbeTarget("default/web", "10.1.0.6", 80, slow)
    p.set_targets({web, other})
    await asyncio.wait_for(changes.wait(), 2)
    while len(probed) < 2:
        await asyncio.sleep(0.01)
    changes.clear()
    listening["ok"] = False
    assert p.poke("10.1.0.5", 81) == 0 and p.poke("10.1.0.9", 80) == 0
    assert p.poke("10.1.0.5", 80) == 1  # not 10.1.0.6, though the same port
    await asyncio.wait_for(changes.wait(), 2)  # not 30 s x 3 later
    assert {(r.ip, r.ready) for r in p.results()} == {("10.1.0.5", False), ("10.1.0.6", True)}
    assert p.poked == 1 and len(probed) == 3
    for _ in range(20):  # a flood of refusals: probes at most every MIN_PROBE_GAP
        p.poke("10.1.0.5", 80)
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert len(probed) <= 3 + 4, probed
    await p.stop()
