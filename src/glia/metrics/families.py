"""Metric families from plain values, for the daemons' collectors at scrape time.

Called by :mod:`glia.agent.metrics` and :mod:`glia.operator.metrics`. Each
helper returns one prometheus_client family, so a collector's ``collect`` reads
as the list of what it exposes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from glia.metrics.recorders import Counts, Histogram


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def labelled_gauge(
    name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    # The family's name has no _total: prometheus_client adds it to the sample.
    return CounterMetricFamily(name.removesuffix("_total"), doc, value=value)


def labelled_counter(
    name: str, doc: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name.removesuffix("_total"), doc, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


def counts(name: str, doc: str, labels: Sequence[str], recorded: Counts) -> CounterMetricFamily:
    return labelled_counter(name, doc, labels, sorted(recorded.values.items()))


def histograms(
    name: str, doc: str, labels: Sequence[str], recorded: Mapping[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    """One histogram per label values; ``labels`` may be empty (one key, ``()``)."""
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for label_values, h in sorted(recorded.items()):
        buckets = [(_le(le), float(n)) for le, n in h.cumulative()]
        family.add_metric(list(label_values), buckets, h.sum)
    return family


def _le(bound: float) -> str:
    # As prometheus_client writes bucket bounds: "0.005", "1.0", "+Inf".
    return "+Inf" if bound == float("inf") else repr(float(bound))
