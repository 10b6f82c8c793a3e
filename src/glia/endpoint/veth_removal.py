"""Endpoint veths deleted in the background, so a CNI DEL never waits for the kernel.

Used by :class:`glia.endpoint.manager.EndpointManager`. Unregistering a netdev
waits for RCU grace periods (17-25 ms measured here), more than everything
else a DEL does. The manager makes the state changes that keep the datapath
correct synchronously (endpoint map entry first, keys, IP, record) and hands
the interface to :class:`VethRemovals`: one task per host interface name.

- An ADD that reuses the name (same container id and ifname, e.g. ``podman
  restart``) calls :meth:`VethRemovals.wait` first.
- An interface already gone is a success: right after DEL the runtime deletes
  the pod's namespace, which takes the pair with it.
- A failure is logged and counted; the interface stays until the next agent
  start, whose restore removes every endpoint veth no record claims, or until
  an ADD reuses the name: :meth:`VethRemovals.wait` tries once more then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

WAIT_TIMEOUT = 5.0  # an ADD waiting for its name; a netlink delete takes milliseconds
STOP_TIMEOUT = 2.0  # agent stop: what is not done by then, the next restore removes


class RemovalPending(Exception):
    """The interface's deletion did not finish within the wait's bound, or failed."""


class VethRemovals:
    def __init__(self, delete: Callable[[str], object]) -> None:
        """``delete(host_ifname)`` runs on a worker thread (in the caller's network
        namespace): it removes the interface, treats one already gone as done,
        and raises on failure."""
        self._delete = delete
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failed: set[str] = set()  # names whose last deletion failed
        self.removed = 0
        self.failed = 0

    def pending(self) -> list[str]:
        return sorted(self._tasks)

    def remove(self, host_ifname: str) -> None:
        """Delete ``host_ifname`` in the background; once if asked twice."""
        if host_ifname in self._tasks:
            return  # nothing recreated it meanwhile: an ADD would have waited first
        self._tasks[host_ifname] = asyncio.create_task(
            self._run(host_ifname), name=f"veth-removal-{host_ifname}"
        )

    async def _run(self, host_ifname: str) -> None:
        try:
            # A thread of the default executor, not the datapath's one: the
            # next ADD's netlink and BPF work must not queue behind this.
            await asyncio.to_thread(self._delete, host_ifname)
            self.removed += 1
        except Exception as e:
            self.failed += 1
            self._failed.add(host_ifname)
            log.warning(
                "removing endpoint interface %s failed: %s (the next agent start removes it)",
                host_ifname,
                e,
            )
        finally:
            self._tasks.pop(host_ifname, None)

    async def wait(self, host_ifname: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Return once ``host_ifname`` is free: its pending deletion done, and one
        that failed tried once more; else :class:`RemovalPending`."""
        task = self._tasks.get(host_ifname)
        if task is not None:
            # asyncio.wait, not wait_for: a cancelled waiter leaves the deletion running.
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                raise RemovalPending(f"interface {host_ifname} is still being removed")
        if host_ifname in self._failed:
            try:
                await asyncio.to_thread(self._delete, host_ifname)
            except Exception as e:
                raise RemovalPending(f"interface {host_ifname} cannot be removed: {e}") from None
            self._failed.discard(host_ifname)
            self.removed += 1

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait at most ``timeout`` for pending deletions; never hangs."""
        tasks = set(self._tasks.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        if late:
            log.warning(
                "%d endpoint interfaces still being removed at stop; the next start removes them",
                len(late),
            )
