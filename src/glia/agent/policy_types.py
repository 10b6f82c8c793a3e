"""What :class:`glia.agent.policy.PolicySync` works with: the policy maps' writer and the
ipcache's CIDR input it programs (protocols, so its unit tests need no kernel), the
rule cookies it writes with the entries, and the timings of its flushes.

Imported by glia.agent.policy, the agent's API and its tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from glia.policy.entries import EndpointPolicy

Labels = Mapping[str, str]
Cookie = Callable[[tuple[str, ...]], int]


class PolicyWriter(Protocol):
    """What programming needs of the policy maps (:class:`glia.datapath.policymap.PolicyMap`)."""

    def apply(
        self, subject: int, old: EndpointPolicy | None, new: EndpointPolicy | None, cookie: Cookie
    ) -> int: ...

    def apply_many(
        self,
        changes: Iterable[tuple[int, EndpointPolicy | None, EndpointPolicy | None]],
        cookie: Cookie,
    ) -> int: ...

    def sync_all(self, desired: Mapping[int, EndpointPolicy], cookie: Cookie) -> int: ...


class CidrSink(Protocol):
    """The ipcache's writer (:class:`glia.agent.ipcache.IPCacheSync`)."""

    async def set_cidr_identities(self, prefixes: Mapping[str, int]) -> None: ...

    async def held_cidr_identities(self) -> dict[str, int]: ...


RunDp = Callable[[Callable[[], Any]], Awaitable[Any]]


class CookieTable:
    """Rule-id tuples <-> small numbers, stable for the agent's life (0: no rules)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, ...], int] = {(): 0}
        self._rules: list[tuple[str, ...]] = [()]

    def __call__(self, rules: tuple[str, ...]) -> int:
        cookie = self._ids.get(rules)
        if cookie is None:
            cookie = len(self._rules)
            self._ids[rules] = cookie
            self._rules.append(rules)
        return cookie

    def rules(self, cookie: int) -> list[str]:
        return list(self._rules[cookie]) if 0 <= cookie < len(self._rules) else []

    def __len__(self) -> int:
        return len(self._rules) - 1


@dataclass
class FlushStats:
    """The last flush, for ``glia status`` and bench/policy.py."""

    subjects: int = 0  # subjects computed
    compute_s: float = 0.0  # engine time
    program_s: float = 0.0  # map writes (datapath thread, queueing included)
    written: int = 0  # map entries (port blocks) written or removed
    latency_s: float = 0.0  # first change seen -> programmed
    at: float = 0.0  # wall clock of its end

    def to_dict(self) -> dict[str, Any]:
        return {
            "subjects": self.subjects,
            "compute_ms": round(self.compute_s * 1000, 2),
            "program_ms": round(self.program_s * 1000, 2),
            "written": self.written,
            "latency_ms": round(self.latency_s * 1000, 2),
            "at": round(self.at, 3),
        }
