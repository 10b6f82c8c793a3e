"""The agent's and operator's metrics against fake sources: names, labels, values.

Every exposition is parsed back with prometheus_client's own parser, so what
is checked is what Prometheus would read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from glia.agent.metrics import AgentMetrics, CniStats
from glia.agent.subsystems import Subsystem
from glia.datapath.drop import Reason
from glia.datapath.nodemaps import MetricRow
from glia.metrics.http import parse_listen
from glia.metrics.recorders import DNS_BUCKETS, Histogram
from glia.model.endpoint import Endpoint, EndpointState
from glia.operator.metrics import OperatorMetrics

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """(sample name, sorted labels) -> value, for every sample of the exposition."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


# -- recorders ----------------------------------------------------------------------


def test_histogram_buckets_are_le_and_cumulative() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        h.observe(v)
    assert h.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert (h.count, h.sum) == (4, pytest.approx(2.65))
    with pytest.raises(ValueError):
        Histogram((1.0, 0.1))


def test_cni_stats_time_errors_too() -> None:
    cni = CniStats()
    with cni.timed("ADD"):
        pass
    with pytest.raises(RuntimeError), cni.timed("ADD"):
        raise RuntimeError("boom")
    assert cni.requests.values == {("ADD", "success"): 1, ("ADD", "error"): 1}
    assert cni.durations[("ADD",)].count == 2


@pytest.mark.parametrize(
    ("text", "want"),
    [("127.0.0.1:9962", ("127.0.0.1", 9962)), (":9962", ("", 9962)), ("[::1]:1", ("::1", 1))],
)
def test_parse_listen(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["", "9962", "host:", "host:0", "host:70000", "host:x"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="ADDR:PORT"):
        parse_listen(text)


# -- the agent -----------------------------------------------------------------------


def _endpoint(name: str, state: EndpointState) -> Endpoint:
    return Endpoint("cid-" + name, "default", name, "c1", "n1", "10.1.0.5", 70000, state=state)


class FakeAgent:
    """What glia.agent.metrics.gather reads of an Agent."""

    def __init__(self) -> None:
        rows = [
            MetricRow(Reason.FORWARDED, "egress", 10, 1000),
            MetricRow(Reason.FORWARDED, "ingress", 7, 700),
            MetricRow(Reason.DROP_POLICY, "ingress", 2, 120),
        ]
        self.datapath = SimpleNamespace(metrics=SimpleNamespace(read=lambda: rows))
        self.dp_calls = 0
        eps = [
            _endpoint("a", EndpointState.READY),
            _endpoint("b", EndpointState.READY),
            _endpoint("c", EndpointState.WAITING_FOR_IDENTITY),
        ]
        self.endpoints = SimpleNamespace(all=lambda: eps)
        self.identities = SimpleNamespace(status=lambda: {"identities": 5, "synced": True})
        lb = {"services": 3, "frontends": 4, "backends": 6}
        self.services = SimpleNamespace(lb=SimpleNamespace(status=lambda: lb))
        self.policy = SimpleNamespace(status=lambda: {"policies": 2, "entries": 9})
        self.mesh_clusters = [
            {"name": "c2", "ready": True, "last_error": None, "failures": 0},
            {
                "name": "c3",
                "ready": False,
                "last_error": "connection refused",
                "failures": 2,
                "last_failure_at": 1.8e9,
            },
        ]
        self.mesh = SimpleNamespace(status=lambda: {"clusters": self.mesh_clusters})
        latency = Histogram(DNS_BUCKETS)
        latency.observe(0.0002)
        latency.observe(0.3)
        self.dns = SimpleNamespace(
            rcodes={dns.rcode.NOERROR: 4, dns.rcode.NXDOMAIN: 1}, latency=latency
        )
        ok, degraded = Subsystem(), Subsystem()
        ok.set(True, "fine")
        degraded.set(True, "some refused", degraded=True)
        self.status = {"kvstore": ok, "clustermesh": degraded, "policy": Subsystem()}

    async def run_dp(self, fn: Callable[[], T]) -> T:
        self.dp_calls += 1
        return fn()

    def healthy(self) -> bool:
        return False


def _scrape(metrics: AgentMetrics) -> str:
    return asyncio.run(metrics.render()).decode()


def test_agent_metrics_from_every_source() -> None:
    agent = FakeAgent()
    cni = CniStats()
    cni.record("ADD", True, 0.02)
    cni.record("ADD", False, 3.0)
    cni.record("DEL", True, 0.01)
    text = _scrape(AgentMetrics(agent, cni))
    got = parse(text)
    assert agent.dp_calls == 1  # the map is read on the datapath thread
    pk = "glia_datapath_packets_total"
    assert got[(pk, (("direction", "egress"), ("reason", "FORWARDED")))] == 10
    assert got[(pk, (("direction", "ingress"), ("reason", "DROP_POLICY")))] == 2
    assert (
        got[("glia_datapath_bytes_total", (("direction", "ingress"), ("reason", "FORWARDED")))]
        == 700
    )
    assert got[("glia_endpoints", (("state", "ready"),))] == 2
    assert got[("glia_endpoints", (("state", "waiting-for-identity"),))] == 1
    assert got[("glia_endpoints", (("state", "disconnecting"),))] == 0
    assert got[("glia_identities", ())] == 5
    assert got[("glia_services", ())] == 3
    assert got[("glia_service_frontends", ())] == 4
    assert got[("glia_service_backends", ())] == 6
    assert got[("glia_policies", ())] == 2
    assert got[("glia_policy_entries", ())] == 9
    assert got[("glia_agent_healthy", ())] == 0
    sub = "glia_subsystem_status"
    assert got[(sub, (("state", "ok"), ("subsystem", "kvstore")))] == 1
    assert got[(sub, (("state", "degraded"), ("subsystem", "kvstore")))] == 0
    assert got[(sub, (("state", "degraded"), ("subsystem", "clustermesh")))] == 1
    assert got[(sub, (("state", "failed"), ("subsystem", "policy")))] == 1
    assert got[("glia_clustermesh_remote_clusters", ())] == 2
    assert got[("glia_clustermesh_remote_cluster_ready", (("cluster", "c2"),))] == 1
    assert got[("glia_clustermesh_remote_cluster_ready", (("cluster", "c3"),))] == 0
    fail = "glia_clustermesh_remote_cluster_last_failure_timestamp_seconds"
    assert got[(fail, (("cluster", "c2"),))] == 0
    assert got[(fail, (("cluster", "c3"),))] == 1.8e9
    failures = "glia_clustermesh_remote_cluster_failures_total"
    assert got[(failures, (("cluster", "c2"),))] == 0
    assert got[(failures, (("cluster", "c3"),))] == 2
    req = "glia_cni_requests_total"
    assert got[(req, (("command", "ADD"), ("outcome", "success")))] == 1
    assert got[(req, (("command", "ADD"), ("outcome", "error")))] == 1
    assert got[(req, (("command", "DEL"), ("outcome", "success")))] == 1
    dur = "glia_cni_duration_seconds"
    assert got[(f"{dur}_bucket", (("command", "ADD"), ("le", "0.025")))] == 1
    assert got[(f"{dur}_bucket", (("command", "ADD"), ("le", "+Inf")))] == 2
    assert got[(f"{dur}_count", (("command", "ADD"),))] == 2
    assert got[(f"{dur}_sum", (("command", "ADD"),))] == pytest.approx(3.02)
    assert got[("glia_dns_queries_total", (("rcode", "NOERROR"),))] == 4
    assert got[("glia_dns_queries_total", (("rcode", "NXDOMAIN"),))] == 1
    assert got[("glia_dns_duration_seconds_bucket", (("le", "0.00025"),))] == 1
    assert got[("glia_dns_duration_seconds_count", ())] == 2
    assert ("process_cpu_seconds_total", ()) in got or ("process_start_time_seconds", ()) in got
    kinds = types(text)
    for name in ("glia_datapath_packets", "glia_cni_requests", "glia_dns_queries"):
        assert kinds[name] == "counter"
    for name in ("glia_endpoints", "glia_identities", "glia_subsystem_status"):
        assert kinds[name] == "gauge"
    assert kinds["glia_cni_duration_seconds"] == kinds["glia_dns_duration_seconds"] == "histogram"


def test_an_agent_not_started_shows_only_what_runs() -> None:
    agent = SimpleNamespace(status={"kvstore": Subsystem()})
    got = parse(_scrape(AgentMetrics(agent, CniStats())))
    names = {name for name, _ in got if name.startswith("glia_")}
    assert names == {"glia_subsystem_status"}  # CNI families have no samples yet
    assert got[("glia_subsystem_status", (("state", "failed"), ("subsystem", "kvstore")))] == 1


def test_a_datapath_read_failure_leaves_the_rest() -> None:
    agent = FakeAgent()

    def broken() -> list[MetricRow]:
        raise OSError("map gone")

    agent.datapath = SimpleNamespace(metrics=SimpleNamespace(read=broken))
    got = parse(_scrape(AgentMetrics(agent, CniStats())))
    assert not any(name.startswith("glia_datapath_") for name, _ in got)
    assert got[("glia_identities", ())] == 5


def test_two_agents_in_one_process_do_not_collide() -> None:
    one, two = FakeAgent(), FakeAgent()
    two.identities = SimpleNamespace(status=lambda: {"identities": 99})
    a, b = AgentMetrics(one, CniStats()), AgentMetrics(two, CniStats())
    assert parse(_scrape(a))[("glia_identities", ())] == 5
    assert parse(_scrape(b))[("glia_identities", ())] == 99


# -- the operator ----------------------------------------------------------------------


class FakeOperator:
    def __init__(self, leading: bool) -> None:
        self.leading = leading
        self.terms = 2
        self.gc_passes = {"success": 5, "error": 1}
        self.identities_collected = 3
        self.identities_listed: int | None = 12

    def service_status(self) -> dict[str, Any] | None:
        if not self.leading:
            return None
        return {"services": 4, "records": 4, "writes": 8, "errors": 0}


def test_operator_metrics_of_the_leader_and_of_a_standby() -> None:
    leader = asyncio.run(OperatorMetrics(FakeOperator(True)).render()).decode()  # type: ignore[arg-type]
    got = parse(leader)
    assert got[("glia_operator_leader", ())] == 1
    assert got[("glia_operator_leader_terms_total", ())] == 2
    assert got[("glia_operator_identity_gc_runs_total", (("outcome", "success"),))] == 5
    assert got[("glia_operator_identity_gc_runs_total", (("outcome", "error"),))] == 1
    assert got[("glia_operator_identities_collected_total", ())] == 3
    assert got[("glia_operator_identities", ())] == 12
    assert got[("glia_operator_services", ())] == 4
    assert got[("glia_operator_service_records", ())] == 4
    assert got[("glia_operator_service_record_writes_total", ())] == 8
    standby = parse(asyncio.run(OperatorMetrics(FakeOperator(False)).render()).decode())  # type: ignore[arg-type]
    assert standby[("glia_operator_leader", ())] == 0
    assert ("glia_operator_services", ()) not in standby
