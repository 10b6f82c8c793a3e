"""The report of ``bench/pods.py``: its sections, ratios, the issue's targets, the plot.

Called by ``bench/pods.py`` once its sections are measured; everything here
but :func:`plot` is pure (a document in, figures out), so the unit tests
(tests/unit/test_bench_pods.py) run it on documents they write.
"""

from __future__ import annotations

import argparse
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import GLIA_COLOR, Bar, Group, bar_panel, ratio  # bench/ is a folder of scripts
from dnslatency import worst_p99_us

GLIA, ROUTING, VXLAN = "glia", "kernel_routing", "kernel_vxlan"
SAME, ACROSS = "same_node", "across_nodes"

# What ``--only`` picks from, in the order a run measures them.
SECTIONS = ("throughput", "latency", "cni", "start", "egress", "dns")

# The targets of issue 10 item 8: key -> (comparison, limit, unit).
TARGETS: dict[str, tuple[str, float, str]] = {
    "cni_add_p50_ms": ("<", 25.0, "ms"),
    "cni_del_p50_ms": ("<", 25.0, "ms"),
    "start_run_p50_ratio": ("<=", 1.3, ""),
    "egress_ratio": (">=", 0.9, ""),
    "dns_p99_ms": ("<", 1.0, "ms"),
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
}
SECOND_SHADE = "#7fb3d5"


def parse_sections(text: str) -> tuple[str, ...]:
    """``--only``'s comma list (``cni,start``) as sections in run order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--only {text!r}: expected a comma list of {', '.join(SECTIONS)}"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return tuple(s for s in SECTIONS if s in names)


def result_stem(sections: Sequence[str]) -> str:
    """``pods`` for a run of every section; ``pods-<sections>`` for a partial run, so
    that one never overwrites the full result in the same folder."""
    if set(sections) == set(SECTIONS):
        return "pods"
    return "-".join(["pods", *(s for s in SECTIONS if s in sections)])


def target(key: str, value: float | None) -> dict[str, Any]:
    """The verdict of TARGETS[``key``] on ``value`` (``met`` None when not measured)."""
    op, limit, unit = TARGETS[key]
    text = f"{op} {limit:g}" + (f" {unit}" if unit else "")
    met = None if value is None else _COMPARE[op](value, limit)
    return {"value": value, "target": text, "met": met}


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    """The targets whose sections ``doc`` has, each with its figure and verdict.

    The verdict is on the unrounded figure; ``value`` is rounded to 3 digits.
    """
    values: dict[str, float | None] = {}
    cni = doc.get("cni_ms")
    if cni:
        values["cni_add_p50_ms"] = cni["add"]["p50"]
        values["cni_del_p50_ms"] = cni["del"]["p50"]
    start = doc.get("container_start_ms")
    if start:
        none_p50 = start["none"]["run"]["p50"]
        values["start_run_p50_ratio"] = start["glia"]["run"]["p50"] / none_p50 if none_p50 else None
    egress = doc.get("egress")
    if egress:
        values["egress_ratio"] = egress["masquerade_over_routed"]
    dns = doc.get("dns")
    if dns:
        values["dns_p99_ms"] = worst_p99_us(dns["latency_us"]) / 1000
    out = {}
    for key, value in values.items():
        verdict = target(key, value)
        verdict["value"] = None if value is None else round(value, 3)
        out[key] = verdict
    return out


def ratios(doc: dict[str, Any]) -> dict[str, float | None]:
    """glia / reference for every figure of ``doc`` that has a reference (throughput:
    higher is better for glia; latencies and times: lower is better); egress:
    masquerade / routed."""
    out: dict[str, float | None] = {}
    for scenario, variants in doc.get("throughput_gbps", {}).items():
        for ref in (ROUTING, VXLAN):
            if ref in variants:
                g, r = variants[GLIA]["median"], variants[ref]["median"]
                out[f"throughput.{scenario}.glia/{ref}"] = ratio(g, r)
    for scenario, variants in doc.get("latency_us", {}).items():
        for ref in (ROUTING, VXLAN):
            if ref in variants:
                for kind in ("rr", "connect_rr"):
                    for q in ("p50", "p99"):
                        key = f"latency_{kind}_{q}.{scenario}.glia/{ref}"
                        out[key] = ratio(variants[GLIA][kind][q], variants[ref][kind][q])
    for key, paired in doc.get("throughput_paired_ratio", {}).items():
        out[f"throughput_paired.{key}"] = paired["median"]
    start = doc.get("container_start_ms")
    if start:
        for q in ("p50", "p99"):
            glia, none = start["glia"]["run"][q], start["none"]["run"][q]
            out[f"start_run_{q}.glia/none"] = ratio(glia, none)
    egress = doc.get("egress")
    if egress:
        out["egress.masquerade/routed"] = round(egress["masquerade_over_routed"], 3)
    return out


# --- the plot ---------------------------------------------------------------------


def _absent(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not measured in this run", ha="center", va="center")
    ax.set_axis_off()


def _targets_panel(ax: Any, verdicts: dict[str, Any]) -> None:
    ax.set_axis_off()
    ax.set_title("issue 10's speed targets", fontsize=10)
    if not verdicts:
        ax.text(0.5, 0.5, "no target measured in this run", ha="center", va="center")
        return
    verdict_text = {True: "met", False: "NOT met", None: "-"}
    rows = [
        [key, "-" if v["value"] is None else f"{v['value']:g}", v["target"], verdict_text[v["met"]]]
        for key, v in verdicts.items()
    ]
    table = ax.table(
        cellText=rows,
        colLabels=["target", "value", "wanted", "verdict"],
        colWidths=[0.4, 0.18, 0.2, 0.2],
        loc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
    for i, v in enumerate(verdicts.values(), start=1):
        if v["met"] is not None:
            table[i, 3].set_facecolor("#b7e1b0" if v["met"] else "#f2b5ad")


_NAMES = {GLIA: "glia (eBPF)", ROUTING: "kernel routing", VXLAN: "kernel VXLAN"}
_SCENARIOS = {SAME: "same node", ACROSS: "across nodes"}
_SHADES = {"p50": GLIA_COLOR, "p99": SECOND_SHADE}


def _path_groups(data: dict[str, Any], pick: Callable[[dict[str, Any]], float]) -> list[Group]:
    """A group per scenario, a bar per variant (glia first) of ``pick``'s figure."""
    return [
        Group(
            _SCENARIOS[s],
            tuple(Bar(_NAMES[v], pick(data[s][v]), v == GLIA) for v in data[s]),
        )
        for s in data
    ]


def _quantile_groups(data: dict[str, Any], keys: Sequence[str]) -> list[Group]:
    """A group per key of ``data``, its p50 and p99 side by side."""
    return [
        Group(
            key.replace("_", " ").upper() if len(key) == 3 else key.replace("_", " "),
            tuple(Bar(q, data[key][q], color=c) for q, c in _SHADES.items()),
        )
        for key in keys
    ]


def _start_groups(st: dict[str, Any]) -> list[Group]:
    return [
        Group(
            q,
            (
                Bar("glia: run returns", st["glia"]["run"][q], True),
                Bar("--network none: run returns", st["none"]["run"][q]),
                Bar("glia: first ping answered", st["glia"]["first_ping"][q], True, SECOND_SHADE),
            ),
        )
        for q in ("p50", "p99")
    ]


def _egress_groups(eg: dict[str, Any]) -> list[Group]:
    gbit = eg["gbit_s"]
    bars = (
        Bar("masquerade (glia)", gbit["masquerade"]["median"], True),
        Bar("routed, no NAT", gbit["routed"]["median"]),
        Bar("the node itself", gbit["node"]["median"]),
    )
    return [Group("pod -> 203.0.113.10", bars)]


# The bar panels, row by row: (key of the document, section, title, unit, bars).
_PANELS: tuple[tuple[str, str, str, str, Callable[[Any], list[Group]]], ...] = (
    (
        "throughput_gbps",
        "throughput",
        "TCP throughput (iperf3, median)",
        "Gbit/s",
        lambda d: _path_groups(d, lambda v: v["median"]),
    ),
    (
        "latency_us",
        "latency",
        "request/response p50 (1 byte, one connection)",
        "µs",
        lambda d: _path_groups(d, lambda v: v["rr"]["p50"]),
    ),
    (
        "latency_us",
        "latency",
        "request/response p99",
        "µs",
        lambda d: _path_groups(d, lambda v: v["rr"]["p99"]),
    ),
    (
        "latency_us",
        "latency",
        "new connection + 1 round trip, p50",
        "µs",
        lambda d: _path_groups(d, lambda v: v["connect_rr"]["p50"]),
    ),
    (
        "cni_ms",
        "cni",
        "glia-cni ADD / DEL (plugin run -> agent -> result)",
        "ms",
        lambda d: _quantile_groups(d, ("add", "del")),
    ),
    (
        "container_start_ms",
        "start",
        "container start: ms from the start of `podman run -d`",
        "ms",
        _start_groups,
    ),
    (
        "egress",
        "egress",
        "pod -> world TCP throughput (iperf3, median)",
        "Gbit/s",
        _egress_groups,
    ),
    (
        "dns",
        "dns",
        "DNS from a pod to its agent (UDP)",
        "µs",
        lambda d: _quantile_groups(d["latency_us"], list(d["latency_us"])),
    ),
)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Nine panels (a section not in ``doc`` says so in its panels) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(15, 12.5))
    cells = list(axes.flat)
    for ax, (key, section, title, unit, bars) in zip(cells, _PANELS, strict=False):
        if doc.get(key):
            bar_panel(ax, title, unit, bars(doc[key]))
        else:
            _absent(ax, section)
    if doc.get("dns"):
        dns_ax = cells[len(_PANELS) - 1]
        target_line = {"color": "#c0392b", "linestyle": "--", "linewidth": 1}
        dns_ax.axhline(1000, label="target: p99 < 1 ms", **target_line)
        dns_ax.set_ylim(0, max(dns_ax.get_ylim()[1], 1100))
        dns_ax.legend(fontsize=7, loc="upper left")
    _targets_panel(cells[-1], doc.get("targets", {}))
    sections = doc.get("sections", SECTIONS)
    fig.suptitle(
        f"glia pods benchmark, {doc['date'][:16]} UTC, kernel {doc['host']['kernel']}, "
        f"{doc['host']['cpus']} vCPUs, load {doc['host']['load_average_1m_before']}"
        f"->{doc['host']['load_average_1m_after']}{' (quick)' if doc['quick'] else ''}"
        f"{'' if set(sections) == set(SECTIONS) else ', sections ' + ','.join(sections)}\n"
        "ratios are glia / reference from this one run; every pod has MTU 1450",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
