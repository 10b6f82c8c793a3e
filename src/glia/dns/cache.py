"""Answers already built, keyed by the query's bytes (pure; used by glia.dns.server).

A local answer depends on nothing but the query message after its ID (flags,
question, EDNS), the transport's size limit (UDP or TCP) and the agent's
names, so the bytes built for one query answer every later query with the
same bytes, ID patched in. Parsing the query and building the answer with
dnspython is most of the server's CPU per query (~100 µs); a hit is a dict
lookup and a concatenation, which keeps answers fast when the agent shares
the CPU with everything else on the node (issue 10: p99 under 1 ms).

No answer outlives a change: every lookup compares the names' version (what
the caller's ``version`` returns; it changes whenever a Service or a pod name
does) with the one the entries were built under, and drops them all when it
differs. Forwarded answers are never kept (the upstream's TTLs are its own).
The number of entries is bounded: when full, the cache starts over, which
costs only misses.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")  # what the caller keeps with an answer (how it was counted)

DNS_HEADER = 12  # bytes; the ID is the first two


class AnswerCache(Generic[T]):
    def __init__(self, version: Callable[[], Hashable], limit: int = 4096) -> None:
        self._version = version
        self._limit = limit
        self._built_under: Hashable = object()  # equal to no version: the first get misses
        self._answers: dict[tuple[bool, bytes], tuple[bytes, T]] = {}

    def get(self, query: bytes, tcp: bool) -> tuple[bytes, T] | None:
        """(the answer with ``query``'s ID, what was kept with it), or None."""
        version = self._version()
        if version != self._built_under:
            self._answers.clear()
            self._built_under = version
            return None
        if len(query) < DNS_HEADER:
            return None
        hit = self._answers.get((tcp, query[2:]))
        if hit is None:
            return None
        return query[:2] + hit[0], hit[1]

    def put(self, query: bytes, tcp: bool, answer: bytes, tag: T) -> None:
        """Keep ``answer`` (built for ``query`` under the current version) and ``tag`` (how
        it was counted) for the same query later."""
        if len(query) < DNS_HEADER or len(answer) < DNS_HEADER:
            return
        if self._version() != self._built_under:
            return  # built from names that changed meanwhile (or before the first get)
        if len(self._answers) >= self._limit:
            self._answers.clear()
        self._answers[(tcp, query[2:])] = (answer[2:], tag)

    def __len__(self) -> int:
        return len(self._answers)
