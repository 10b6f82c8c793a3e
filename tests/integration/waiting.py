"""Waiting for a condition in async integration tests (imported as ``waiting``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(
    cond: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 5.0
) -> None:
    """Poll ``cond`` (plain or async) until true; fail naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = cond()
        if not isinstance(r, bool):
            r = await r
        if r:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
