"""VethRemovals: deletions in the background, waited for by a reuse, bounded at stop.

The delete function stands for the netlink call (the real one is exercised by
tests/e2e/test_cni_fast_del.py); here it blocks on an event, so what happens
while a deletion is still running is shown deterministically.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pytest

from glia.endpoint.veth_removal import RemovalPending, VethRemovals


class BlockingDelete:
    """Records the names it was asked to delete; each call waits for ``release``."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.done: list[str] = []
        self.release = threading.Event()
        self._fail = fail

    def __call__(self, name: str) -> bool:
        self.calls.append(name)
        if not self.release.wait(10):
            raise AssertionError("never released")
        if name == self._fail:
            raise OSError(f"deleting {name}: Device or resource busy")
        self.done.append(name)
        return True


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition never held"
        await asyncio.sleep(0.005)


async def test_remove_returns_at_once_and_a_reuse_waits_for_the_deletion() -> None:
    delete = BlockingDelete()
    removals = VethRemovals(delete)
    removals.remove("gliaeaaaa")
    assert removals.pending() == ["gliaeaaaa"]
    await _until(lambda: delete.calls == ["gliaeaaaa"])
    assert delete.done == []  # still running: remove() did not wait

    waiter = asyncio.create_task(removals.wait("gliaeaaaa"))
    await asyncio.sleep(0.05)
    assert not waiter.done(), "the reuse went ahead while the old interface existed"
    await removals.wait("gliaebbbb")  # another name: nothing to wait for
    delete.release.set()
    await asyncio.wait_for(waiter, 5)
    assert delete.done == ["gliaeaaaa"]
    assert removals.pending() == [] and (removals.removed, removals.failed) == (1, 0)


async def test_a_name_asked_twice_is_deleted_once() -> None:
    delete = BlockingDelete()
    removals = VethRemovals(delete)
    removals.remove("gliaeaaaa")
    removals.remove("gliaeaaaa")  # a repeated DEL while the first deletion runs
    delete.release.set()
    await removals.wait("gliaeaaaa")
    assert delete.calls == ["gliaeaaaa"]
    removals.remove("gliaeaaaa")  # after it finished: a new deletion (finds it gone)
    await removals.wait("gliaeaaaa")
    assert delete.calls == ["gliaeaaaa", "gliaeaaaa"]


async def test_a_failed_deletion_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delete = BlockingDelete(fail="gliaebad")
    delete.release.set()
    removals = VethRemovals(delete)
    with caplog.at_level(logging.WARNING, logger="glia.endpoint.veth_removal"):
        removals.remove("gliaebad")
        removals.remove("gliaegood")
        await _until(lambda: removals.pending() == [])
    assert (removals.removed, removals.failed) == (1, 1)
    assert removals.pending() == []
    [record] = [r for r in caplog.records if "gliaebad" in r.getMessage()]
    assert "Device or resource busy" in record.getMessage()
    assert "next agent start removes it" in record.getMessage()


async def test_a_reuse_of_a_name_whose_deletion_failed_tries_once_more() -> None:
    delete = BlockingDelete(fail="gliaebad")
    delete.release.set()
    removals = VethRemovals(delete)
    removals.remove("gliaebad")
    with pytest.raises(RemovalPending, match=r"gliaebad cannot be removed: .*busy"):
        await removals.wait("gliaebad")  # the ADD reusing it: still failing, refused
    assert delete.calls == ["gliaebad", "gliaebad"]
    delete._fail = None  # whatever held the interface let go
    await removals.wait("gliaebad")
    assert delete.calls == ["gliaebad"] * 3 and delete.done == ["gliaebad"]
    await removals.wait("gliaebad")  # nothing more to do
    assert len(delete.calls) == 3 and (removals.removed, removals.failed) == (1, 1)


async def test_a_wait_is_bounded_and_leaves_the_deletion_running() -> None:
    delete = BlockingDelete()
    removals = VethRemovals(delete)
    removals.remove("gliaeslow")
    with pytest.raises(RemovalPending, match="gliaeslow is still being removed"):
        await removals.wait("gliaeslow", timeout=0.05)
    assert removals.pending() == ["gliaeslow"]
    delete.release.set()
    await removals.wait("gliaeslow")
    assert delete.done == ["gliaeslow"]


async def test_stop_waits_for_pending_deletions_but_never_hangs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delete = BlockingDelete()
    removals = VethRemovals(delete)
    removals.remove("gliaequick")
    asyncio.get_running_loop().call_later(0.05, delete.release.set)
    await asyncio.wait_for(removals.stop(timeout=5), 5)
    assert delete.done == ["gliaequick"]  # waited for it

    stuck = BlockingDelete()
    removals = VethRemovals(stuck)
    removals.remove("gliaestuck")
    loop = asyncio.get_running_loop()
    start = loop.time()
    with caplog.at_level(logging.WARNING, logger="glia.endpoint.veth_removal"):
        await removals.stop(timeout=0.1)
    assert loop.time() - start < 2, "stop waited past its bound"
    assert "1 endpoint interfaces still being removed" in caplog.text
    stuck.release.set()  # let the worker thread finish
    await removals.wait("gliaestuck")
