"""The operator's Prometheus metrics (docs/metrics.md), read at scrape time.

Served by :func:`glia.operator.daemon.serve` when ``prometheus_listen`` is
set. Like the agent's (:mod:`glia.agent.metrics`) the registry is the
operator's own. Every replica answers: a standby shows ``glia_operator_leader
0`` and none of the leader's Service figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

from glia.metrics import families as fam

if TYPE_CHECKING:
    from glia.operator.daemon import Operator


def operator_families(op: Operator) -> list[Metric]:
    out: list[Metric] = [
        fam.gauge(
            "glia_operator_leader", "1 while this replica leads its cluster.", int(op.leading)
        ),
        fam.counter(
            "glia_operator_leader_terms_total", "Times this replica became the leader.", op.terms
        ),
        fam.labelled_counter(
            "glia_operator_identity_gc_runs_total",
            "Identity garbage-collection passes, by outcome (success or error).",
            ("outcome",),
            (((k,), n) for k, n in sorted(op.gc_passes.items())),
        ),
        fam.counter(
            "glia_operator_identities_collected_total",
            "Unused identities the garbage collector deleted.",
            op.identities_collected,
        ),
    ]
    if op.identities_listed is not None:
        out.append(
            fam.gauge(
                "glia_operator_identities",
                "Identities of the cluster, as the last garbage-collection pass listed them.",
                op.identities_listed,
            )
        )
    st = op.service_status()
    if st is not None:  # leading
        out += [
            fam.gauge(
                "glia_operator_services", "Declared Services the operator resolves.", st["services"]
            ),
            fam.gauge(
                "glia_operator_service_records",
                "ClusterService records the operator has published.",
                st["records"],
            ),
            fam.counter(
                "glia_operator_service_record_writes_total",
                "ClusterService records written in this leader term.",
                st["writes"],
            ),
            fam.counter(
                "glia_operator_service_errors_total",
                "Failed Service resolution passes in this leader term.",
                st["errors"],
            ),
        ]
    return out


class OperatorCollector:
    def __init__(self, op: Operator) -> None:
        self._op = op

    def describe(self) -> list[Metric]:
        return []  # names vary with leadership: no registration-time check

    def collect(self) -> Iterable[Metric]:
        return operator_families(self._op)


class OperatorMetrics:
    """One operator's registry: its collector and the process' own metrics."""

    def __init__(self, op: Operator) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(OperatorCollector(op))
        ProcessCollector(registry=self.registry)

    async def render(self) -> bytes:
        return generate_latest(self.registry)
