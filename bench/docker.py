"""Docker benchmark: what ``docker run`` with glia's driver costs (docs/docker.md).

Run as root from the repository: ``.venv/bin/python bench/docker.py [--lab NAME]
[--rounds N] [--out DIR]``. It brings up its own lab (``--lab``, default
"gliadkb": one cluster of two nodes), starts n1's dockerd (glia.lab.docker),
creates Docker's own bridge network next to glia's (``-d bridge``, no iptables
in this lab), then, interleaved round by round with the order rotating, times
for each network (``glia``, ``none``, ``bridge``):

- ``run``: ``docker run -d`` until it returns (the container is running, its
  endpoint made: with glia the IPAM, CreateEndpoint and Join calls over the
  agent's socket and the veth; identity and labels follow in the background);
- ``rm``: ``docker rm -f`` of that container until it returns.

Prints one JSON document with per network medians (ms) and the glia / none
and glia / bridge ratios; writes ``docker.json`` into ``--out``. Only ratios
from one run mean something on this noisy 2-vCPU machine. The lab is torn
down at the end, also on failure.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lab_bench_main  # bench/ is a folder of scripts
from glia.lab.docker import NETWORK, NodeDocker
from glia.lab.lab import Lab
from glia.lab.topology import IMAGE

MODES = ("glia", "none", "bridge")
BRIDGE = "glia-dkbr"


def _network(mode: str) -> str:
    return {"glia": NETWORK, "none": "none", "bridge": BRIDGE}[mode]


def measure(lab: Lab, rounds: int, seconds: int) -> dict[str, Any]:
    del seconds  # one container start per round and network
    dk = NodeDocker(lab.topo.node("c1", "n1"))
    dk.start(lab.topo.rootfs_dir)
    if BRIDGE not in dk.cli(["network", "ls", "--format", "{{.Name}}"]).split():
        dk.cli(["network", "create", "-d", "bridge", BRIDGE])
    times: dict[str, dict[str, list[float]]] = {m: {"run": [], "rm": []} for m in MODES}
    for i in range(rounds + 1):  # round 0 warms up (image, first network use)
        order = MODES[i % 3 :] + MODES[: i % 3]
        for mode in order:
            name = f"glia-bench-{mode}-{i}"
            t = time.perf_counter()
            dk.cli(["run", "-d", "--name", name, "--network", _network(mode), IMAGE, "sleep", "1d"])
            ran = time.perf_counter() - t
            t = time.perf_counter()
            dk.cli(["rm", "-f", name])
            removed = time.perf_counter() - t
            if i > 0:
                times[mode]["run"].append(ran * 1000)
                times[mode]["rm"].append(removed * 1000)
    med = {m: {k: round(statistics.median(v), 1) for k, v in t.items()} for m, t in times.items()}
    ratios = {
        f"glia/{ref}": {k: round(med["glia"][k] / med[ref][k], 2) for k in ("run", "rm")}
        for ref in ("none", "bridge")
    }
    return {
        "rounds": rounds,
        "docker_version": dk.cli(["version", "--format", "{{.Server.Version}}"]).strip(),
        "median_ms": med,
        "ratios": ratios,
        "ms": times,
    }


def main(argv: list[str] | None = None) -> int:
    return lab_bench_main(
        argv,
        description=__doc__.splitlines()[0],
        result="docker",
        lab="gliadkb",
        nodes=2,
        rounds=20,
        seconds=0,
        measure=measure,
    )


if __name__ == "__main__":
    raise SystemExit(main())
