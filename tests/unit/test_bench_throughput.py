"""The pure parts of bench/_throughput.py: a path's median and spread, and the paired
glia / reference ratio per round that bench/pods.py and bench/mesh.py quote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import BenchError  # bench/ is a folder of scripts, not a package
from _throughput import IperfRun, KernelReference, paired_ratio, path_stats


def runs(*gbps: float) -> list[IperfRun]:
    return [IperfRun(g, retransmits=i, load_1m=1.5) for i, g in enumerate(gbps)]


def test_path_stats_median_quartiles_and_spread() -> None:
    got = path_stats(runs(10.0, 12.0, 8.0, 11.0, 9.0))
    assert got["median"] == 10.0
    assert (got["p25"], got["p75"]) == (9.0, 11.0)
    assert (got["min"], got["max"]) == (8.0, 12.0)
    assert got["spread"] == 0.2  # (11 - 9) / 10
    assert got["runs"] == [10.0, 12.0, 8.0, 11.0, 9.0]
    assert got["retransmits"] == [0, 1, 2, 3, 4]
    assert got["load_1m"] == [1.5] * 5


def test_paired_ratio_compares_runs_of_the_same_round() -> None:
    # Round 2 is slow for both (a loaded machine): its ratio is still 1.
    got = paired_ratio(runs(10.0, 5.0, 12.0), runs(10.0, 5.0, 10.0))
    assert got["rounds"] == [1.0, 1.0, 1.2]
    assert got["median"] == 1.0
    assert got["glia_not_slower"] == 3


def test_paired_ratio_counts_rounds_glia_lost() -> None:
    got = paired_ratio(runs(8.0, 9.0), runs(10.0, 10.0))
    assert got["rounds"] == [0.8, 0.9]
    assert got["median"] == pytest.approx(0.85)
    assert got["glia_not_slower"] == 0


def test_paired_ratio_needs_rounds_of_both() -> None:
    with pytest.raises(ValueError):
        paired_ratio(runs(1.0, 2.0), runs(1.0))


def test_paired_ratio_without_reference_throughput() -> None:
    got = paired_ratio(runs(1.0), runs(0.0))
    assert got["median"] is None
    assert got["rounds"] == []


def test_reference_names_start_with_glia() -> None:
    assert KernelReference("gliavx-ref-").ns("p1") == "gliavx-ref-p1"
    with pytest.raises(BenchError, match="must start with glia"):
        KernelReference("ref-")
