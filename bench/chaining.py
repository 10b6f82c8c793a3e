"""CNI chaining benchmark: what glia chained after ``ptp`` costs or saves a pod.

Run as root from the repository: ``.venv/bin/python bench/chaining.py [--quick]
[--lab NAME] [--rounds N] [--seconds S] [--out DIR]`` (``make bench-chaining``).
It brings up its own lab (``--lab``, default "gliacb": one cluster of one
node), and on that node starts a client and a server pod of three kinds:

- ``ptp``: the standard ``ptp`` + ``host-local`` plugins alone, without glia
  (network ``gliabench-ptp``, written for the run into the node's CNI
  directory: the ``glia-chained`` conflist without its glia-cni entry, in
  10.250.0.0/24, outside every glia pool): pod to pod through the node's IP
  stack (routes, forwarding);
- ``chained``: the same ``ptp`` with glia-cni chained after it (the lab's
  ``glia-chained`` network, docs/chaining.md): glia's datapath on ptp's veths;
- ``native``: glia alone (the ``glia`` network).

In each of ``--rounds`` rounds (the order of the kinds rotating from round to
round, so drift and other people's load hit them alike) it measures per kind,
client pod to server pod: TCP throughput (iperf3, one stream, ``--seconds``)
and one-byte request/response latency (bench/_loadtool.py's rr-client against
rr-server, run in the pods' namespaces with nsenter: round trips over one
connection, and connect + one round trip on fresh connections;
``RR_PER_SECOND`` and ``CRR_PER_SECOND`` times ``--seconds`` of each per
round; client and server both on the last CPU, see ``RR_CPU``). Prints one
JSON document (per kind: throughput median, spread and runs; latency
p50/p90/p99 pooled over the rounds; ratios chained / ptp, the issue's figure,
and native / ptp, each also paired round by round) and writes
``chaining.json`` and ``chaining.png`` into ``--out`` (``--quick``:
``chaining-quick.*``). The lab is torn down at the end, also on failure.
Only ratios from one run mean something on this noisy 2-vCPU machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _throughput  # bench/ is a folder of scripts
import pods
from _common import (
    Background,
    Bar,
    BenchError,
    Group,
    bar_panel,
    host_info,
    in_netns,
    lab_bench_main,
    listening,
    log,
    nsenter,
    percentile,
    ratio,
    summary,
    wait_for,
)
from _probe import interface_ipv4

PTP, CHAINED, NATIVE = "ptp", "chained", "native"
KINDS = (PTP, CHAINED, NATIVE)
PTP_NETWORK = "gliabench-ptp"
PTP_SUBNET = "10.250.0.0/24"
NETWORKS = {PTP: PTP_NETWORK, CHAINED: "glia-chained", NATIVE: "glia"}
LABELS = {PTP: "ptp alone", CHAINED: "ptp + glia (chained)", NATIVE: "glia native"}
RR_PER_SECOND = 1000  # one-byte round trips per run and --seconds, one connection
CRR_PER_SECOND = 150  # fresh connections per run and --seconds
# rr-client and rr-server share this CPU. Left to the scheduler, each run fell
# into one of two modes by chance (one CPU ~22 µs p50, two CPUs ~60 µs: wake-ups
# across CPUs), which swamped the difference between the kinds.
RR_CPU = (os.cpu_count() or 1) - 1
NATIVE_COLOR = "#7fb3d5"
PTP_COLOR = "#9a9a9a"

# --- pure: order, figures, ratios ------------------------------------------------


def rotated(kinds: Sequence[str], round_index: int) -> list[str]:
    """The kinds in round ``round_index``'s order: rotated by one each round."""
    k = round_index % len(kinds)
    return [*kinds[k:], *kinds[:k]]


def latency_figures(rounds: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Round trips in µs of one kind, one list per round: the pooled summary and
    each round's p50."""
    pooled = [v for r in rounds for v in r]
    return {**summary(pooled), "round_p50": [round(percentile(r, 50), 1) for r in rounds]}


def _paired(values: Sequence[float], refs: Sequence[float]) -> dict[str, Any]:
    per_round = [round(v / r, 3) for v, r in zip(values, refs, strict=True) if r]
    if not per_round:
        return {"median": None, "p25": None, "p75": None, "rounds": []}
    return {
        "median": round(percentile(per_round, 50), 3),
        "p25": round(percentile(per_round, 25), 3),
        "p75": round(percentile(per_round, 75), 3),
        "rounds": per_round,
    }


def kind_ratios(
    throughput: Mapping[str, Mapping[str, Any]],
    latency: Mapping[str, Mapping[str, Mapping[str, Any]]],
    kind: str,
    ref: str = PTP,
) -> dict[str, Any]:
    """``kind`` / ``ref``: throughput (medians, and paired per round: the figure to
    quote), request/response and connect p50/p99 (pooled) and p50 paired per round.
    Above 1 is faster for throughput, slower for latency."""
    out: dict[str, Any] = {
        "throughput": ratio(throughput[kind]["median"], throughput[ref]["median"], 3),
        "throughput_paired": _paired(throughput[kind]["runs"], throughput[ref]["runs"]),
    }
    for test in ("rr", "connect_rr"):
        mine, theirs = latency[kind][test], latency[ref][test]
        out[f"{test}_p50"] = ratio(mine["p50"], theirs["p50"], 3)
        out[f"{test}_p99"] = ratio(mine["p99"], theirs["p99"], 3)
        out[f"{test}_p50_paired"] = _paired(mine["round_p50"], theirs["round_p50"])
    return out


def report(
    gbps: Mapping[str, Sequence[_throughput.IperfRun]],
    rr: Mapping[str, Sequence[Sequence[float]]],
    crr: Mapping[str, Sequence[Sequence[float]]],
) -> dict[str, Any]:
    """The document's figures from the raw runs of every kind (``KINDS``)."""
    throughput = {k: _throughput.path_stats(gbps[k]) for k in KINDS}
    latency = {
        k: {"rr": latency_figures(rr[k]), "connect_rr": latency_figures(crr[k])} for k in KINDS
    }
    return {
        "throughput_gbps": throughput,
        "latency_us": latency,
        "ratios": {
            "chained_over_ptp": kind_ratios(throughput, latency, CHAINED),
            "native_over_ptp": kind_ratios(throughput, latency, NATIVE),
        },
    }


def ptp_conflist(chained: Mapping[str, Any], ipam_dir: str) -> dict[str, Any]:
    """The node's ``glia-chained`` conflist without glia-cni: the same ptp plugin, in
    ``PTP_SUBNET`` with its gateway the first address, host-local's leases in
    ``ipam_dir``; its ``tuning`` too (IPv6 off), so glia-cni is the only difference."""
    plugins = [dict(p) for p in chained["plugins"] if p.get("type") in ("ptp", "tuning")]
    ptps = sum(p.get("type") == "ptp" for p in plugins)
    if ptps != 1:
        raise BenchError(f"the chained conflist has {ptps} ptp plugins, expected 1")
    net = ipaddress.IPv4Network(PTP_SUBNET)
    gateway = str(net.network_address + 1)
    ptp = next(p for p in plugins if p.get("type") == "ptp")
    ptp["ipam"] = {
        **ptp["ipam"],
        "ranges": [[{"subnet": PTP_SUBNET, "gateway": gateway}]],
        "dataDir": ipam_dir,
    }
    return {**chained, "name": PTP_NETWORK, "plugins": plugins}


def check_blocks(chained_cidr: object, found: Mapping[str, tuple[str, str, str]]) -> str:
    """``chained_cidr`` (the agent's report) when each server pod is where its kind
    puts it: chained in that block, ptp in ``PTP_SUBNET``, native outside both;
    a BenchError naming the pod otherwise (e.g. the chained network fell back to
    another plugin)."""
    if not isinstance(chained_cidr, str):
        raise BenchError(f"the agent reports no chained_cidr (got {chained_cidr!r})")
    block, ptp = ipaddress.IPv4Network(chained_cidr), ipaddress.IPv4Network(PTP_SUBNET)
    expected = {PTP: f"in {ptp}", CHAINED: f"in the chained block {block}"}
    for kind, (_, _, ip) in found.items():
        addr = ipaddress.IPv4Address(ip)
        inside = {PTP: addr in ptp, CHAINED: addr in block}
        ok = inside[kind] if kind in inside else not any(inside.values())
        if not ok:
            where = expected.get(kind, f"outside {block} and {ptp}")
            raise BenchError(f"{kind} server pod has {ip}: expected {where}")
    return chained_cidr


# --- the shell: pods, servers, rounds ---------------------------------------------


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """The calling thread on ``cpu`` alone while inside: the processes it starts
    there (nsenter, then the tool) inherit that affinity and keep it."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def start_rr_servers(bg: Background, server_nss: Sequence[str]) -> None:
    """bench/_loadtool.py's rr-server on ``RR_CPU`` in every server namespace, listening."""
    for ns in server_nss:
        argv = [sys.executable, str(pods.TOOL), "rr-server", "--port", str(pods.RR_PORT)]
        with pinned(RR_CPU):
            bg.start(nsenter(ns, argv))
        wait_for(f"rr-server listening in {ns}", lambda ns=ns: listening(ns, pods.RR_PORT), 20)


def _pods(lab: Any, node: Any, made: list[str]) -> dict[str, tuple[str, str, str]]:
    """Client and server pod of every kind: ``{kind: (client ns, server ns, server ip)}``;
    every container's name is appended to ``made`` as soon as it runs."""
    found: dict[str, tuple[str, str, str]] = {}
    for kind in KINDS:
        netns: list[str] = []
        for role in ("c", "s"):
            name = f"{lab.name}-{kind}-{role}"
            ctr = lab.run_container(
                node.ref, name, network=NETWORKS[kind], command=["sleep", "3600"]
            )
            made.append(name)
            if not ctr.netns_path:
                raise BenchError(f"{kind}: container {name} has no network namespace: {ctr}")
            netns.append(ctr.netns_path)
        ip = in_netns(netns[1], lambda: interface_ipv4("eth0"))
        if ip is None:
            raise BenchError(f"{kind}: the server pod's eth0 has no IPv4 address")
        found[kind] = (netns[0], netns[1], ip)
    return found


def measure(lab: Any, rounds: int, seconds: int) -> dict[str, Any]:
    """``rounds`` rounds of iperf3 and rr per kind, on the lab's one node."""
    node = lab.topo.nodes[0]
    host = host_info()
    subnet = ipaddress.IPv4Network(PTP_SUBNET)
    for c in lab.topo.clusters:
        if subnet.overlaps(c.pod_pool):
            raise BenchError(f"{PTP_SUBNET} overlaps {c.name}'s pod pool {c.pod_pool}")
    chained_file = node.cni_config_dir / f"{NETWORKS[CHAINED]}.conflist"
    ptp_file = node.cni_config_dir / f"{PTP_NETWORK}.conflist"
    conf = ptp_conflist(json.loads(chained_file.read_text()), str(node.podman_dir / "cni-ipam"))
    params = pods.Params(rr_count=RR_PER_SECOND * seconds, crr_count=CRR_PER_SECOND * seconds)
    made: list[str] = []
    bg = Background()
    gbps: dict[str, list[_throughput.IperfRun]] = {k: [] for k in KINDS}
    rr: dict[str, list[list[float]]] = {k: [] for k in KINDS}
    crr: dict[str, list[list[float]]] = {k: [] for k in KINDS}
    try:
        ptp_file.write_text(json.dumps(conf, indent=2) + "\n")
        found = _pods(lab, node, made)
        block = check_blocks(lab.agent(node.ref).status().get("chained_cidr"), found)
        paths = {k: _throughput.Path(k, *found[k]) for k in KINDS}
        cases = {k: pods.Case(pods.SAME, k, *found[k]) for k in KINDS}
        for path in paths.values():
            _throughput.reach(path)
        _throughput.start_iperf_servers(bg, list(paths.values()))
        start_rr_servers(bg, [found[k][1] for k in KINDS])
        for r in range(rounds):
            order = rotated(KINDS, r)
            for kind in order:
                gbps[kind].append(_throughput.iperf(paths[kind], seconds))
            for kind in order:
                with pinned(RR_CPU):
                    got_rr, got_crr = pods.request_response(cases[kind], params)
                rr[kind].append(got_rr)
                crr[kind].append(got_crr)
            log(
                f"round {r + 1}/{rounds}: "
                + ", ".join(
                    f"{k} {gbps[k][-1].gbps} Gbit/s rr p50 {percentile(rr[k][-1], 50):.0f} µs"
                    for k in KINDS
                )
            )
    finally:
        bg.stop_all()
        for name in reversed(made):  # before the conflist goes: podman's DEL reads it
            lab.remove_container(node.ref, name)
        ptp_file.unlink(missing_ok=True)
    return {
        "benchmark": "chaining",
        "host": {**host, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "node": node.ref,
        "networks": {k: NETWORKS[k] for k in KINDS},
        "server_ips": {k: found[k][2] for k in KINDS},
        "chained_cidr": block,
        "rounds": rounds,
        "seconds_per_run": seconds,
        "rr_count_per_run": params.rr_count,
        "connect_rr_count_per_run": params.crr_count,
        "method": (
            "client pod -> server pod of the same kind on one node; per round, in rotating "
            "order, one iperf3 run (one stream, CPUs the scheduler's choice) per kind, then "
            f"one rr-client run per kind (client and server both on CPU {RR_CPU})"
        ),
        **report(gbps, rr, crr),
    }


# --- the plot ------------------------------------------------------------------------


def _bars(values: Mapping[str, float]) -> tuple[Bar, ...]:
    return (
        Bar(LABELS[CHAINED], values[CHAINED], is_glia=True),
        Bar(LABELS[PTP], values[PTP], color=PTP_COLOR),
        Bar(LABELS[NATIVE], values[NATIVE], color=NATIVE_COLOR),
    )


def plot(doc: Mapping[str, Any], path: Path) -> None:
    """Throughput, request/response and connect latency per kind into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tput, lat = doc["throughput_gbps"], doc["latency_us"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    bar_panel(
        axes[0],
        "TCP throughput, pod to pod on one node (median)",
        "Gbit/s",
        [Group("iperf3, one stream", _bars({k: tput[k]["median"] for k in KINDS}))],
    )
    for ax, test, title in (
        (axes[1], "rr", "1-byte request/response, one connection"),
        (axes[2], "connect_rr", "connect + 1-byte round trip"),
    ):
        groups = [Group(q, _bars({k: lat[k][test][q] for k in KINDS})) for q in ("p50", "p99")]
        bar_panel(ax, title, "µs (lower is better)", groups)
    paired = doc["ratios"]["chained_over_ptp"]["throughput_paired"]
    host = doc["host"]
    fig.suptitle(
        f"glia CNI chaining benchmark, kernel {host['kernel']}, {host['cpus']} vCPUs, load "
        f"{host['load_average_1m_before']}->{host['load_average_1m_after']}, "
        f"{doc['rounds']} rounds\nglia/this = chained / that kind, from this one run; "
        f"chained/ptp throughput paired per round: median {paired['median']} "
        f"(quartiles {paired['p25']}-{paired['p75']})",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return lab_bench_main(
        argv,
        description=(__doc__ or "").split("\n\n")[0],
        result="chaining",
        lab="gliacb",
        nodes=1,
        rounds=8,
        seconds=4,
        measure=measure,
        quick=(2, 1),
        plot=plot,
    )


if __name__ == "__main__":
    sys.exit(main())
