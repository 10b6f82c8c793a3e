"""Health probes of the service backends a node hosts.

The agent probes each of its local endpoints that backs a Service: a TCP
connect to the backend's target port by default, or an HTTP GET when the
Service asks for it (``service.glia.io/health-check: http``). A UDP target port
has no handshake to probe (and ICMP port-unreachable answers are rate-limited
per peer, so "no refusal" would flap): its probe succeeds without traffic, so
a UDP backend is ready while its endpoint backs the Service. A backend becomes
ready after ``success_threshold`` consecutive successes and not ready after
``failure_threshold`` consecutive failures; until its first verdict it is not
ready, as in Kubernetes. One failure is decisive on its own: a refused
connection (nothing listens on the port; a timeout or an HTTP error still
needs the threshold, since a busy server or a lost packet cause those).
Besides its interval, a target is probed at once when the datapath signals
that its endpoint refused a connection (:meth:`HealthProber.poke`, fed by
:mod:`glia.datapath.signals`): a server that died is withdrawn within
milliseconds of the first refused client, not interval x threshold later.
Results go to the kvstore (see
:class:`glia.model.service.BackendHealth`), from where the operator withdraws
or restores the backend in every node's maps.

:class:`ProbeState` is the pure threshold logic; :class:`HealthProber` runs one
task per target and reports changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """One probe's result."""

    ok: bool
    detail: str = ""
    refused: bool = False  # the connection was refused: nothing listens (decisive)


# Poked probes of one target are at least this far apart (seconds): a pod
# refusing a flood of connections costs a few probes, not one per refusal.
MIN_PROBE_GAP = 0.02


@dataclass(slots=True)
class ProbeState:
    """Consecutive-result thresholds (pure)."""

    ready: bool = False
    decided: bool = False  # False until the first threshold is reached
    successes: int = 0
    failures: int = 0
    since: float = 0.0
    detail: str = ""

    def observe(
        self, ok: bool, check: HealthCheck, now: float, detail: str = "", decisive: bool = False
    ) -> bool:
        """Record one probe result; True if readiness changed.

        ``decisive``: a failure that needs no threshold (a refused connection).
        """
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures = max(self.failures + 1, check.failure_threshold if decisive else 0)
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


async def probe_tcp(ip: str, port: int, timeout: float) -> Outcome:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except TimeoutError:
        return Outcome(False, f"tcp connect to {ip}:{port} timed out after {timeout}s")
    except OSError as e:
        return Outcome(False, f"tcp connect to {ip}:{port}: {_oserror(e)}", _refused(e))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome(True)


async def probe_http(ip: str, port: int, path: str, timeout: float) -> Outcome:
    async def _get() -> Outcome:
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
            return Outcome(False, f"http GET {path}: malformed status line {line[:60]!r}")
        status = int(parts[1])
        if 200 <= status < 400:
            return Outcome(True)
        return Outcome(False, f"http GET {path}: status {status}")

    try:
        return await asyncio.wait_for(_get(), timeout)
    except TimeoutError:
        return Outcome(False, f"http GET {ip}:{port}{path} timed out after {timeout}s")
    except OSError as e:
        return Outcome(False, f"http GET {ip}:{port}{path}: {_oserror(e)}", _refused(e))


def _oserror(e: OSError) -> str:
    # asyncio wraps connect errors as "Connect call failed (...)": name the errno.
    return os.strerror(e.errno) if e.errno else str(e)


def _refused(e: OSError) -> bool:
    return isinstance(e, ConnectionRefusedError) or e.errno == errno.ECONNREFUSED


async def probe_once(t: ProbeTarget) -> Outcome:
    if t.protocol is Protocol.UDP:
        return Outcome(True)
    if t.check.type == ProbeType.HTTP:
        return await probe_http(t.ip, t.port, t.check.path, t.check.timeout)
    return await probe_tcp(t.ip, t.port, t.check.timeout)


Prober = Callable[[ProbeTarget], Awaitable[Outcome]]


class HealthProber:
    """Runs one probe loop per target; calls ``on_change`` when readiness moves."""

    def __init__(
        self, on_change: Callable[[], Awaitable[None]], probe: Prober = probe_once
    ) -> None:
        self._on_change = on_change
        self._probe = probe
        self._tasks: dict[ProbeTarget, asyncio.Task[None]] = {}
        self._states: dict[ProbeTarget, ProbeState] = {}
        self._wake: dict[ProbeTarget, asyncio.Event] = {}
        self.poked = 0  # probes run early because the datapath signalled a refusal

    def set_targets(self, targets: set[ProbeTarget]) -> bool:
        """Probe exactly ``targets``; True if a target was dropped (results changed)."""
        dropped = False
        for t in list(self._tasks):
            if t not in targets:
                self._tasks.pop(t).cancel()
                self._states.pop(t, None)
                self._wake.pop(t, None)
                dropped = True
        for t in targets:
            if t not in self._tasks and t.check.type != ProbeType.NONE:
                self._states[t] = ProbeState()
                self._wake[t] = asyncio.Event()
                self._tasks[t] = asyncio.create_task(self._loop(t), name=f"probe-{t.ip}:{t.port}")
        return dropped

    def poke(self, ip: str, port: int) -> int:
        """Probe the TCP targets at ``ip``:``port`` now (their endpoint refused a connection);
        how many there are."""
        n = 0
        for t, wake in self._wake.items():
            if t.ip == ip and t.port == port and t.protocol is Protocol.TCP:
                wake.set()
                n += 1
        return n

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
        wake = self._wake[t]
        while True:
            started = time.monotonic()
            wake.clear()
            out = await self._probe(t)
            state = self._states.get(t)
            if state is None:
                return
            ok, detail = out.ok, out.detail
            if state.observe(ok, t.check, time.time(), detail, decisive=out.refused):
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), t.check.interval)
                self.poked += 1
                gap = MIN_PROBE_GAP - (time.monotonic() - started)
                if gap > 0:
                    await asyncio.sleep(gap)
