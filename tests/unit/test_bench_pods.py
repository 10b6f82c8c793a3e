"""The pure parts of bench/pods.py's report (bench/_podsreport.py): --only's sections,
the result file's name, the ratios of a partial document and issue 10's speed targets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _podsreport import (  # bench/ is a folder of scripts, not a package
    SECTIONS,
    parse_sections,
    plot,
    ratios,
    result_stem,
    target,
    targets,
)
from dnslatency import worst_p99_us


def stats(p50: float, p99: float) -> dict[str, float]:
    return {"p50": p50, "p99": p99}


def doc_with(**parts: Any) -> dict[str, Any]:
    return {"benchmark": "pods", **parts}


CNI = {"add": stats(20.0, 40.0), "del": stats(30.0, 45.0)}
START = {
    "glia": {"run": stats(260.0, 400.0), "first_ping": stats(250.0, 390.0)},
    "none": {"run": stats(200.0, 300.0)},
}
EGRESS = {"masquerade_over_routed": 0.93, "gbit_s": {}, "paired_ratios": [0.9, 0.95]}
DNS = {
    "queries_per_kind": 500,
    "latency_us": {
        "service_a": stats(230.0, 450.0),
        "container_a": stats(190.0, 1000.0),
        "unknown_nxdomain": stats(130.0, 280.0),
    },
}


def test_parse_sections_keeps_run_order_and_drops_blanks() -> None:
    assert parse_sections("dns, egress") == ("egress", "dns")
    assert parse_sections("start,cni,") == ("cni", "start")
    assert parse_sections(",".join(reversed(SECTIONS))) == SECTIONS


@pytest.mark.parametrize("text", ["", " , ", "cni,bogus"])
def test_parse_sections_names_what_it_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a comma list of throughput"):
        parse_sections(text)


def test_parse_sections_names_the_unknown_section() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown: bogus, cnii"):
        parse_sections("bogus,cnii,dns")


def test_a_partial_run_never_takes_the_full_result_name() -> None:
    assert result_stem(SECTIONS) == "pods"
    assert result_stem(tuple(reversed(SECTIONS))) == "pods"
    assert result_stem(("egress", "dns")) == "pods-egress-dns"
    assert result_stem(("start", "cni")) == "pods-cni-start"


def test_target_compares_as_the_issue_says() -> None:
    assert target("cni_add_p50_ms", 24.9) == {"value": 24.9, "target": "< 25 ms", "met": True}
    assert target("cni_add_p50_ms", 25.0)["met"] is False
    assert target("start_run_p50_ratio", 1.3) == {"value": 1.3, "target": "<= 1.3", "met": True}
    assert target("start_run_p50_ratio", 1.31)["met"] is False
    assert target("egress_ratio", 0.9) == {"value": 0.9, "target": ">= 0.9", "met": True}
    assert target("egress_ratio", 0.89)["met"] is False
    assert target("dns_p99_ms", 0.999) == {"value": 0.999, "target": "< 1 ms", "met": True}
    assert target("dns_p99_ms", None) == {"value": None, "target": "< 1 ms", "met": None}


def test_targets_of_a_full_document() -> None:
    got = targets(doc_with(cni_ms=CNI, container_start_ms=START, egress=EGRESS, dns=DNS))
    assert got == {
        "cni_add_p50_ms": {"value": 20.0, "target": "< 25 ms", "met": True},
        "cni_del_p50_ms": {"value": 30.0, "target": "< 25 ms", "met": False},
        "start_run_p50_ratio": {"value": 1.3, "target": "<= 1.3", "met": True},
        "egress_ratio": {"value": 0.93, "target": ">= 0.9", "met": True},
        # The worst kind's p99 counts: every answer is to be under 1 ms.
        "dns_p99_ms": {"value": 1.0, "target": "< 1 ms", "met": False},
    }


def test_targets_judge_the_unrounded_figure() -> None:
    egress = {**EGRESS, "masquerade_over_routed": 0.89996}
    got = targets(doc_with(egress=egress))["egress_ratio"]
    assert got == {"value": 0.9, "target": ">= 0.9", "met": False}


def test_targets_of_a_partial_document_name_only_what_it_measured() -> None:
    assert set(targets(doc_with(egress=EGRESS, dns=DNS))) == {"egress_ratio", "dns_p99_ms"}
    assert targets(doc_with()) == {}


def test_a_start_ratio_without_a_reference_is_not_judged() -> None:
    start = {**START, "none": {"run": stats(0.0, 0.0)}}
    got = targets(doc_with(container_start_ms=start))["start_run_p50_ratio"]
    assert got == {"value": None, "target": "<= 1.3", "met": None}


def test_ratios_of_a_partial_document() -> None:
    got = ratios(doc_with(container_start_ms=START, egress=EGRESS))
    assert got == {
        "start_run_p50.glia/none": 1.3,
        "start_run_p99.glia/none": 1.33,
        "egress.masquerade/routed": 0.93,
    }


def test_ratios_of_paths_compare_glia_with_each_reference() -> None:
    thr = {
        "same_node": {"glia": {"median": 9.0}, "kernel_routing": {"median": 10.0}},
        "across_nodes": {
            "glia": {"median": 6.0},
            "kernel_routing": {"median": 8.0},
            "kernel_vxlan": {"median": 5.0},
        },
    }
    one = {"rr": stats(30.0, 60.0), "connect_rr": stats(100.0, 200.0)}
    two = {"rr": stats(20.0, 40.0), "connect_rr": stats(50.0, 100.0)}
    lat = {"same_node": {"glia": one, "kernel_routing": two}}
    got = ratios(doc_with(throughput_gbps=thr, latency_us=lat))
    assert got == {
        "throughput.same_node.glia/kernel_routing": 0.9,
        "throughput.across_nodes.glia/kernel_routing": 0.75,
        "throughput.across_nodes.glia/kernel_vxlan": 1.2,
        "latency_rr_p50.same_node.glia/kernel_routing": 1.5,
        "latency_rr_p99.same_node.glia/kernel_routing": 1.5,
        "latency_connect_rr_p50.same_node.glia/kernel_routing": 2.0,
        "latency_connect_rr_p99.same_node.glia/kernel_routing": 2.0,
    }


def test_worst_p99_is_the_highest_kind() -> None:
    assert worst_p99_us(DNS["latency_us"]) == 1000.0


def test_plot_of_a_partial_run_marks_what_it_did_not_measure(tmp_path: Path) -> None:
    egress = {
        **EGRESS,
        "gbit_s": {
            k: {"median": g} for k, g in (("masquerade", 9.3), ("routed", 10.0), ("node", 12.0))
        },
    }
    doc = doc_with(
        date="2026-12-06T20:00:00+00:00",
        quick=True,
        host={
            "kernel": "6.18",
            "cpus": 2,
            "load_average_1m_before": 1.0,
            "load_average_1m_after": 1.2,
        },
        sections=["egress", "dns"],
        egress=egress,
        dns=DNS,
    )
    doc["targets"] = targets(doc)
    plot(doc, tmp_path / "pods-egress-dns.png")
    assert (tmp_path / "pods-egress-dns.png").stat().st_size > 10_000
