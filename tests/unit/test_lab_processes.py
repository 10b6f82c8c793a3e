"""Recognising the lab's processes by PID and token (glia.lab.processes), with real ones.

The lab's daemons start as ``nsenter ... glia agent``: nsenter execs the agent,
and for a few milliseconds in between the process's command line reads empty.
Before ``cmdline`` looked again, a daemon caught in that window was taken for
dead ("exited") by whoever polled it first; nearly every start showed the window.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from glia.lab import processes


def _record(proc: subprocess.Popen[bytes], token: str) -> processes.ProcessRecord:
    return processes.ProcessRecord("t", proc.pid, [], log="/dev/null", token=token)


def test_a_process_between_two_programs_is_alive() -> None:
    token = f"{os.getpid()}.{time.monotonic_ns()}"
    script = f"import time; time.sleep(0.1)  # {token}"
    for _ in range(10):
        # env execs Python, as nsenter execs the agent.
        proc = subprocess.Popen(["env", sys.executable, "-c", script])
        try:
            seen = [processes.alive(_record(proc, "env")) or processes.alive(_record(proc, token))
                    for _ in range(20)]  # fmt: skip
            assert all(seen), seen
        finally:
            proc.wait()


def test_gone_zombie_and_other_token_are_not_alive() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert processes.alive(_record(proc, "sleep 30"))
        assert not processes.alive(_record(proc, "not-its-token"))
    finally:
        proc.kill()
    # A zombie (not yet waited for) is dead, and reaped by the look.
    deadline = time.monotonic() + 5
    while Path(f"/proc/{proc.pid}/stat").exists() and time.monotonic() < deadline:
        if not processes.alive(_record(proc, "sleep 30")):
            break
        time.sleep(0.01)
    assert not processes.alive(_record(proc, "sleep 30"))


def test_a_kernel_thread_is_answered_at_once() -> None:
    kthreadd = 2  # PID 2 is kthreadd on Linux (in the root PID namespace)
    started = time.monotonic()
    line = processes.cmdline(kthreadd)
    assert line in ("", None)
    assert time.monotonic() - started < processes.EXEC_WINDOW / 2
