"""The CNI verbs of glia-cni: forward a validated invocation to the agent's API.

Called by :mod:`glia.cni.main`. The plugin owns nothing: the agent creates the
interface, allocates the address and programs the datapath; this module only
maps the verbs to ``/v1/cni/*`` calls and the agent's failures to CNI errors.
It never enters or inspects a network namespace: it runs in whatever namespace
the runtime runs in.

When the agent is unreachable, as Cilium's plugin does:
- ADD, CHECK, GC wait up to ``agentWaitSeconds`` for its socket (it may be
  restarting) or for it to stop answering code 11 (still starting), then fail
  with code 11 (try again later);
- DEL waits likewise, then queues the request for the agent to replay when it
  starts (:mod:`glia.cni.deletion_queue`) and succeeds: the spec wants DEL to
  succeed when it can, and the agent, not the plugin, holds what must be freed;
- STATUS answers at once with code 50 (plugin not available).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from glia.agent.client import (
    AgentClient,
    AgentError,
    AgentProtocolError,
    AgentUnreachable,
)
from glia.cni import spec
from glia.cni.invocation import Invocation, agent_request, gc_request
from glia.cni.result import add_result
from glia.cni.spec import CniError, PluginSettings

T = TypeVar("T")
Log = Callable[[str], None]

QUEUE_LOCK_TIMEOUT = 10.0  # Cilium's: the runtime would time the DEL out past this
_POLL = 0.1
_HINT = "is the glia agent running on this node?"


class CniAgent(Protocol):
    """The agent's CNI calls: :class:`AgentClient` over the socket, or the agent
    itself when it runs this code for the compiled fast path (glia.cni.shim)."""

    def cni_add(self, req: dict[str, Any]) -> dict[str, Any]: ...
    def cni_del(self, req: dict[str, Any]) -> dict[str, Any]: ...
    def cni_check(self, req: dict[str, Any]) -> dict[str, Any]: ...
    def cni_gc(self, req: dict[str, Any]) -> dict[str, Any]: ...
    def cni_status(self) -> dict[str, Any]: ...


def run(
    inv: Invocation, settings: PluginSettings, log: Log, client: CniAgent | None = None
) -> dict[str, Any] | None:
    """Carry out one verb; returns what to print on stdout (ADD's result) or None."""
    if client is None:
        client = AgentClient(settings.agent_socket)
    try:
        if inv.command == "ADD":
            result = _waiting(settings, lambda: client.cni_add(agent_request(inv)))
            return add_result(result, inv.cni_version)
        if inv.command == "DEL":
            _delete(client, inv, settings, log)
            return None
        if inv.command == "CHECK":
            _waiting(settings, lambda: client.cni_check(agent_request(inv)))
            return None
        if inv.command == "GC":
            body = gc_request(inv)
            _waiting(settings, lambda: client.cni_gc(body))
            return None
        if inv.command == "STATUS":
            client.cni_status()
            return None
    except AgentUnreachable as e:
        code = spec.ERR_NOT_AVAILABLE if inv.command == "STATUS" else spec.ERR_TRY_AGAIN_LATER
        raise CniError(code, "the glia agent is not reachable", f"{e} ({_HINT})") from e
    except AgentError as e:
        raise CniError(e.code if e.code > 0 else spec.ERR_INTERNAL, e.msg, e.details) from e
    except AgentProtocolError as e:
        if e.timeout:
            raise CniError(
                spec.ERR_TRY_AGAIN_LATER, "the glia agent did not answer in time", str(e)
            ) from e
        raise CniError(spec.ERR_INTERNAL, "unexpected answer from the glia agent", str(e)) from e
    raise CniError(spec.ERR_INVALID_ENV, f"unknown CNI_COMMAND: {inv.command}")


def _waiting(settings: PluginSettings, call: Callable[[], T]) -> T:
    """``call()``, retried up to the wait while the agent is not there or not ready.

    Retrying is safe: an unreachable agent never received the request, and one
    that answered code 11 (try again later, e.g. still starting) did nothing.
    """
    deadline = time.monotonic() + settings.agent_wait
    while True:
        try:
            return call()
        except AgentUnreachable as e:
            if not e.transient or time.monotonic() >= deadline:
                raise
        except AgentError as e:
            if e.code != spec.ERR_TRY_AGAIN_LATER or time.monotonic() >= deadline:
                raise
        time.sleep(_POLL)


def _delete(client: CniAgent, inv: Invocation, settings: PluginSettings, log: Log) -> None:
    req = agent_request(inv)
    try:
        _waiting(settings, lambda: client.cni_del(req))
        return
    except AgentUnreachable as e:
        first = e
    # Imported here: only this rare path needs hashlib and fcntl.
    from glia.cni.deletion_queue import DeletionQueue, QueueError

    queue = DeletionQueue(settings.delete_queue_dir)
    try:
        with queue.lock(exclusive=False, timeout=QUEUE_LOCK_TIMEOUT):
            # The agent holds the exclusive lock until it listens: if it started
            # while we waited for the lock, it can answer now.
            try:
                client.cni_del(req)
                return
            except AgentUnreachable:
                path = queue.enqueue(req)
    except QueueError as e:
        raise CniError(
            spec.ERR_TRY_AGAIN_LATER,
            "the glia agent is not reachable and the DEL could not be queued",
            f"{first}; {e}",
        ) from e
    log(f"glia-cni: {first}; DEL of {inv.container_id}/{inv.ifname} queued in {path}")
