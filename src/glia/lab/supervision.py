"""When the lab's supervisor restarts a daemon: the pure part (no I/O, no clock).

Called by :mod:`glia.lab.supervisor` (the loop of ``glia lab supervise``) once
per poll and per daemon, by :mod:`glia.lab.status` to say what a daemon is
doing, and by unit tests. A daemon is one of the lab's long-running processes
(etcd and operator per cluster, agent per node); its supervision record
(:class:`Watch`, kept in ``state.json`` under its process name) outlives each
of its processes, so the restart count and the backoff survive restarts.

The rules, as :func:`step` applies them:

- a daemon stopped on purpose (its record says ``stopped``) is left alone,
  whatever it was doing; starting it again (``glia lab restart``, ``lab up``,
  ``Lab.start_*``) clears the flag;
- a live daemon needs nothing; once it has stayed up :attr:`Policy.reset_after`
  seconds, its run of failures is forgotten (the next crash waits the base
  delay again);
- a dead daemon (exited, crashed, killed by SIGKILL) is noted at once, and
  restarted after ``min(base * 2**failures, cap)`` seconds, where
  ``failures`` counts the restarts since it last stayed up a while: 0.5 s,
  1 s, 2 s ... 30 s with the defaults. A restart that fails to even spawn
  counts as a failure too.

A SIGSTOPped process is alive (the caller's liveness check says so): pausing
etcd to test lease expiry is not a crash.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from glia.lab.topology import Topology


@dataclass(frozen=True, slots=True)
class Policy:
    base: float = 0.5  # seconds before the first restart after a crash
    cap: float = 30.0  # the longest wait between restarts
    reset_after: float = 60.0  # seconds up after which the failures are forgotten

    def delay(self, failures: int) -> float:
        """Seconds to wait before restarting a daemon that failed ``failures`` times in a row."""
        if failures < 0:
            raise ValueError(f"failures must be >= 0, got {failures}")
        # 2**n overflows nothing here: the cap bounds it long before.
        return min(self.base * 2.0 ** min(failures, 32), self.cap)


DEFAULT_POLICY = Policy()


@dataclass(frozen=True, slots=True)
class Watch:
    """What the supervisor knows of one daemon, across its processes (wall-clock times)."""

    restarts: int = 0  # restarts done by the supervisor, ever
    failures: int = 0  # restarts since the daemon last stayed up ``reset_after`` seconds
    down_since: float | None = None  # when the supervisor found it dead (None: not dead)
    retry_at: float | None = None  # when it restarts it (None: no restart pending)
    last_exit: float | None = None  # when it last found it dead (kept after the restart)
    last_restart: float | None = None  # when it last restarted it
    last_error: str = ""  # why the last restart failed ("" when it did not)


class Action(enum.Enum):
    NONE = "none"
    RESTART = "restart"


class Event(enum.Enum):
    """Something worth a line in the supervisor's log."""

    DIED = "died"  # found dead; a restart is scheduled
    STABLE = "stable"  # stayed up long enough: backoff reset
    STARTED_ELSEWHERE = "started elsewhere"  # dead, then alive without the supervisor


@dataclass(frozen=True, slots=True)
class Step:
    watch: Watch
    action: Action = Action.NONE
    event: Event | None = None


def step(
    w: Watch,
    *,
    alive: bool,
    stopped: bool,
    started: float,
    now: float,
    policy: Policy = DEFAULT_POLICY,
) -> Step:
    """One poll of one daemon: its new record, whether to restart it now, what to log.

    ``started`` is when its current process was started, ``now`` the time of
    the poll (both wall clock, seconds).
    """
    if stopped:
        if w.down_since is None and w.retry_at is None:
            return Step(w)
        return Step(dataclasses.replace(w, down_since=None, retry_at=None))
    if alive:
        new, event = w, None
        if w.down_since is not None:
            new = dataclasses.replace(w, down_since=None, retry_at=None)
            event = Event.STARTED_ELSEWHERE
        if new.failures and now - started >= policy.reset_after:
            new, event = dataclasses.replace(new, failures=0), event or Event.STABLE
        return Step(new, event=event)
    if w.down_since is None:
        retry_at = now + policy.delay(w.failures)
        found = dataclasses.replace(w, down_since=now, retry_at=retry_at, last_exit=now)
        return Step(found, Action.RESTART if now >= retry_at else Action.NONE, Event.DIED)
    if w.retry_at is None or now >= w.retry_at:
        return Step(w, Action.RESTART)
    return Step(w)


def restarted(w: Watch, now: float) -> Watch:
    """The record after the supervisor started the daemon again."""
    return dataclasses.replace(
        w,
        restarts=w.restarts + 1,
        failures=w.failures + 1,
        down_since=None,
        retry_at=None,
        last_restart=now,
        last_error="",
    )


def restart_failed(w: Watch, now: float, error: str, policy: Policy = DEFAULT_POLICY) -> Watch:
    """The record after a restart that could not even start the process."""
    failures = w.failures + 1
    return dataclasses.replace(
        w, failures=failures, retry_at=now + policy.delay(failures), last_error=error
    )


class Kind(enum.StrEnum):
    ETCD = "etcd"
    OPERATOR = "operator"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Daemon:
    """One supervised daemon: its process name in ``state.json`` and what it runs for."""

    process: str  # "c1-etcd", "c1-operator", "c1-n1-agent"
    kind: Kind
    target: str  # the cluster ("c1") for etcd and operators, the node ("c1/n1") for agents

    def restart_command(self, lab: str, default_lab: str = "glia") -> str:
        """The ``glia lab restart`` command line that starts this daemon again."""
        extra = "" if lab == default_lab else f" --lab {lab}"
        flag = {Kind.ETCD: " --etcd", Kind.OPERATOR: " --operator", Kind.AGENT: ""}[self.kind]
        return f"glia lab restart {self.target}{flag}{extra}"


def daemons(topo: Topology, *, agents: bool = True) -> list[Daemon]:
    """The lab's daemons in start order: etcds, then operators, then agents
    (``agents=False``: the etcds alone, what ``up --no-agents`` runs)."""
    found = [Daemon(c.etcd_process, Kind.ETCD, c.name) for c in topo.clusters]
    if agents:
        found += [Daemon(c.operator_process, Kind.OPERATOR, c.name) for c in topo.clusters]
        found += [Daemon(n.agent_process, Kind.AGENT, n.ref) for n in topo.nodes]
    return found


def supervisor_argv(glia: str, topo: Topology) -> list[str]:
    """The command line of the lab's supervisor (``glia`` is the path of the CLI)."""
    return [glia, "lab", "supervise", "--lab", topo.name, "--state", str(topo.state_file)]


def supervisor_token(topo: Topology) -> str:
    """What the supervisor's ``/proc/PID/cmdline`` holds, and no other process's:
    proves a recorded PID is still it, and finds it when ``state.json`` is gone."""
    return f"lab supervise --lab {topo.name} --state {topo.state_file}"
