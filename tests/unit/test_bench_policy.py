"""The pure parts of bench/policy.py: paired rounds and their ratios, the bench pods'
own policies (what the enforcement runs allow), ratios and target verdicts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import policy as pb  # bench/ is a folder of scripts, not a package
from glia.model.identity import ReservedIdentity
from glia.policy.engine import PolicyEngine
from glia.policy.entries import Action


def test_paired_alternates_the_order_and_takes_per_round_ratios() -> None:
    calls: list[str] = []
    values = {"a": iter([10.0, 20.0, 10.0]), "b": iter([9.0, 22.0, 5.0])}

    def measure(name: str) -> float:
        calls.append(name)
        return next(values[name])

    got = pb.paired(("a", "b"), 3, measure)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert got["ratio_rounds"] == [0.9, 1.1, 0.5]
    assert got["ratio"] == 0.9
    assert got["a"]["median"] == 10.0


def test_paired_with_several_figures_keeps_each() -> None:
    seq = iter([{"rate": 10.0, "per_cpu_s": 100.0}, {"rate": 5.0, "per_cpu_s": 99.0}] * 2)
    got = pb.paired(("x", "y"), 2, lambda _name: next(seq))
    assert got["ratio"] == got["rate"]["ratio"]
    assert got["per_cpu_s"]["x"]["runs"] == [100.0, 99.0]
    # round 2 ran y first: y got the first value of the pair
    assert got["per_cpu_s"]["ratio_rounds"] == [0.99, 1.01]


def test_bench_policies_allow_the_clients_to_the_servers_only() -> None:
    engine = PolicyEngine("c1")
    for role, number in pb.POD_IDENTITY.items():
        engine.upsert_identity(number, pb.pod_labels(role), "c1")
    engine.set_policies(pb.bench_policies())
    client = engine.compute(pb.pod_labels("client"))
    direct = engine.compute(pb.pod_labels("direct"))
    assert client.egress_enforced and not client.ingress_enforced
    assert direct.ingress_enforced and not direct.egress_enforced

    def allowed(peer: int, port: int) -> bool:
        return any(
            k.identity == peer and k.lo <= port <= k.hi and v.action is Action.ALLOW
            for k, v in client.entries.items()
            if k.direction.value == "egress"
        )

    direct_id = pb.POD_IDENTITY["direct"]
    assert all(allowed(direct_id, port) for port in (8080, 8081, 8082, 5201))
    assert not allowed(direct_id, 8079)  # the probe's port: dropped by policy
    from_client = {
        k.identity
        for k in direct.entries
        if k.direction.value == "ingress" and k.lo <= 8080 <= k.hi
    }
    # the two clients, and the node (its implicit allow), nothing else
    assert from_client == {
        pb.POD_IDENTITY["client"],
        pb.POD_IDENTITY["client-tc"],
        int(ReservedIdentity.HOST),
    }


def test_bench_pod_identities_never_meet_the_synthetic_clusters() -> None:
    cluster = pb.compute(100, 10)
    synthetic = set(cluster.by_subject) - set(pb.POD_IDENTITY.values())
    assert synthetic and not synthetic & set(pb.POD_IDENTITY.values())
    assert max(synthetic) < min(pb.POD_IDENTITY.values())


def doc(**ratios: float) -> dict[str, Any]:
    return {
        "program": [
            {"endpoints": 1000, "rules": 1000, "total_s": 0.4},
            {"endpoints": 100, "rules": 10, "total_s": 0.01},
        ],
        "ratios": ratios,
    }


def test_targets_judge_each_figure_against_its_limit() -> None:
    got = pb.targets(doc(**{"enforcement.rate": 0.96, "enforcement.throughput": 0.97}))
    assert got["compute_and_program_1000_rules_1000_endpoints"]["met"] is True
    assert got["enforcement_rate_ratio"]["met"] is True
    assert got["enforcement_throughput_ratio"]["met"] is False
    assert got["service_per_packet_rate_ratio"]["met"] is None  # not measured
