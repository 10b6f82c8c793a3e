"""Service and backend ids of the lb4 maps: stable, reused late, adopted after a restart.

Pure; used by :mod:`glia.service.lbplan` (an :class:`Allocator` per plan) and
:meth:`glia.service.lbstate.LBState.from_maps` (:func:`adopted_pool`). An id
released by a plan is reusable only from the next plan on, so nothing keyed
by a stale id (affinity) meets a new owner at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

MAX_ID = 0xFFFFFFFF


class PlanError(Exception):
    """The plan cannot be made (id space exhausted)."""


@dataclass(frozen=True, slots=True)
class IdPool:
    """Ids 1..MAX_ID: ``free`` are reusable now, ``releasing`` from the next plan on."""

    next: int = 1
    free: tuple[int, ...] = ()
    releasing: tuple[int, ...] = ()


class Allocator:
    def __init__(self, pool: IdPool, what: str) -> None:
        self._next = pool.next
        self._free = list(pool.free)
        heapq.heapify(self._free)
        self._released = list(pool.releasing)
        self._what = what

    def take(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        if self._next > MAX_ID:
            raise PlanError(f"out of {self._what} ids")
        self._next += 1
        return self._next - 1

    def release(self, ident: int) -> None:
        self._released.append(ident)

    def pool(self) -> IdPool:
        return IdPool(self._next, tuple(sorted(self._free + self._released)), ())


def adopted_pool(used: set[int], seen: set[int]) -> IdPool:
    seen = {i for i in seen if 0 < i <= MAX_ID}
    top = max(seen, default=0)
    free = tuple(i for i in range(1, top + 1) if i not in seen)
    return IdPool(top + 1, free, tuple(sorted(seen - used)))
