"""Egress benchmark: what the masquerade (kernel NAT in the node) costs a pod.

Run as root from the repository: ``.venv/bin/python bench/egress.py [--lab NAME]
[--rounds N] [--seconds S] [--out DIR]``. It brings up its own lab (``--lab``,
default "gliaegb": one cluster of one node, agent, podman, the world
namespace), starts a glia pod and an iperf3 server in the world
(203.0.113.10), and measures TCP throughput (iperf3, one stream) from the pod
to the world in two ways, interleaved round by round:

- ``masquerade``: as the agent sets it up (glia.agent.egress): the pod's
  connection leaves with the node's address (nftables masquerade, conntrack);
- ``routed``: the same path with the masquerade rule removed and the world
  routing the pod pool back via the node: plain kernel forwarding, the
  "direct routing" the issue compares against (conntrack still runs: the
  node's forward filter uses it).

Also ``node``: iperf3 from the node's own namespace (no pod, no datapath).
Prints one JSON document (per path the median Gbit/s and runs, and
masquerade / routed); writes ``egress.json`` into ``--out``. The lab is torn
down at the end, also on failure. Only ratios from one run mean something on
this noisy 2-vCPU machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from glia.agent.egress import TABLE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BenchError, lab_bench_main, run  # bench/ is a folder of scripts
from glia.lab import netns
from glia.lab.lab import Lab
from glia.lab.topology import WORLD_IP

RESULTS = Path(__file__).resolve().parent / "results"
PORT = 5201


def _run(argv: list[str], timeout: float = 120) -> str:
    """``argv``'s stdout; BenchError naming the command when it fails."""
    return run(argv, timeout=timeout).stdout.decode()


def iperf(netns_path: str, seconds: int) -> float:
    """Gbit/s received by the world from a client in ``netns_path``."""
    out = _run(
        [
            "nsenter",
            f"--net={netns_path}",
            "iperf3",
            "-c",
            str(WORLD_IP),
            "-p",
            str(PORT),
            "-t",
            str(seconds),
            "-J",
        ],
        timeout=seconds + 30,
    )
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def set_masquerade(node_ns: str, on: bool, rule: str) -> None:
    ns = ["nsenter", f"--net={netns.path(node_ns)}"]
    _run([*ns, "nft", "flush", "chain", "ip", TABLE, "postrouting"])
    if on:
        _run([*ns, "nft", "add", "rule", "ip", TABLE, "postrouting", *rule.split()])


def measure(lab: Lab, rounds: int, seconds: int, name: str = "glia-egb") -> dict[str, Any]:
    """``rounds`` rounds of the three paths from a pod named ``name``-<random> on the
    lab's first node (also called by bench/pods.py, section ``egress``)."""
    node = lab.topo.nodes[0]
    pod = lab.run_container(node.ref, f"{name}-{uuid.uuid4().hex[:6]}", labels={"app": "egb"})
    if not pod.ip or not pod.netns_path:
        lab.remove_container(node.ref, pod.name)
        raise BenchError(f"egress: container {pod.name} has no IP or namespace: {pod}")
    world = ["nsenter", f"--net={netns.path(lab.topo.world_netns)}"]
    server = subprocess.Popen(
        [*world, "iperf3", "-s", "-p", str(PORT), "-B", str(WORLD_IP)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pool = str(lab.topo.clusters[0].pod_pool)
    listed = _run(["nsenter", f"--net={netns.path(node.netns)}", "nft", "list", "chain", "ip",
                   TABLE, "postrouting"])  # fmt: skip
    rule = next(ln.strip() for ln in listed.splitlines() if "masquerade" in ln)
    runs: dict[str, list[float]] = {"masquerade": [], "routed": [], "node": []}
    try:
        time.sleep(0.5)
        _run([*world, "ip", "route", "replace", pool, "via", str(node.ip)])
        for r in range(rounds):
            order = ["masquerade", "routed", "node"]
            order = order[r % 3 :] + order[: r % 3]
            for path in order:
                if path == "node":
                    runs[path].append(iperf(str(netns.path(node.netns)), seconds))
                    continue
                set_masquerade(node.netns, path == "masquerade", rule)
                runs[path].append(iperf(pod.netns_path, seconds))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()),
                  file=sys.stderr)  # fmt: skip
    finally:
        set_masquerade(node.netns, True, rule)
        # The world routes the pool to this node only for ``routed``: a later part of
        # bench/pods.py finds the world as the lab made it.
        subprocess.run([*world, "ip", "route", "del", pool], capture_output=True, check=False)
        server.terminate()
        server.wait(10)
        lab.remove_container(node.ref, pod.name)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {
        "gbit_s": {k: {"median": med[k], "runs": v} for k, v in runs.items()},
        "masquerade_over_routed": med["masquerade"] / med["routed"],
        "paired_ratios": [m / r for m, r in zip(runs["masquerade"], runs["routed"], strict=True)],
        "seconds_per_run": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    return lab_bench_main(
        argv,
        description=(__doc__ or "").split("\n\n")[0],
        result="egress",
        lab="gliaegb",
        nodes=1,
        rounds=5,
        seconds=5,
        measure=measure,
    )


if __name__ == "__main__":
    sys.exit(main())
