"""The pure parts of bench/chaining.py: the order of the kinds per round, the figures
and ratios of a run's raw samples, the ptp-alone conflist, the address checks, the plot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import BenchError  # bench/ is a folder of scripts, not a package
from _throughput import IperfRun
from chaining import (
    CHAINED,
    KINDS,
    NATIVE,
    PTP,
    PTP_NETWORK,
    PTP_SUBNET,
    check_blocks,
    latency_figures,
    plot,
    ptp_conflist,
    report,
    rotated,
)
from glia.cni.config import chained_conflist


def runs(*gbps: float) -> list[IperfRun]:
    return [IperfRun(gbps=g, retransmits=0, load_1m=1.0) for g in gbps]


def sample_report() -> dict[str, object]:
    gbps = {PTP: runs(10.0, 8.0, 12.0), CHAINED: runs(12.0, 8.0, 15.0), NATIVE: runs(9, 8, 12)}
    rr = {
        PTP: [[100.0, 100.0, 300.0], [80.0, 80.0, 80.0], [90.0, 90.0, 90.0]],
        CHAINED: [[50.0, 50.0, 50.0], [80.0, 80.0, 80.0], [45.0, 45.0, 45.0]],
        NATIVE: [[100.0] * 3, [80.0] * 3, [90.0] * 3],
    }
    crr = {k: [[200.0 * (i + 1)] for i in range(3)] for k in KINDS}
    crr[CHAINED] = [[100.0], [400.0], [600.0]]
    return report(gbps, rr, crr)


def test_rotated_puts_every_kind_first_once_per_len_rounds() -> None:
    orders = [rotated(KINDS, r) for r in range(4)]
    assert orders[0] == [PTP, CHAINED, NATIVE]
    assert orders[1] == [CHAINED, NATIVE, PTP]
    assert orders[2] == [NATIVE, PTP, CHAINED]
    assert orders[3] == orders[0]
    assert all(sorted(o) == sorted(KINDS) for o in orders)


def test_latency_figures_pool_the_rounds_and_keep_each_rounds_p50() -> None:
    got = latency_figures([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0, 40.0]])
    assert got["n"] == 7
    assert got["p50"] == 10.0  # the 4th of 7 pooled values
    assert got["max"] == 40.0
    assert got["round_p50"] == [2.0, 25.0]


def test_report_ratios_are_kind_over_ptp_medians_and_paired_per_round() -> None:
    doc = sample_report()
    tput = doc["throughput_gbps"]
    assert isinstance(tput, dict)
    assert tput[PTP]["median"] == 10.0 and tput[CHAINED]["median"] == 12.0
    ratios = doc["ratios"]
    assert isinstance(ratios, dict)
    chained = ratios["chained_over_ptp"]
    assert chained["throughput"] == 1.2
    # per round 1.2, 1.0, 1.25: the paired median is not the ratio of medians
    assert chained["throughput_paired"]["rounds"] == [1.2, 1.0, 1.25]
    assert chained["throughput_paired"]["median"] == 1.2
    # pooled p50: chained 50, ptp 90 -> 0.556; rounds 0.5, 1.0, 0.5
    assert chained["rr_p50"] == 0.556
    assert chained["rr_p50_paired"]["rounds"] == [0.5, 1.0, 0.5]
    assert chained["rr_p50_paired"]["median"] == 0.5
    assert chained["connect_rr_p50_paired"]["rounds"] == [0.5, 1.0, 1.0]
    native = ratios["native_over_ptp"]
    assert native["throughput"] == 0.9
    assert native["rr_p50"] == 1.0
    assert set(chained) == set(native)


def test_report_paired_ratio_skips_rounds_with_a_zero_reference() -> None:
    gbps = {PTP: runs(0.0, 10.0), CHAINED: runs(5.0, 5.0), NATIVE: runs(1.0, 1.0)}
    lat = {k: [[10.0], [10.0]] for k in KINDS}
    doc = report(gbps, lat, lat)
    assert doc["ratios"]["chained_over_ptp"]["throughput_paired"]["rounds"] == [0.5]


def test_report_refuses_rounds_of_unequal_length() -> None:
    gbps = {PTP: runs(1.0, 2.0), CHAINED: runs(1.0), NATIVE: runs(1.0, 2.0)}
    lat = {k: [[10.0], [10.0]] for k in KINDS}
    with pytest.raises(ValueError):
        report(gbps, lat, lat)


def test_ptp_conflist_is_the_chained_ptp_without_glia_in_its_own_subnet() -> None:
    chained = chained_conflist(
        "10.1.0.192/26", "/run/glia/agent.sock", nameservers=("192.0.2.10",), ipam_data_dir="/x"
    )
    conf = ptp_conflist(chained, "/lab/n1/cni-ipam")
    assert conf["name"] == PTP_NETWORK
    assert conf["cniVersion"] == chained["cniVersion"]
    assert [p["type"] for p in conf["plugins"]] == ["ptp", "tuning"]  # IPv6 off in both
    ptp = conf["plugins"][0]
    assert ptp["ipMasq"] is False
    assert ptp["mtu"] == chained["plugins"][0]["mtu"]
    assert ptp["ipam"]["ranges"] == [[{"subnet": PTP_SUBNET, "gateway": "10.250.0.1"}]]
    assert ptp["ipam"]["dataDir"] == "/lab/n1/cni-ipam"
    assert ptp["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    # the chained conflist the lab keeps using is left as it was
    assert chained["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.1.0.192/26"
    assert [p["type"] for p in chained["plugins"]] == ["ptp", "tuning", "glia-cni"]


def test_ptp_conflist_refuses_a_conflist_without_ptp() -> None:
    with pytest.raises(BenchError, match="0 ptp plugins"):
        ptp_conflist({"name": "x", "plugins": [{"type": "glia-cni"}]}, "/d")


def found(ptp: str, chained: str, native: str) -> dict[str, tuple[str, str, str]]:
    return {PTP: ("c", "s", ptp), CHAINED: ("c", "s", chained), NATIVE: ("c", "s", native)}


def test_check_blocks_accepts_each_kind_in_its_block() -> None:
    assert check_blocks("10.1.0.192/26", found("10.250.0.3", "10.1.0.195", "10.1.0.3"))


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        (("10.1.0.4", "10.1.0.195", "10.1.0.3"), "ptp server pod has 10.1.0.4: expected in 10.250"),
        (
            ("10.250.0.3", "10.1.0.5", "10.1.0.3"),
            "chained server pod has 10.1.0.5: expected in the",
        ),
        (
            ("10.250.0.3", "10.1.0.195", "10.1.0.200"),
            "native server pod has 10.1.0.200: expected ou",
        ),
        (("10.250.0.3", "10.1.0.195", "10.250.0.9"), "native server pod has 10.250.0.9"),
    ],
)
def test_check_blocks_names_the_pod_out_of_place(
    addresses: tuple[str, str, str], message: str
) -> None:
    with pytest.raises(BenchError, match=message):
        check_blocks("10.1.0.192/26", found(*addresses))


def test_check_blocks_needs_the_agents_block() -> None:
    with pytest.raises(BenchError, match="no chained_cidr"):
        check_blocks(None, found("10.250.0.3", "10.1.0.195", "10.1.0.3"))


def test_plot_writes_a_png(tmp_path: Path) -> None:
    doc = {
        **sample_report(),
        "rounds": 3,
        "host": {
            "kernel": "6.x",
            "cpus": 2,
            "load_average_1m_before": 1.0,
            "load_average_1m_after": 1.5,
        },
    }
    out = tmp_path / "chaining.png"
    plot(doc, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
