"""The health of the agent's parts, as ``glia status`` shows it.

Used by :class:`glia.agent.daemon.Agent`, which holds one :class:`Subsystem`
per part (kvstore, datapath, node, endpoints, ipcache, services, policy) and
sets each from that part's own status.
"""

from __future__ import annotations

from typing import Any


class Subsystem:
    """Health of one part of the agent, as ``glia status`` shows it.

    ``ok`` is False when the part does not do its job (the agent is then not
    healthy); ``degraded`` when it does, but refuses some of its input (records
    that failed validation: the agent protects itself, a person should look).
    """

    def __init__(self) -> None:
        self.ok = False
        self.degraded = False
        self.msg = "starting"

    def set(self, ok: bool, msg: str, *, degraded: bool = False) -> None:
        self.ok, self.msg, self.degraded = ok, msg, degraded

    @property
    def state(self) -> str:
        return "failed" if not self.ok else "degraded" if self.degraded else "ok"


def refused(st: dict[str, Any]) -> str:
    """What a subsystem refused, for its status line ("" when nothing)."""
    out = []
    if st.get("rejected"):
        last = st.get("last_rejected") or {}
        out.append(
            f"degraded: {st['rejected']} record(s) rejected, last {last.get('key')}: "
            f"{last.get('reason')}"
        )
    if st.get("map_errors"):
        out.append(f"{st['map_errors']} map write(s) failed, last {st.get('last_map_error')}")
    return "; ".join(out)
