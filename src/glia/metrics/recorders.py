"""Event counters and latency histograms cheap enough for the DNS and CNI paths.

prometheus_client's Counter and Histogram take a lock per observation and
live in a process-wide registry by default; these are plain integers owned by
one server object and only ever touched from its event loop's thread, so an
observation is a bisect and two integer increments. The agent's collector
(:mod:`glia.agent.metrics`) reads them at scrape time through
:mod:`glia.metrics.families`. Pure: no prometheus_client import here, so the
DNS server can use them without loading it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

# Seconds. DNS answers from memory take ~0.1-0.3 ms and forwarded ones up to
# the upstream timeout; CNI ADD/DEL take 10-100 ms and can wait seconds for
# the kvstore, hence the two ranges.
DNS_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
CNI_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Histogram:
    """Observations of one latency: per-bucket counts (not cumulative), their sum.

    ``bounds`` are the buckets' upper bounds in seconds, ascending; an
    observation above the last lands in the implicit +Inf bucket.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must ascend without repeats: {bounds}")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "<=").
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(le, observations <= le)]``, the last ``(inf, all of them)``."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class Counts:
    """Counters by label values: ``counts[("ADD", "success")] += 1``."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1
