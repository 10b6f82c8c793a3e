"""Waiting for the lab's agents to report healthy, failing fast when a daemon dies.

Called by :meth:`glia.lab.daemons.LabDaemons.wait_agents` (``Lab.up``, ``start_agent``).
Polls each agent's ``GET /v1/status`` over its unix socket until it says
``healthy``; says every few seconds which agents are still pending and why; if
an agent or operator process exits meanwhile, fails at once with the tail of
its log, and at the deadline with the tails of the slow agents' logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from glia.agent.client import AgentClient, AgentClientError
from glia.lab import processes
from glia.lab.errors import DaemonExited, LabError
from glia.lab.topology import NodeSpec

POLL = 0.2
REPORT_EVERY = 5.0
STATUS_TIMEOUT = 2.0


def wait_agents(
    nodes: Sequence[NodeSpec],
    daemons: Iterable[processes.ProcessRecord],
    note: Callable[[str], None],
    timeout: float,
) -> None:
    """Until every agent of ``nodes`` is healthy; ``daemons`` must stay alive meanwhile."""
    watched = list(daemons)
    pending = {n.ref: n for n in nodes}
    why: dict[str, str] = dict.fromkeys(pending, "no answer yet")
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + REPORT_EVERY
    while pending:
        for rec in watched:
            if not processes.alive(rec):
                raise DaemonExited(
                    rec.name,
                    f"{rec.name} (pid {rec.pid}) exited; last lines of {rec.log}:\n"
                    + indent(processes.log_tail(rec.log)),
                )
        for ref, n in list(pending.items()):
            try:
                st = AgentClient(str(n.socket), timeout=STATUS_TIMEOUT).status()
            except AgentClientError as e:
                why[ref] = str(e)
                continue
            if st.get("healthy") is True:
                del pending[ref]
                note(f"{ref}: agent healthy")
            else:
                why[ref] = unhealthy(st)
        if not pending:
            return
        now = time.monotonic()
        if now >= deadline:
            details = "\n".join(
                f"{ref}: {why[ref]}\n  last lines of {n.agent_log}:\n"
                + indent(processes.log_tail(n.agent_log))
                for ref, n in pending.items()
            )
            raise LabError(f"agents not healthy after {timeout:.0f} s:\n{details}")
        if now >= next_report:
            note("waiting for " + "; ".join(f"{ref} ({why[ref]})" for ref in pending))
            next_report = now + REPORT_EVERY
        time.sleep(POLL)


def unhealthy(status: Mapping[str, Any]) -> str:
    """Why an agent's ``/v1/status`` is not healthy: its failing subsystems."""
    subs = status.get("subsystems")
    if isinstance(subs, dict):
        bad = [
            f"{k}: {v.get('msg', '')}"
            for k, v in subs.items()
            if isinstance(v, dict) and not v.get("ok")
        ]
        if bad:
            return "unhealthy: " + ", ".join(bad)
    return "unhealthy"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
