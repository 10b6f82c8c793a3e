"""The operator's metrics against a real etcd: a leader that ran identity GC and resolves
Services, read through its registry as a scrape reads it."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from test_cluster_record import Running, operator_config, srv  # noqa: F401 (srv: fixture)
from waiting import until

from glia.lab.etcd import EtcdServer
from glia.operator.metrics import OperatorMetrics


async def _samples(metrics: OperatorMetrics) -> dict[str, float]:
    text = (await metrics.render()).decode()
    return {
        s.name + (str(sorted(s.labels.items())) if s.labels else ""): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


async def test_a_leader_shows_its_term_gc_passes_and_services(srv: EtcdServer) -> None:  # noqa: F811
    run = Running(operator_config(srv, identity_gc_interval=0.2))
    metrics = OperatorMetrics(run.op)
    try:
        await until(lambda: run.op.leading and run.op.gc_passes["success"] >= 1, "a GC pass")
        got = await _samples(metrics)
        assert got["glia_operator_leader"] == 1
        assert got["glia_operator_leader_terms_total"] == 1
        assert got["glia_operator_identity_gc_runs_total[('outcome', 'success')]"] >= 1
        assert got["glia_operator_identity_gc_runs_total[('outcome', 'error')]"] == 0
        assert got["glia_operator_identities"] == 0  # a new cluster
        assert got["glia_operator_services"] == 0
    finally:
        await run.stop()
    got = await _samples(metrics)
    assert got["glia_operator_leader"] == 0
    assert "glia_operator_services" not in got
