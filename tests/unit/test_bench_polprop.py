"""The pure parts of bench/_polprop.py (policy propagation): the manifests it stores, the
choice of the flush that programmed a change, and the figures; and bench/policy.py's
target and merge of an earlier run's parts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _polprop as pp  # bench/ is a folder of scripts, not a package
import policy as pb
from glia.model.identity import NAMESPACE_LABEL
from glia.policy.engine import PolicyEngine
from glia.policy.entries import Action
from glia.policy.manifest import parse_policy

IDS = {role: 0x10000 | (300 + j) for j, role in enumerate(pp.ROLES)}


def engine_with(manifests: list[dict[str, Any]]) -> PolicyEngine:
    engine = PolicyEngine("c1")
    for role, number in IDS.items():
        engine.upsert_identity(number, {**pp.role_labels(role), NAMESPACE_LABEL: "default"}, "c1")
    engine.set_policies([parse_policy(m, cluster="c1") for m in manifests])
    return engine


def ingress_ports(engine: PolicyEngine, role: str, peer: int) -> set[tuple[int, int]]:
    got = engine.compute({**pp.role_labels(role), NAMESPACE_LABEL: "default"})
    return {
        (k.lo, k.hi)
        for k, v in got.entries.items()
        if k.direction.value == "ingress" and k.identity == peer and v.action is Action.ALLOW
    }


def test_the_changed_policy_alters_every_bench_subject() -> None:
    api = IDS[pp.PEER_ROLE]
    for port in (20001, 20002):
        engine = engine_with([pp.prop_manifest(port)])
        for role in pp.ROLES:  # one container of each role on every node
            assert (port, port) in ingress_ports(engine, role, api)
    a = engine_with([pp.prop_manifest(20001)]).compute(
        {**pp.role_labels("db"), NAMESPACE_LABEL: "default"}
    )
    b = engine_with([pp.prop_manifest(20002)]).compute(
        {**pp.role_labels("db"), NAMESPACE_LABEL: "default"}
    )
    assert a.entries != b.entries


def test_background_policies_are_valid_and_stay_below_the_changed_ports() -> None:
    docs = pp.background_manifests(100)
    assert len(docs) == 100
    assert len({d["metadata"]["name"] for d in docs}) == 100
    selecting = [
        d for d in docs if d["spec"]["endpointSelector"]["matchLabels"]["app"][3:] in pp.ROLES
    ]
    assert len(selecting) == 50
    for d in docs:
        parse_policy(d, cluster="c1")  # raises on anything invalid
        for rule in d["spec"].get("ingress", []) + d["spec"].get("egress", []):
            for pr in rule["toPorts"]:
                assert all(int(x["port"]) < pp.PORT_BASE for x in pr["ports"])
    assert pp.background_manifests(100) == docs  # the same every run
    # With the background, the changed policy still decides the api peer's new port.
    engine = engine_with([*docs, pp.prop_manifest(20005)])
    assert (20005, 20005) in ingress_ports(engine, "web", IDS[pp.PEER_ROLE])


def test_flush_after_needs_a_later_flush_that_wrote() -> None:
    assert pp.flush_after({"at": 10.5, "written": 3}, 10.0)
    assert not pp.flush_after({"at": 9.9, "written": 3}, 10.0)
    assert not pp.flush_after({"at": 10.5, "written": 0}, 10.0)
    assert not pp.flush_after({}, 10.0)


def test_rows_hold_port_wants_the_peer_port_and_allow() -> None:
    row = {
        "direction": "ingress",
        "proto": "TCP",
        "ports": [20003, 20003],
        "action": "allow",
        "peer_labels": ["app=pp-api", "bench=polprop"],
    }
    assert pp.rows_hold_port([row], 20003, "app=pp-api")
    assert not pp.rows_hold_port([row], 20004, "app=pp-api")
    assert not pp.rows_hold_port([row], 20003, "app=pp-web")
    assert not pp.rows_hold_port([{**row, "action": "deny"}], 20003, "app=pp-api")
    assert not pp.rows_hold_port([{**row, "direction": "egress"}], 20003, "app=pp-api")
    assert not pp.rows_hold_port([{**row, "ports": [20000, 20010]}], 20003, "app=pp-api")


def flush(at: float, latency: float = 8.0) -> dict[str, Any]:
    return {
        "at": at,
        "latency_ms": latency,
        "compute_ms": 2.0,
        "program_ms": 1.0,
        "subjects": 3,
        "written": 6,
    }


def test_figures_take_the_slowest_node_of_each_change() -> None:
    changes = [
        pp.Change(20001, 99.99, 100.0, {"c1/n1": flush(100.010), "c1/n2": flush(100.030)}),
        pp.Change(20002, 199.98, 200.0, {"c1/n1": flush(200.050), "c1/n2": flush(200.020)}),
    ]
    got = pp.figures(changes, timeout_s=10)
    assert got["samples_ms"] == pytest.approx([30.0, 50.0])
    assert got["every_node_ms"]["max"] == pytest.approx(50.0)
    assert got["per_node_ms"]["c1/n1"]["max"] == pytest.approx(50.0)
    assert got["per_node_ms"]["c1/n2"]["p50"] == pytest.approx(25.0)
    assert got["from_write_start_ms"]["max"] == pytest.approx(70.0)
    assert got["write_ms"]["p50"] == pytest.approx(15.0)
    assert got["agent_flush_ms"]["compute_ms"]["p50"] == 2.0
    # write returned -> flush end, less the agent's own latency (8 ms)
    assert got["agent_saw_change_ms"]["max"] == pytest.approx(42.0)
    assert got["timed_out"] == 0 and got["nodes"] == ["c1/n1", "c1/n2"]


def test_a_node_that_never_showed_a_change_counts_as_the_timeout() -> None:
    changes = [pp.Change(20001, 0.0, 1.0, {"c1/n1": flush(1.01), "c1/n2": None})]
    got = pp.figures(changes, timeout_s=10)
    assert got["timed_out"] == 1
    assert got["every_node_ms"]["max"] == 10000.0
    assert got["agent_flush_ms"]["latency_ms"]["n"] == 1
    with pytest.raises(ValueError):
        pp.figures([], 10)


def test_the_target_judges_p99_every_node_in_seconds() -> None:
    doc: dict[str, Any] = {"ratios": {}, "propagation": {"every_node_ms": {"p99": 42.0}}}
    got = pb.targets(doc)["policy_change_every_node"]
    assert got == {"value": 0.042, "limit": 1.0, "unit": "s", "met": True}
    doc["propagation"]["every_node_ms"]["p99"] = 1200.0
    assert pb.targets(doc)["policy_change_every_node"]["met"] is False
    assert pb.targets({"ratios": {}})["policy_change_every_node"]["met"] is None


def test_merge_keeps_the_parts_this_run_did_not_measure() -> None:
    previous = {
        "date": "d1",
        "host": {"glia_commit": "abc", "load_average_1m_before": 0.4},
        "program": [{"endpoints": 1000}],
        "enforcement": {"x": 1},
        "propagation": {"old": True},
    }
    doc = {"date": "d2", "propagation": {"new": True}}
    got = pb.merge_previous(doc, previous, {"propagation"})
    assert got["propagation"] == {"new": True}
    assert got["program"] == [{"endpoints": 1000}] and got["enforcement"] == {"x": 1}
    runs = got["part_runs"]
    assert {p: r["date"] for p, r in runs.items()} == {
        "program": "d1",
        "enforcement": "d1",
        "propagation": "d2",
    }
    assert runs["program"]["glia_commit"] == "abc"
    assert runs["program"]["load_average_1m_before"] == 0.4
    again = pb.merge_previous({"date": "d3", "service": {}}, got, {"service"})
    assert again["part_runs"]["propagation"]["date"] == "d2"
    assert again["part_runs"]["program"]["glia_commit"] == "abc"
    assert again["part_runs"]["service"]["date"] == "d3"
