"""The lab's supervisor: restarts a daemon (etcd, operator, agent) that dies, with backoff.

Run as ``glia lab supervise`` (a hidden command of :mod:`glia.cli.lab`), one
per lab, started by ``Lab.up`` (and by ``up`` of a lab that lost it) as a
detached process whose record sits in ``state.json`` beside the daemons';
``lab down`` ends it first, so it never restarts what ``down`` is stopping.

Why a process that polls, and not the daemons' parent waiting on them: the
daemons are started by whichever process runs ``lab up`` (a CLI that exits,
a test session) and outlive it, so no one process is every daemon's parent.
Every :data:`POLL` seconds it takes the state lock, reads the recorded
processes, and for each daemon asks :func:`glia.lab.supervision.step` what to
do (the rules and the backoff are there, without I/O); a restart goes through
``Lab.start_*`` (under the same lock, so it never races a ``glia lab`` command
or a test starting the same daemon), and the supervision records (restart
counts, when it was found dead, the next try) are saved back for
``glia lab status``. Every death and restart is a line in
``<labdir>/supervisor.log``, with the last lines of the daemon's own log.

What is not a crash: a daemon stopped on purpose (``Lab.stop_*``, marked in
its record before the signal) is left down; a SIGSTOPped one is alive. With
the first crash restarted 0.5 s after it is seen, a daemon that dies is
running again within about a second (:data:`POLL` + the base delay), well
inside the 5 s the end-to-end tests allow.

The supervisor exits by itself when the state file is gone or unreadable (the
lab was removed) or names another supervisor (the lab was rebuilt), and on
SIGTERM.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from glia.lab import processes, supervision
from glia.lab.errors import LabError
from glia.lab.lab import Lab
from glia.lab.supervision import DEFAULT_POLICY, Action, Daemon, Event, Kind, Policy, Watch

POLL = 0.25  # seconds between two looks at the lab's processes

Say = Callable[[str], None]


def run(
    lab_name: str,
    state_file: Path,
    stop: threading.Event,
    *,
    policy: Policy = DEFAULT_POLICY,
    say: Say | None = None,
) -> int:
    """Supervise until ``stop`` is set or the lab is gone; the process exit code."""
    out = say or _print
    try:
        lab = Lab.open(lab_name, state_file.parent)
    except Exception as e:  # a bad name or directory: nothing to supervise
        out(f"cannot open lab {lab_name!r} at {state_file.parent}: {e}")
        return 1
    me = os.getpid()
    out(
        f"supervising lab {lab.name!r} (pid {me}): polling every {POLL:g} s, restarts after "
        f"{policy.base:g} s doubling to {policy.cap:g} s, reset after {policy.reset_after:g} s up"
    )
    while not stop.is_set():
        try:
            if not poll(lab, me, policy, out):
                return 0
        except LabError as e:
            # The state file went bad or its lock stayed held: nothing safe to do.
            out(f"cannot read the lab's state ({e}); exiting")
            return 1
        except Exception:
            # A bug or a passing failure: the next poll tries again, rather than
            # leaving the lab unsupervised.
            out("unexpected error, polling on:\n" + traceback.format_exc().rstrip())
        stop.wait(POLL)
    out("stopping (signal)")
    return 0


def poll(lab: Lab, me: int, policy: Policy, say: Say) -> bool:
    """One look at every daemon, restarting the ones due; False when this supervisor
    must exit (the lab is gone, or another supervisor is recorded)."""
    with lab.locked():
        st = lab.state()
        if st is None:
            say(f"{lab.topo.state_file} is gone (lab removed); exiting")
            return False
        if st.supervisor is None or st.supervisor.pid != me:
            other = st.supervisor.pid if st.supervisor else None
            say(f"the lab's state names supervisor {other}, not this one ({me}); exiting")
            return False
        watches = dict(st.watch)
        # Whatever is recorded, an agent started by hand on a lab built without
        # agents included.
        for d in supervision.daemons(lab.topo):
            rec = st.processes.get(d.process)
            if rec is None:
                continue  # not started (yet): ``up`` may still be building the lab
            before = watches.get(d.process, Watch())
            now = time.time()
            s = supervision.step(
                before,
                alive=processes.alive(rec),
                stopped=rec.stopped,
                started=rec.started,
                now=now,
                policy=policy,
            )
            _log_event(d, rec, s.watch, s.event, now, say)
            if s.action is Action.RESTART:
                watches[d.process] = _restart(lab, d, s.watch, policy, say)
            else:
                watches[d.process] = s.watch
        if watches != st.watch:
            lab.record_watch(watches)
    return True


def _restart(lab: Lab, d: Daemon, w: Watch, policy: Policy, say: Say) -> Watch:
    try:
        rec = start(lab, d)
    except Exception as e:  # whatever stops this start, the next one is due after the backoff
        failed = supervision.restart_failed(w, time.time(), str(e), policy)
        wait = (failed.retry_at or time.time()) - time.time()
        say(f"{d.process}: restart failed: {e}; next try in {wait:.1f} s")
        return failed
    done = supervision.restarted(w, time.time())
    say(f"{d.process}: restarted, pid {rec.pid} (restart {done.restarts})")
    return done


def start(lab: Lab, d: Daemon) -> processes.ProcessRecord:
    """Start daemon ``d`` again without waiting for it (a crash loop is the backoff's job)."""
    if d.kind is Kind.ETCD:
        return lab.start_etcd(d.target, wait=False)
    if d.kind is Kind.OPERATOR:
        return lab.start_operator(d.target)
    return lab.start_agent(d.target, wait=False)


def _log_event(
    d: Daemon,
    rec: processes.ProcessRecord,
    w: Watch,
    event: Event | None,
    now: float,
    say: Say,
) -> None:
    if event is Event.DIED:
        wait = max(0.0, (w.retry_at or now) - now)
        tail = processes.log_tail(rec.log, 3).strip()
        say(
            f"{d.process} (pid {rec.pid}) died after {now - rec.started:.1f} s; "
            f"restarting in {wait:.1f} s"
            + (f"; last lines of {rec.log}:\n    " + tail.replace("\n", "\n    ") if tail else "")
        )
    elif event is Event.STARTED_ELSEWHERE:
        say(f"{d.process}: running again (pid {rec.pid}), started by someone else")
    elif event is Event.STABLE:
        say(f"{d.process}: up for {now - rec.started:.0f} s, backoff reset")


def _print(line: str) -> None:
    # stdout is the supervisor's log file (processes.spawn): one timestamped line each.
    print(f"{time.strftime('%F %T')} {line}", flush=True)
