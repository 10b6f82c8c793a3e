"""Health probes of the service backends a node hosts.

The agent probes each of its local endpoints that backs a Service: a TCP
connect to the backend's target port by default, or an HTTP GET when the
Service asks for it (``service.glia.io/health-check: http``). A UDP target port
has no handshake to probe (and ICMP port-unreachable answers are rate-limited
per peer, so "no refusal" would flap): its probe succeeds without traffic, so
a UDP backend is ready while its endpoint backs the Service. A backend becomes
ready after ``success_threshold`` consecutive successes and not ready after
``failure_threshold`` consecutive failures; until its first verdict it is not
ready, as in Kubernetes. Results go to the kvstore (see
:class:`glia.model.service.BackendHealth`), from where the operator withdraws
or restores the backend in every node's maps.

:class:`ProbeState` is the pure threshold logic; :class:`HealthProber` runs one
task per target and reports changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from glia.model.service import HealthCheck, ProbeResult, ProbeType, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    service: str  # "<namespace>/<name>"
    ip: str
    port: int
    check: HealthCheck
    protocol: Protocol = Protocol.TCP


@dataclass(slots=True)
class ProbeState:
    """Consecutive-result thresholds (pure)."""

    ready: bool = False
    decided: bool = False  # False until the first threshold is reached
    successes: int = 0
    failures: int = 0
    since: float = 0.0
    detail: str = ""

    def observe(self, ok: bool, check: HealthCheck, now: float, detail: str = "") -> bool:
        """Record one probe result; True if readiness changed."""
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
            self.detail = detail
        before = (self.ready, self.decided)
        if ok and self.successes >= check.success_threshold:
            self.ready, self.decided = True, True
        elif not ok and self.failures >= check.failure_threshold:
            self.ready, self.decided = False, True
        if (self.ready, self.decided) != before:
            self.since = now
            return True
        return False


async def probe_tcp(ip: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except TimeoutError:
        return False, f"tcp connect to {ip}:{port} timed out after {timeout}s"
    except OSError as e:
        return False, f"tcp connect to {ip}:{port}: {_oserror(e)}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def probe_http(ip: str, port: int, path: str, timeout: float) -> tuple[bool, str]:
    async def _get() -> tuple[bool, str]:
        reader, writer = await asyncio.open_connection(ip, port)
        try:
            request = f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: glia-health\r\n\r\n"
            writer.write(request.encode())
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        parts = line.decode(errors="replace").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"http GET {path}: malformed status line {line[:60]!r}"
        status = int(parts[1])
        if 200 <= status < 400:
            return True, ""
        return False, f"http GET {path}: status {status}"

    try:
        return await asyncio.wait_for(_get(), timeout)
    except TimeoutError:
        return False, f"http GET {ip}:{port}{path} timed out after {timeout}s"
    except OSError as e:
        return False, f"http GET {ip}:{port}{path}: {_oserror(e)}"


def _oserror(e: OSError) -> str:
    # asyncio wraps connect errors as "Connect call failed (...)": name the errno.
    return os.strerror(e.errno) if e.errno else str(e)


async def probe_once(t: ProbeTarget) -> tuple[bool, str]:
    if t.protocol is Protocol.UDP:
        return True, ""
    if t.check.type == ProbeType.HTTP:
        return await probe_http(t.ip, t.port, t.check.path, t.check.timeout)
    return await probe_tcp(t.ip, t.port, t.check.timeout)


Prober = Callable[[ProbeTarget], Awaitable[tuple[bool, str]]]


class HealthProber:
    """Runs one probe loop per target; calls ``on_change`` when readiness moves."""

    def __init__(
        self, on_change: Callable[[], Awaitable[None]], probe: Prober = probe_once
    ) -> None:
        self._on_change = on_change
        self._probe = probe
        self._tasks: dict[ProbeTarget, asyncio.Task[None]] = {}
        self._states: dict[ProbeTarget, ProbeState] = {}

    def set_targets(self, targets: set[ProbeTarget]) -> bool:
        """Probe exactly ``targets``; True if a target was dropped (results changed)."""
        dropped = False
        for t in list(self._tasks):
            if t not in targets:
                self._tasks.pop(t).cancel()
                self._states.pop(t, None)
                dropped = True
        for t in targets:
            if t not in self._tasks and t.check.type != ProbeType.NONE:
                self._states[t] = ProbeState()
                self._tasks[t] = asyncio.create_task(self._loop(t), name=f"probe-{t.ip}:{t.port}")
        return dropped

    def results(self) -> list[ProbeResult]:
        out = []
        for t, s in self._states.items():
            if s.decided:
                out.append(ProbeResult(t.service, t.ip, t.port, s.ready, s.since, s.detail))
        return sorted(out, key=lambda r: (r.service, r.ip, r.port))

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, t: ProbeTarget) -> None:
        while True:
            ok, detail = await self._probe(t)
            state = self._states.get(t)
            if state is None:
                return
            if state.observe(ok, t.check, time.time(), detail):
                log.info(
                    "backend %s:%d of %s is %s%s",
                    t.ip,
                    t.port,
                    t.service,
                    "ready" if state.ready else "not ready",
                    f" ({detail})" if detail and not state.ready else "",
                )
                try:
                    await self._on_change()
                except Exception as e:  # the next change retries the publish
                    log.warning("publishing health of %s failed: %s", t.service, e)
            await asyncio.sleep(t.check.interval)
