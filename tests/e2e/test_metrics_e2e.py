"""A lab agent's Prometheus metrics: scraped over TCP on NODE_IP:9962 from the node's
namespace, and with ``glia metrics``, after a pod was started and sent traffic.

The lab sets ``prometheus_listen`` to the node's address (glia.lab.configs), so
the scrape is what a Prometheus inside the lab's underlay would read.
"""

from __future__ import annotations

import sys
import uuid

import pytest
from labhelpers import Workload, glia_ok, reaches, wait_for
from prometheus_client.parser import text_string_to_metric_families

from glia.lab.configs import AGENT_METRICS_PORT, OPERATOR_METRICS_PORT
from glia.lab.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NODE = "c1/n1"
SCRAPE = """
import sys, urllib.request
print(urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode())
"""
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def _scrape(lab: Lab, node: str = NODE, port: int = AGENT_METRICS_PORT) -> Samples:
    listen = f"{lab.node(node).ip}:{port}"
    r = lab.node_exec(node, [sys.executable, "-c", SCRAPE, listen])
    assert r.returncode == 0, r.stderr
    return _parse(r.stdout)


def _packets(got: Samples, reason: str) -> float:
    return sum(
        v
        for (n, labels), v in got.items()
        if n == "glia_datapath_packets_total" and ("reason", reason) in labels
    )


def test_a_lab_agent_serves_its_metrics(lab: Lab, work: Workload) -> None:
    assert lab.agent_config(NODE).prometheus_listen == f"{lab.node(NODE).ip}:{AGENT_METRICS_PORT}"
    tag = uuid.uuid4().hex[:6]
    a = work.container(NODE, f"glia-met-a-{tag}", {"app": "metrics-a"})
    b = work.container("c1/n2", f"glia-met-b-{tag}", {"app": "metrics-b"})
    work.endpoint_ready(a, b)
    before = _scrape(lab)
    reaches(lab, b, a)  # ping and HTTP from c1/n2 to the pod on c1/n1
    got = wait_for(
        "forwarded packets counted in /metrics",
        lambda: (
            (g := _scrape(lab)) and _packets(g, "FORWARDED") > _packets(before, "FORWARDED") and g
        ),
    )
    assert got[("glia_endpoints", (("state", "ready"),))] >= 1
    assert got[("glia_identities", ())] >= 2
    assert got[("glia_agent_healthy", ())] == 1
    assert got[("glia_subsystem_status", (("state", "ok"), ("subsystem", "datapath")))] == 1
    assert got[("glia_cni_requests_total", (("command", "ADD"), ("outcome", "success")))] >= 1
    assert got[("glia_cni_duration_seconds_count", (("command", "ADD"),))] >= 1
    # The API socket's copy, through the CLI.
    cli = _parse(glia_ok(lab, "metrics", "--node", NODE))
    assert (
        cli[("glia_endpoints", (("state", "ready"),))]
        == got[("glia_endpoints", (("state", "ready"),))]
    )


def test_a_lab_operator_serves_its_metrics(lab: Lab) -> None:
    """The operator of c1 serves on its node's address, port 9963, and is the leader
    there (the lab runs one per cluster)."""
    node = lab.topo.cluster("c1").operator_node.ref
    got = wait_for(
        "the operator of c1 leading in its metrics",
        lambda: (
            (g := _scrape(lab, node, OPERATOR_METRICS_PORT))
            and g.get(("glia_operator_leader", ())) == 1
            and g
        ),
    )
    assert ("glia_operator_services", ()) in got  # the leader's Service resolver
    assert not any(name.startswith("glia_endpoints") for name, _ in got)  # not an agent's
