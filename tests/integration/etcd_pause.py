"""etcd paused for a while (SIGSTOP): the kvstore tests' way to make it unreachable."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

from glia.lab.etcd import EtcdServer


@contextlib.contextmanager
def paused(srv: EtcdServer) -> Iterator[None]:
    """etcd stopped (SIGSTOP) inside the block; always continued afterwards."""
    assert srv.pid is not None
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(srv.pid, signal.SIGCONT)
