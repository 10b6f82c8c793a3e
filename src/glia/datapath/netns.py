"""Run a function inside another network namespace, on a thread of its own.

setns(CLONE_NEWNET) changes only the calling thread, and everything netns-bound
that glia does (netlink sockets, libbpf's tc calls, /proc/sys/net, BPF test
runs) follows the thread that opens it. A fresh thread per call means the
caller's namespace never changes, even if ``fn`` raises. Used by
glia.datapath.netlink (pod side of a veth), the agent and the tests; Python
3.11 has no os.setns, so libc's is called through ctypes.

The mount namespace is untouched, so /sys/fs/bpf pins stay visible (unlike
``ip netns exec``, which remounts /sys).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from glia.datapath.errors import DatapathError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def setns_current_thread(path: str | Path) -> None:
    """Move the calling thread into the network namespace at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DatapathError(f"cannot open network namespace {path}: {e.strerror}") from None
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DatapathError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(path: str | Path, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` in namespace ``path``; return or re-raise its outcome."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            setns_current_thread(path)
            outcome.append(fn(*args, **kwargs))
        except BaseException as e:  # re-raised in the caller's thread
            failure.append(e)

    thread = threading.Thread(target=target, name=f"glia-netns:{Path(path).name}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def netns_id(path: str | Path) -> tuple[int, int]:
    """(device, inode) naming a network namespace, to compare two paths."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def current_netns_id() -> tuple[int, int]:
    """The calling thread's network namespace."""
    return netns_id("/proc/thread-self/ns/net")
