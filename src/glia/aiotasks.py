"""Stopping background tasks so that they really stop.

``task.cancel()`` followed by ``await task`` hangs for good if the task
swallows the cancellation, and on Python 3.11 it can without a line of ours
doing so: ``asyncio.wait_for`` drops a cancel that arrives as the awaited call
completes (fixed in 3.12), and gRPC's aio calls may turn a cancel into an
``AioRpcError(CANCELLED)`` that a retry loop takes for a broken stream. CI saw
exactly that: a lease's keep-alive loop carried on after ``revoke()`` had
cancelled it, and ``revoke()`` waited on it until the test timed out.

:func:`cancel_and_wait` cancels again until the task is done. Loops should
still check a stop flag of their own after each await, so that one cancel
that got lost costs at most one iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.5  # seconds between cancels of a task that has not ended


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again if needed.

    Like ``task.cancel(); await task`` with the cancellation suppressed: an
    exception the task ended with is raised.
    """
    if task is None:
        return
    cancels = 0
    while not task.done():
        task.cancel()
        cancels += 1
        # asyncio.wait neither raises the task's exception nor cancels the
        # task on timeout; a cancel of the caller itself propagates.
        await asyncio.wait({task}, timeout=RECANCEL_EVERY)
    if cancels > 1:
        log.warning("task %s ignored %d cancel(s) before it ended", task.get_name(), cancels - 1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
