"""The queue of DELs that glia-cni leaves for an agent that is down."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_agent_client import short_tmpdir

from glia.cni.deletion_queue import DeletionQueue, QueueError


@pytest.fixture
def qdir() -> Iterator[str]:
    with short_tmpdir() as d:
        yield os.path.join(d, "cni-delete-queue")


def req(cid: str, ifname: str = "eth0", net: str = "glia") -> dict[str, Any]:
    return {
        "command": "DEL",
        "container_id": cid,
        "ifname": ifname,
        "netns": "",
        "args": {},
        "config": {"name": net},
        "prev_result": None,
    }


def test_round_trip_oldest_first(qdir: str) -> None:
    q = DeletionQueue(qdir)
    assert q.pending() == []  # no directory yet
    with q.lock(exclusive=False, timeout=1):
        p1 = q.enqueue(req("a"))
        q.enqueue(req("a", "eth1"))
        q.enqueue(req("a", net="other"))
        assert q.enqueue(req("a")) == p1  # the same attachment again: replaced, not added
        pb = q.enqueue(req("b"))
    os.utime(pb, (time.time() - 10, time.time() - 10))
    entries = q.pending()
    assert entries[0].request == req("b")
    assert sorted((e.request or {})["container_id"] for e in entries) == ["a", "a", "a", "b"]
    assert all(e.error == "" for e in entries)
    assert not [n for n in os.listdir(qdir) if n.endswith(".tmp")]
    with q.lock(exclusive=True, timeout=1):
        for e in entries:
            q.remove(e)
        q.remove(entries[0])  # already gone: fine
    assert q.pending() == []
    assert os.stat(qdir).st_mode & 0o777 == 0o700


def test_malformed_entries_are_reported(qdir: str) -> None:
    q = DeletionQueue(qdir)
    with q.lock(exclusive=False, timeout=1):
        q.enqueue(req("a"))
    with open(os.path.join(qdir, "bad.delete"), "w") as f:
        f.write("{nope")
    with open(os.path.join(qdir, "add.delete"), "w") as f:
        json.dump({"command": "ADD"}, f)
    with open(os.path.join(qdir, "ignored.txt"), "w") as f:
        f.write("not an entry")
    entries = q.pending()
    errors = sorted(e.error.split(":")[0] for e in entries if e.request is None)
    assert errors == ["not a CNI DEL request", "unreadable"]
    assert [e.request for e in entries if e.request is not None] == [req("a")]


def test_too_many_entries(qdir: str) -> None:
    q = DeletionQueue(qdir, max_entries=2)
    with q.lock(exclusive=False, timeout=1):
        q.enqueue(req("a"))
        q.enqueue(req("b"))
        q.enqueue(req("b"))  # replacing one is still fine
        with pytest.raises(QueueError, match="already holds 2 entries"):
            q.enqueue(req("c"))


def test_the_agents_exclusive_lock_holds_writers_off(qdir: str) -> None:
    q = DeletionQueue(qdir)
    with q.lock(exclusive=True, timeout=1):
        start = time.monotonic()
        with pytest.raises(QueueError, match="timed out"):
            q.lock(exclusive=False, timeout=0.2)
        assert time.monotonic() - start >= 0.2
    # Writers share the lock with one another, not with the agent.
    with (
        q.lock(exclusive=False, timeout=1),
        q.lock(exclusive=False, timeout=1),
        pytest.raises(QueueError, match="timed out"),
    ):
        q.lock(exclusive=True, timeout=0.1)


def test_unusable_directory(qdir: str) -> None:
    with open(qdir, "w"):
        pass  # a file where the directory should be
    with pytest.raises(QueueError, match="cannot open the CNI deletion queue"):
        DeletionQueue(os.path.join(qdir, "sub")).lock(exclusive=False, timeout=1)
