"""The type of the agent's "run this on the datapath thread" function.

Blocking kernel work (libbpf, netlink) runs on one worker thread; subsystems get
a :class:`RunDatapath` callable rather than the executor, so they can be tested
with a synchronous stand-in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

_T = TypeVar("_T")


class RunDatapath(Protocol):
    def __call__(self, fn: Callable[[], _T], /) -> Awaitable[_T]: ...
