"""Host port benchmark: what ``podman run -p`` (host ports on the lb maps) costs.

Run as root from the repository: ``.venv/bin/python bench/hostport.py [--lab NAME]
[--rounds N] [--seconds S] [--out DIR]``. It brings up its own lab (``--lab``,
default "gliahpb": one cluster of two nodes), starts a pod on n1 publishing
``15201:5201`` (an iperf3 server in its namespace) and ``18080:80`` (busybox
httpd) and a client pod on each node, then measures, interleaved round by
round, from each client (n1 and n2, run as ``glia lab exec`` runs them: in the
node's namespace and cgroup, where the socket load-balancer applies; the pods
on n1 and n2):

- ``pod``: straight to the pod's address (what the datapath does alone);
- ``hostport``: to n1's address and the host port (from n1: the socket LB; from
  n2: from_netdev on n1; from pods: from_endpoint's load-balancer);
- ``loopback`` (n1 only): to 127.0.0.1 and the host port (the socket LB).

Per path: TCP throughput (iperf3, one stream, Gbit/s) and the p50 of a fresh
TCP connection + HTTP GET (ms, 200 sequential requests). Prints one JSON
document with medians and hostport / pod ratios; writes ``hostport.json``
into ``--out``. Needs the node's IPv4 forwarding and node routes (egress,
glia.agent.egress) for n2 and pod clients; a path that does not answer fails
the run. The lab is torn down at the end, also on failure. Only ratios from
one run mean something on this noisy 2-vCPU machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import lab_bench_main  # bench/ is a folder of scripts
from glia.lab.lab import Lab

RESULTS = Path(__file__).resolve().parent / "results"
IPERF_PORT, IPERF_HOST_PORT = 5201, 15201
HTTP_PORT, HTTP_HOST_PORT = 80, 18080
REQUESTS = 200
GET_P50 = """
import socket, statistics, sys, time
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(n):
    t = time.perf_counter()
    with socket.create_connection((ip, port), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        while s.recv(4096):
            pass
    times.append(time.perf_counter() - t)
print(statistics.median(times) * 1000)
"""


def _run(argv: list[str], timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


Runner = Callable[[list[str]], list[str]]  # a client: argv -> the argv that runs it there


def iperf(run: Runner, ip: str, port: int, seconds: int) -> float:
    out = _run(
        run(["iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-J"]),
        timeout=seconds + 30,
    )
    return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9


def get_p50(run: Runner, ip: str, port: int) -> float:
    return float(_run(run([sys.executable, "-c", GET_P50, ip, str(port), str(REQUESTS)])))


def in_netns(ns: str) -> Runner:
    return lambda argv: ["nsenter", f"--net={ns}", *argv]


def in_node(lab: Lab, ref: str) -> Runner:
    # The node's namespace AND cgroup (socket_lb_cgroup): its processes reach host
    # ports through the socket load-balancer, as on a host (docs/hostport.md).
    return lambda argv: lab.exec_argv(ref, argv)[0]


def measure(lab: Lab, rounds: int, seconds: int) -> dict[str, Any]:
    n1, n2 = lab.topo.nodes[0], lab.topo.nodes[1]
    tag = uuid.uuid4().hex[:6]
    web = lab.run_container(
        n1.ref,
        f"glia-hpb-web-{tag}",
        labels={"app": "hpb-web"},
        publish=(f"{IPERF_HOST_PORT}:{IPERF_PORT}", f"{HTTP_HOST_PORT}:{HTTP_PORT}"),
    )
    c1 = lab.run_container(n1.ref, f"glia-hpb-c1-{tag}", labels={"app": "hpb-client"})
    c2 = lab.run_container(n2.ref, f"glia-hpb-c2-{tag}", labels={"app": "hpb-client"})
    assert web.ip and web.netns_path and c1.netns_path and c2.netns_path
    server = subprocess.Popen(
        ["nsenter", f"--net={web.netns_path}", "iperf3", "-s", "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    clients = {
        "n1": in_node(lab, n1.ref),
        "n2": in_node(lab, n2.ref),
        "pod-n1": in_netns(c1.netns_path),
        "pod-n2": in_netns(c2.netns_path),
    }
    targets = {
        "pod": (web.ip, IPERF_PORT, HTTP_PORT),
        "hostport": (str(n1.ip), IPERF_HOST_PORT, HTTP_HOST_PORT),
        "loopback": ("127.0.0.1", IPERF_HOST_PORT, HTTP_HOST_PORT),
    }
    gbit: dict[str, list[float]] = {}
    get_ms: dict[str, list[float]] = {}
    try:
        time.sleep(0.5)
        for r in range(rounds):
            for client, ns in clients.items():
                for path, (ip, iperf_port, http_port) in targets.items():
                    if path == "loopback" and client != "n1":
                        continue
                    key = f"{client} {path}"
                    gbit.setdefault(key, []).append(iperf(ns, ip, iperf_port, seconds))
                    get_ms.setdefault(key, []).append(get_p50(ns, ip, http_port))
            print(f"round {r + 1} done", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(10)
        for ctr, node in ((web, n1), (c1, n1), (c2, n2)):
            lab.remove_container(node.ref, ctr.name)
    med_g = {k: statistics.median(v) for k, v in gbit.items()}
    med_t = {k: statistics.median(v) for k, v in get_ms.items()}
    ratios = {
        c: {
            "gbit_hostport_over_pod": med_g[f"{c} hostport"] / med_g[f"{c} pod"],
            "get_p50_hostport_over_pod": med_t[f"{c} hostport"] / med_t[f"{c} pod"],
        }
        for c in clients
    }
    return {
        "gbit_s": {k: {"median": med_g[k], "runs": v} for k, v in gbit.items()},
        "get_p50_ms": {k: {"median": med_t[k], "runs": v} for k, v in get_ms.items()},
        "ratios": ratios,
        "seconds_per_run": seconds,
        "requests_per_run": REQUESTS,
    }


def main(argv: list[str] | None = None) -> int:
    return lab_bench_main(
        argv,
        description=(__doc__ or "").split("\n\n")[0],
        result="hostport",
        lab="gliahpb",
        nodes=2,
        rounds=3,
        seconds=3,
        measure=measure,
    )


if __name__ == "__main__":
    sys.exit(main())
