"""The pure parts of bench/mesh.py (bench/_meshdata.py): synthetic remote state that the
agent's own checks accept, transaction batches, and the report's figures and verdicts."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _meshdata import (  # bench/ is a folder of scripts, not a package
    Request,
    SyntheticCluster,
    batches,
    failover_figures,
    free_blocks,
    latency_summary,
    propagation_record,
    return_figures,
    synthetic_records,
    target,
)
from _meshreport import targets
from glia.agent.identities import ClusterIdentities
from glia.agent.ipcache_table import PARTS, ClusterTable
from glia.kvstore import keys
from glia.model import codec
from glia.validate.bounds import ClusterBounds
from glia.validate.services import check_cluster_service

BOUNDS = ClusterBounds.of("c2", 2, "10.2.0.0/16", "100.66.0.0/15")


def spec(nodes: int = 4, pods: int = 10, identities: int = 3) -> SyntheticCluster:
    blocks = free_blocks("10.2.0.0/16", ["10.2.0.0/24"], 24, nodes)
    return SyntheticCluster("c2", 2, nodes, pods, identities, tuple(blocks), "198.19.2.1")


def test_synthetic_records_pass_the_importing_agents_checks() -> None:
    s = spec()
    records = list(synthetic_records(s))
    assert len({k for k, _ in records}) == len(records)
    table = ClusterTable(BOUNDS)
    idents = ClusterIdentities(BOUNDS)
    for key, value in records:
        if key.startswith(keys.IDENTITIES):
            if "/id/" in key:
                idents.upsert(key, value)
            continue
        part = "nodes" if key.startswith(keys.NODES) else "ip"
        if key.startswith(keys.PODCIDRS):
            if "/cidrs/" in key:
                continue  # the block index: the operator's, nobody imports it
            part = "podcidrs"
        table.upsert(part, key, value, create_revision=1)
    table.synced_parts.update(PARTS)
    assert table.rejected() == {}
    assert idents.rejects.count == 0 and len(idents.by_id) == 3
    assert table.placed == s.endpoints == 40
    assert len(table.valid_nodes) == 4
    # The node IPs are /32 entries too (remote nodes), so placed + nodes prefixes.
    assert len(table.wanted()) == 40 + 4
    # syn-0003's block is the fourth free one, 10.2.4.0/24; pods from .2 on.
    assert table.want("10.2.4.11/32") is not None
    assert table.want("10.2.4.12/32") is None


def test_free_blocks_skip_the_blocks_in_use() -> None:
    got = free_blocks("10.2.0.0/16", ["10.2.0.0/24", "10.2.2.0/23"], 24, 3)
    assert got == ["10.2.1.0/24", "10.2.4.0/24", "10.2.5.0/24"]
    with pytest.raises(ValueError, match="free /24 blocks"):
        free_blocks("10.2.0.0/23", ["10.2.0.0/24"], 24, 2)


def test_a_block_too_small_for_its_pods_is_refused() -> None:
    with pytest.raises(ValueError, match="holds 253 pods"):
        SyntheticCluster("c2", 2, 1, 300, 1, ("10.2.1.0/24",), "198.19.2.1")


def test_batches_respect_op_and_byte_limits() -> None:
    records = [(f"k{i}", b"x" * 10) for i in range(25)]
    assert [len(b) for b in batches(iter(records), 10, 1 << 20)] == [10, 10, 5]
    small = list(batches(iter(records), 100, 3 * (2 + 10 + 16)))
    assert all(len(b) <= 3 for b in small) and sum(map(len, small)) == 25


def test_propagation_record_is_a_valid_global_service_of_cluster_b() -> None:
    ips = ["10.2.0.250", "10.2.0.249"]
    svc = propagation_record("c2", 2, "prop", "100.66.0.11", 80, "n1", ips, [True, False])
    cidrs = {"n1": ipaddress.IPv4Network("10.2.0.0/24")}
    checked = check_cluster_service(
        keys.service("c2", "default", "prop"), codec.encode(svc), BOUNDS, cidrs
    )
    assert checked.dropped == []
    assert checked.service.global_
    assert [b.ready for b in checked.service.backends] == [True, False]


def test_latency_summary_and_targets() -> None:
    got = latency_summary([float(v) for v in range(1, 101)])
    assert got["n"] == 100 and got["p50"] == 50.5 and got["max"] == 100
    assert got["p99"] == pytest.approx(99.0, abs=0.1)
    assert target("x", 12.0, 100, "ms")["met"] is True
    assert target("x", 100.0, 100, "ms")["met"] is False
    assert target("x", None, 100, "ms")["met"] is None
    with pytest.raises(ValueError):
        latency_summary([])


def test_failover_figures() -> None:
    local, remote = {"a"}, {"b"}
    reqs = [Request(t / 10, t / 10 + 0.01, "a") for t in range(10)]  # 0.0 .. 0.9 local
    reqs += [Request(1.0, 1.01, None, "refused"), Request(1.1, 1.11, None, "refused")]
    reqs += [Request(1.2, 1.21, "b"), Request(1.3, 1.31, "b")]
    got = failover_figures(reqs, stopped=0.95, local=local, remote=remote)
    assert got["requests"] == 14 and got["failed"] == 2
    assert got["failed_fraction"] == round(2 / 14, 5)
    assert got["recovered_s"] == pytest.approx(0.16)
    assert got["first_remote_s"] == pytest.approx(0.26)
    assert got["error_window_s"] == pytest.approx(0.11)
    assert got["errors"] == {"refused": 2}
    assert got["after_stop"] == {"local": 0, "remote": 2, "failed": 2, "local_after_recovery": 0}
    back = return_figures([*reqs, Request(2.0, 2.01, "a")], restarted=1.5, local=local)
    assert back == {"first_local_s": pytest.approx(0.51), "failed": 0, "requests": 1}


def test_failover_without_errors_recovers_at_once() -> None:
    reqs = [Request(0.0, 0.01, "a"), Request(1.0, 1.01, "b")]
    got = failover_figures(reqs, stopped=0.5, local={"a"}, remote={"b"})
    assert got["failed"] == 0 and got["recovered_s"] == 0.0 and got["failed_fraction"] == 0.0


def _doc(scale: tuple[int, ...], endpoints: int) -> dict[str, Any]:
    params = {
        "health_interval": 0.2,
        "health_failures": 2,
        "load_seconds": 60.0,
        "scale_clusters": list(scale),
    }
    return {
        "params": params,
        "propagation": {"every_observer_ms": {"p99": 12.0}},
        "scaling": {
            str(k): {"propagation": {"every_observer_ms": {"p99": 40.0 * k}}} for k in scale
        },
        "failover": {"recovered_s": 0.61, "failed_fraction": 0.005},
        "import": {"endpoints": endpoints, "synced_s": 9.0, "maps_programmed_s": 10.5},
    }


def test_targets_judge_each_figure_against_the_issue() -> None:
    got = targets(_doc((2, 4, 8, 16), 100_000))
    verdicts = {name: t["met"] for name, t in got.items()}
    assert verdicts == {
        "propagation_p99_2_clusters": True,
        "propagation_p99_16_clusters": True,  # 640 ms < 1 s
        "failover_time": False,  # 0.61 s > 0.4 s detection + 0.2 s
        "failover_failed_fraction": True,
        "import_100k_endpoints": True,
        "import_100k_maps": False,
    }
    assert got["failover_time"]["limit"] == 0.6
    assert "60 s" in got["failover_failed_fraction"]["what"]


def test_targets_not_measured_by_a_quick_run_are_null() -> None:
    got = targets(_doc((2, 4), 10_000))
    for name in ("propagation_p99_16_clusters", "import_100k_endpoints", "import_100k_maps"):
        assert got[name]["met"] is None and got[name]["value"] is None
    assert "4 clusters" in got["propagation_p99_16_clusters"]["note"]
    assert "10000" in got["import_100k_endpoints"]["note"]
    assert got["import_100k_maps"]["note"] == got["import_100k_endpoints"]["note"]


def test_the_failed_fraction_of_a_short_load_run_is_not_judged() -> None:
    doc = _doc((2, 4), 10_000)
    doc["params"]["load_seconds"] = 20.0
    doc["failover"]["failed_fraction"] = 0.02
    got = targets(doc)["failover_failed_fraction"]
    assert got["met"] is None and got["value"] == 0.02 and "20 s" in got["note"]
