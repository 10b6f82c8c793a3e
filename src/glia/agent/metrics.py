"""The agent's Prometheus metrics (docs/metrics.md): read at scrape time from its parts.

:class:`AgentMetrics` is built by :class:`glia.agent.api.ApiServer`, which
serves it on ``GET /v1/metrics`` and hands it to
:class:`glia.metrics.http.MetricsServer` when ``prometheus_listen`` is set.
Each scrape first gathers an :class:`AgentSample` (the datapath counters are
read on the agent's datapath thread, the rest from memory), then the
registry's one collector turns it into families (:func:`agent_families`,
pure). The registry is this agent's own, never prometheus_client's global
one, so several agents (or tests) in one process do not collide. CNI calls
are counted as they happen by :class:`CniStats`, DNS queries by the DNS
server's own recorders (:mod:`glia.metrics.recorders`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.rcode
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric

from glia.datapath.nodemaps import MetricRow
from glia.metrics import families as fam
from glia.metrics.recorders import CNI_BUCKETS, Counts, Histogram
from glia.model.endpoint import EndpointState

log = logging.getLogger(__name__)
SUBSYSTEM_STATES = ("ok", "degraded", "failed")


class CniStats:
    """CNI calls the agent served (HTTP routes and the fast path alike), as they end."""

    def __init__(self) -> None:
        self.requests = Counts()  # (command, outcome)
        self.durations: dict[tuple[str, ...], Histogram] = {}  # (command,)

    def record(self, command: str, ok: bool, seconds: float) -> None:
        self.requests.inc(command, "success" if ok else "error")
        h = self.durations.get((command,))
        if h is None:
            h = self.durations[(command,)] = Histogram(CNI_BUCKETS)
        h.observe(seconds)

    @contextlib.contextmanager
    def timed(self, command: str) -> Iterator[None]:
        start, ok = time.perf_counter(), False
        try:
            yield
            ok = True
        finally:
            self.record(command, ok, time.perf_counter() - start)


@dataclass
class MeshCluster:
    name: str
    ready: bool
    last_failure: float  # Unix time of its latest failure; 0: none seen
    failures: int  # distinct failures since the agent started


@dataclass
class AgentSample:
    """What one scrape exposes, gathered from the agent (None: that part is not running)."""

    datapath: list[MetricRow] | None = None
    endpoints: dict[str, int] | None = None  # EndpointState value -> count
    identities: int | None = None
    lb: dict[str, Any] | None = None  # AgentServices.status()["lb"]
    policy: dict[str, Any] | None = None  # PolicySync.status()
    subsystems: dict[str, str] = field(default_factory=dict)  # name -> ok|degraded|failed
    healthy: bool | None = None
    mesh: list[MeshCluster] | None = None
    dns_rcodes: dict[int, int] | None = None
    dns_latency: Histogram | None = None


async def gather(agent: Any) -> AgentSample:
    """Read the agent's parts; a part not started yet, or absent from a test's
    stand-in agent, stays None."""
    sample = AgentSample()
    dp = getattr(agent, "datapath", None)
    if dp is not None:
        try:
            sample.datapath = await agent.run_dp(dp.metrics.read)
        except Exception as e:  # a scrape still shows everything else
            log.warning("metrics: reading the datapath counters failed: %s", e)
    healthy = getattr(agent, "healthy", None)
    if healthy is not None:
        sample.healthy = healthy()  # also refreshes the subsystems' states
    sample.subsystems = {n: s.state for n, s in (getattr(agent, "status", None) or {}).items()}
    endpoints = getattr(agent, "endpoints", None)
    if endpoints is not None:
        by_state = dict.fromkeys((s.value for s in EndpointState), 0)
        for ep in endpoints.all():
            by_state[str(ep.state)] = by_state.get(str(ep.state), 0) + 1
        sample.endpoints = by_state
    identities = getattr(agent, "identities", None)
    if identities is not None:
        sample.identities = int(identities.status()["identities"])
    services = getattr(agent, "services", None)
    if services is not None:
        sample.lb = services.lb.status()
    policy = getattr(agent, "policy", None)
    if policy is not None:
        sample.policy = policy.status()
    mesh = getattr(agent, "mesh", None)
    if mesh is not None:
        clusters = mesh.status()["clusters"]
        sample.mesh = [
            MeshCluster(
                c["name"],
                bool(c["ready"]),
                float(c.get("last_failure_at") or 0.0),
                int(c.get("failures") or 0),
            )
            for c in clusters
        ]
    server = getattr(agent, "dns", None)
    if server is not None:
        sample.dns_rcodes = dict(server.rcodes)
        sample.dns_latency = server.latency
    return sample


def agent_families(sample: AgentSample, cni: CniStats) -> list[Metric]:
    """The families of one scrape (pure)."""
    out: list[Metric] = []
    if sample.datapath is not None:
        rows = sorted(sample.datapath, key=lambda r: (r.reason.name, r.direction))
        labels = ("reason", "direction")
        out.append(
            fam.labelled_counter(
                "glia_datapath_packets_total",
                "Packets the datapath counted, by verdict (FORWARDED or a drop reason) and "
                "direction (as `glia bpf metrics`).",
                labels,
                (((r.reason.name, r.direction), r.packets) for r in rows),
            )
        )
        out.append(
            fam.labelled_counter(
                "glia_datapath_bytes_total",
                "Bytes of the packets of glia_datapath_packets_total.",
                labels,
                (((r.reason.name, r.direction), r.bytes) for r in rows),
            )
        )
    if sample.endpoints is not None:
        out.append(
            fam.labelled_gauge(
                "glia_endpoints",
                "Local endpoints (container interfaces) of this node, by state.",
                ("state",),
                (((s,), n) for s, n in sorted(sample.endpoints.items())),
            )
        )
    if sample.identities is not None:
        out.append(
            fam.gauge(
                "glia_identities",
                "Security identities the agent knows (its cluster's and remote clusters').",
                sample.identities,
            )
        )
    if sample.lb is not None:
        for key, doc in (
            ("services", "Services programmed into the load-balancer maps."),
            ("frontends", "Service frontends (VIP:port/protocol) in the load-balancer maps."),
            ("backends", "Service backends in the load-balancer maps."),
        ):
            name = "glia_services" if key == "services" else f"glia_service_{key}"
            out.append(fam.gauge(name, doc, int(sample.lb.get(key) or 0)))
    if sample.policy is not None:
        out.append(
            fam.gauge(
                "glia_policies",
                "CiliumNetworkPolicies of the agent's cluster it has read.",
                int(sample.policy.get("policies") or 0),
            )
        )
        out.append(
            fam.gauge(
                "glia_policy_entries",
                "Policy rules programmed for local endpoints' identities (port ranges, "
                "before they become map entries).",
                int(sample.policy.get("entries") or 0),
            )
        )
    if sample.healthy is not None:
        out.append(
            fam.gauge(
                "glia_agent_healthy",
                "1 when every subsystem does its job (as `glia status`), else 0.",
                int(sample.healthy),
            )
        )
    out.append(
        fam.labelled_gauge(
            "glia_subsystem_status",
            "1 for each subsystem's current state (ok, degraded, failed), 0 for the others.",
            ("subsystem", "state"),
            (
                ((name, state), int(state == current))
                for name, current in sorted(sample.subsystems.items())
                for state in SUBSYSTEM_STATES
            ),
        )
    )
    if sample.mesh is not None:
        out.append(
            fam.gauge(
                "glia_clustermesh_remote_clusters",
                "Remote clusters configured in clustermesh_dir.",
                len(sample.mesh),
            )
        )
        out.append(
            fam.labelled_gauge(
                "glia_clustermesh_remote_cluster_ready",
                "1 when the remote cluster is synced (connected, listed, heartbeat fresh).",
                ("cluster",),
                (((c.name,), int(c.ready)) for c in sample.mesh),
            )
        )
        out.append(
            fam.labelled_gauge(
                "glia_clustermesh_remote_cluster_last_failure_timestamp_seconds",
                "Unix time of the remote cluster's latest failure (connection, "
                "admission, heartbeat); 0 when none was seen.",
                ("cluster",),
                (((c.name,), c.last_failure) for c in sample.mesh),
            )
        )
        out.append(
            fam.labelled_counter(
                "glia_clustermesh_remote_cluster_failures",
                "Distinct failures of the remote cluster since the agent started (a "
                "new error; the same error again is one failure).",
                ("cluster",),
                [((c.name,), c.failures) for c in sample.mesh],
            )
        )
    out.append(
        fam.counts(
            "glia_cni_requests_total",
            "CNI calls the agent served, by command and outcome (success or error).",
            ("command", "outcome"),
            cni.requests,
        )
    )
    out.append(
        fam.histograms(
            "glia_cni_duration_seconds",
            "Time the agent took to serve a CNI call, by command.",
            ("command",),
            cni.durations,
        )
    )
    if sample.dns_rcodes is not None:
        out.append(
            fam.labelled_counter(
                "glia_dns_queries_total",
                "DNS queries answered by the agent's DNS server, by response code.",
                ("rcode",),
                (
                    ((dns.rcode.to_text(dns.rcode.Rcode(c)),), n)
                    for c, n in sorted(sample.dns_rcodes.items())
                ),
            )
        )
    if sample.dns_latency is not None:
        out.append(
            fam.histograms(
                "glia_dns_duration_seconds",
                "Time from a DNS query's arrival to its answer being sent (forwarded ones "
                "include the upstream's).",
                (),
                {(): sample.dns_latency},
            )
        )
    return out


class AgentCollector:
    """The registry's collector: the families of the sample the scrape gathered last."""

    def __init__(self, cni: CniStats) -> None:
        self.cni = cni
        self.sample = AgentSample()

    def describe(self) -> list[Metric]:
        return []  # names vary with what runs: no registration-time check

    def collect(self) -> Iterable[Metric]:
        return agent_families(self.sample, self.cni)


class AgentMetrics:
    """One agent's registry: its collector and the process' own metrics."""

    def __init__(self, agent: Any, cni: CniStats) -> None:
        self._agent = agent
        self.collector = AgentCollector(cni)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)

    async def render(self) -> bytes:
        """The exposition of a fresh sample (text format 0.0.4)."""
        sample = await gather(self._agent)
        # No await between setting the sample and rendering it: concurrent
        # scrapes each render their own.
        self.collector.sample = sample
        return generate_latest(self.registry)
