"""Long-running lab processes (agents, operators, the supervisor): start detached, check, stop.

Called by :mod:`glia.lab.daemons`. A process is started in its own session with its
output in a log file the lab names, so it outlives the ``glia lab up`` command
and a Ctrl-C in that terminal. It is remembered as a :class:`ProcessRecord`
(in ``state.json``); before signalling a recorded PID the lab checks that
``/proc/<pid>/cmdline`` still holds the record's token (the config file path),
so a recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from glia.lab import netns

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
EXEC_WINDOW = 0.5  # seconds an empty command line may last before it counts (see cmdline)
_POLL = 0.05
_EXEC_POLL = 0.002
_PF_KTHREAD = 0x00200000  # task flag of kernel threads (include/linux/sched.h)


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    name: str  # "c1-n1-agent", "c1-operator"
    pid: int
    argv: list[str]
    log: str
    token: str  # must appear in /proc/<pid>/cmdline for the PID to still be this process
    netns: str | None = None
    started: float = field(default=0.0)
    # Stopped on purpose (``Lab.stop_*``, ``glia lab restart``): the supervisor
    # leaves it down until something starts it again.
    stopped: bool = False


class ProcessError(RuntimeError):
    """A lab process could not be started."""


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    token: str,
    netns_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start ``argv`` (inside ``netns_name`` if given) detached, output appended to ``log``."""
    full = netns.nsenter_argv(netns_name, argv) if netns_name else list(argv)
    if token not in " ".join(full):
        raise ProcessError(f"{name}: token {token!r} does not occur in its command line")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%F %T')} starting: {' '.join(full)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=dict(env) if env is not None else None,
            )
        except OSError as e:
            raise ProcessError(f"{name}: cannot start {full[0]}: {e}") from None
    return ProcessRecord(
        name=name,
        pid=proc.pid,
        argv=full,
        log=str(log),
        token=token,
        netns=netns_name,
        started=time.time(),
    )


def cmdline(pid: int) -> str | None:
    """The command line of ``pid`` joined by spaces, None if gone or a zombie.

    A process in the middle of ``execve`` (``nsenter`` becoming the agent) shows
    an empty command line for a few milliseconds (up to 20 ms seen here): the
    new program's arguments are not in place yet. An empty one is read again
    for up to :data:`EXEC_WINDOW` seconds, so a daemon starting is never taken
    for a dead one; a kernel thread's is empty for good and returned at once.
    """
    deadline = time.monotonic() + EXEC_WINDOW
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            return None
        # The state letter follows the ")" closing the command name; flags are 7th.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            _reap(pid)
            return None
        if raw or int(fields[6]) & _PF_KTHREAD or time.monotonic() >= deadline:
            return raw.replace(b"\0", b" ").decode(errors="replace").strip()
        time.sleep(_EXEC_POLL)


def alive(rec: ProcessRecord) -> bool:
    """Whether the record's process runs (a SIGSTOPped one counts: it is paused, not dead)."""
    line = cmdline(rec.pid)
    return line is not None and rec.token in line


def paused(rec: ProcessRecord) -> bool:
    """Whether the record's process is alive and stopped by a signal (SIGSTOP, a tracer)."""
    try:
        stat = Path(f"/proc/{rec.pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rfind(")") + 2 :].startswith(("T", "t")) and alive(rec)


def stop(records: Iterable[ProcessRecord], timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM every record still alive, SIGKILL what remains after ``timeout``.

    Returns the names of the processes that were signalled.
    """
    live = [r for r in records if alive(r)]
    kill_pids({r.pid: r.token for r in live}, timeout)
    return [r.name for r in live]


def kill(rec: ProcessRecord, timeout: float = STOP_TIMEOUT) -> bool:
    """SIGKILL ``rec`` at once, as a crash would (no clean-up runs); False if not alive."""
    if not alive(rec):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while alive(rec):
        if time.monotonic() >= deadline:
            raise ProcessError(f"{rec.name} (pid {rec.pid}) survived SIGKILL for {timeout} s")
        time.sleep(_POLL)
    return True


def kill_pids(pids: Mapping[int, str | None], timeout: float = STOP_TIMEOUT) -> None:
    """Terminate PIDs, each only while its cmdline still holds its token (None: no check)."""

    def still(pid: int, token: str | None) -> bool:
        line = cmdline(pid)
        return line is not None and (token is None or token in line)

    pending = {p: t for p, t in pids.items() if p != os.getpid()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, token in list(pending.items()):
            if still(pid, token):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            pending = {p: t for p, t in pending.items() if still(p, t)}
            if pending:
                time.sleep(_POLL)
        if not pending:
            return
    if pending:
        raise ProcessError(f"processes {sorted(pending)} survived SIGKILL for {timeout} s")


def own_lineage() -> set[int]:
    """This process and its ancestors: never to be killed, even if inside a lab namespace."""
    pids: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            break
        pid = int(stat[stat.rfind(")") + 2 :].split()[1])
    return pids


def log_tail(path: str | Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def _reap(pid: int) -> None:
    # A process this one started and that died stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
