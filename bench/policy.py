"""Policy benchmark (issue 9): computing and programming policy, and what enforcing it costs.

Run as root from the repository: ``.venv/bin/python bench/policy.py [--quick] [--out DIR]``
(``make bench-policy``). It builds its own namespaces (prefix ``gliabench-pol``),
measures, and tears everything down at the end, also on failure or Ctrl-C. It
prints one JSON document on stdout (progress goes to stderr) and writes
``policy.json`` and ``policy.png`` into ``--out`` (default ``bench/results``).

The node is bench/services.py's glia node (its harness, imported, under names of
this benchmark's own: a node namespace, a client pod, a backend pod behind a
Service, a pod-IP target, a second client outside the socket-LB cgroup; the
datapath loaded, configured and attached as the agent does it; nginx and iperf3
in the server pods). Three parts:

- ``program``: for 100 / 1,000 / 5,000 endpoints and 10 / 100 / 1,000 rules (the
  synthetic cluster of bench/policy_core.py: identities shared by two endpoints,
  a quarter more from a second cluster), the time to compute every endpoint's
  policy with :class:`glia.policy.engine.PolicyEngine` (identities, CIDR
  identities, the policies, then each endpoint) and to program every subject
  into the node's real maps (:meth:`glia.datapath.policymap.PolicyMap.apply_many`);
  median of a few repetitions, the maps emptied between them (not timed).
- ``enforcement``: the client to the pod-IP target (one node, both ends through
  the datapath) with no policy, against the same with policy at both ends: the
  client's egress allows the target's identity on the server ports, the
  target's ingress allows the client's, and the maps hold the 1,000-endpoint,
  1,000-rule cluster's entries besides. The two states alternate run by run (the
  maps rewritten in between, not timed): short-connection rate (wrk, a new
  connection per request), connect + GET + close latency, stream throughput
  (iperf3), and the BPF run time per packet of the programs on the way.
- ``service``: the per-packet Service path (client outside the socket-LB
  cgroup: from_endpoint's DNAT and conntrack) to a Maglev Service with
  ClientIP affinity, against the pod-IP target from the same client; the same
  figures, the cases interleaved.
- ``propagation``: in a lab of its own (``gliabpp``, one cluster of four nodes,
  containers on every node, 100 background policies; bench/_polprop.py, which
  uses bench/mesh.py's lab handling), 100 changes of one policy, each altering
  the entries of subjects on every node: from the write's return until every
  node's agent has programmed it (the agents' own flush figures, checked
  against the kernel's policy map).

Only ratios within one run mean something on this shared 2-vCPU machine: every
comparison alternates its cases round by round, and the ratios are the
medians of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _polprop
import _throughput  # bench/ is a folder of scripts
import services as svc
from _common import (  # bench/ is a folder of scripts
    GLIA_COLOR,
    Background,
    BenchError,
    host_info,
    in_netns,
    interrupt_on_sigterm,
    log,
    median,
    netns_path,
    summary,
    write_json,
)
from glia.datapath.drop import Direction, Reason
from glia.datapath.errors import DatapathError
from glia.datapath.loader import OBJECT_FILES, default_obj_dir
from glia.datapath.packets import (
    ETH_P_IP,
    IPPROTO_TCP,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    ethernet,
    ipv4,
    tcp,
)
from glia.datapath.policymap import PolicyMap
from glia.datapath.testrun import TC_ACT_REDIRECT, run_program
from glia.lab.lab import LabError
from glia.model import make_cluster_identity
from glia.model.identity import NAMESPACE_LABEL
from glia.model.service import LBAlgorithm
from glia.policy.cidr import CidrIdentities
from glia.policy.engine import PolicyEngine
from glia.policy.entries import EndpointPolicy
from glia.policy.manifest import parse_policy
from glia.policy.model import Policy
from policy_core import CLUSTER, endpoint_labels, feed_cidrs, identities, policies

# bench/services.py's harness under this benchmark's own names, so a services.py
# run at the same time never meets this one (its functions read these globals).
svc.PREFIX = "gliabench-pol"
svc.PIN_DIR = Path("/sys/fs/bpf/glia-bench-pol")
svc.RUN_DIR = Path("/run/glia-bench-pol")
svc.PIDS = svc.RUN_DIR / "pids"
RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = ("ip", "nsenter", "ss", "wrk", "iperf3", "nginx", "bpftool")
LAB_TOOLS = ("podman", "etcd")  # the propagation part's lab
NODE_PARTS = ("program", "enforcement", "service")  # on services.py's glia node
PARTS = (*NODE_PARTS, "propagation")

# The bench pods' identities: above the synthetic cluster's (policy_core numbers
# them from 256 on), so the 1,000 rules never select them by accident.
BENCH_APP = "bench"
POD_IDENTITY = {
    role: make_cluster_identity(svc.CLUSTER_ID, 60000 + j)
    for j, role in enumerate(("client", "backend", "direct", "client-tc"))
}
SERVER_PORTS = (*svc.SERVER_PORTS, svc.IPERF_PORT)
NO_POLICY, POLICY = "no_policy", "policy"
VIP_TC, POD_IP = "vip_tc", "pod_ip"


@dataclass(frozen=True)
class Params:
    endpoints: tuple[int, ...] = (100, 1000, 5000)
    rules: tuple[int, ...] = (10, 100, 1000)
    program_reps: int = 3
    full_endpoints: int = 1000  # the realistically full map of the enforcement runs
    full_rules: int = 1000
    rate_rounds: int = 20  # wrk runs per case, the cases alternating
    rate_seconds: int = 2
    latency_rounds: int = 6  # blocks of connect + GET + close per case
    latency_count: int = 1500  # per block
    iperf_rounds: int = 8
    iperf_seconds: int = 2
    cost_seconds: int = 2  # a wrk run per case with BPF statistics on
    testrun_connections: int = 3000  # per path, BPF_PROG_TEST_RUN
    wrk_threads: int = 2
    wrk_connections: int = 32
    prop_changes: int = 100  # policy changes, one at a time (lab gliabpp)
    prop_background: int = 100  # policies stored besides the changed one

    @classmethod
    def quick(cls) -> Params:
        return cls(
            endpoints=(100, 1000),
            rules=(10, 1000),
            program_reps=1,
            rate_rounds=2,
            latency_rounds=2,
            latency_count=200,
            iperf_rounds=1,
            iperf_seconds=1,
            cost_seconds=1,
            testrun_connections=300,
            prop_changes=20,
        )


# --- part 1: compute and program ---------------------------------------------------


@dataclass
class Cluster:
    """The synthetic cluster of bench/policy_core.py, computed."""

    engine: PolicyEngine
    by_subject: dict[int, EndpointPolicy]  # identity of local endpoints -> its policy
    endpoints: int
    identities: int
    entries: int
    compute_s: float
    compute_cpu_s: float


def compute(n_endpoints: int, n_rules: int, extra: Sequence[Policy] = (), seed: int = 1) -> Cluster:
    """The agent's work for a full cluster: identities, CIDR identities, the
    policies, then every local endpoint's policy (two endpoints share an identity,
    so a subject's policy is computed twice, as an agent computing per endpoint
    would). ``extra``: more policies (the bench pods' own)."""
    rnd = random.Random(seed)
    ids = identities(n_endpoints, rnd)
    pols = [*policies(n_rules, ids, rnd), *extra]
    eps = endpoint_labels(ids)
    number = {frozenset(labels.items()): n for n, labels, c in ids if c == CLUSTER}
    t0, c0 = time.perf_counter(), time.process_time()
    engine = PolicyEngine(CLUSTER)
    for n, labels, cluster in ids:
        engine.upsert_identity(n, labels, cluster)
    for role, n in POD_IDENTITY.items():
        engine.upsert_identity(n, pod_labels(role), CLUSTER)
    feed_cidrs(engine, CidrIdentities(), pols)
    engine.set_policies(pols)
    by_subject = {number[frozenset(labels.items())]: engine.compute(labels) for labels in eps}
    for role, n in POD_IDENTITY.items():
        by_subject[n] = engine.compute(pod_labels(role))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Cluster(
        engine,
        by_subject,
        len(eps),
        len(ids),
        sum(len(p.entries) for p in by_subject.values()),
        wall,
        cpu,
    )


def program(pm: PolicyMap, by_subject: dict[int, EndpointPolicy]) -> tuple[float, int]:
    """Every subject into the maps (they hold none): seconds, blocks written."""
    t0 = time.perf_counter()
    blocks = pm.apply_many((s, None, p) for s, p in by_subject.items())
    return time.perf_counter() - t0, blocks


def unprogram(pm: PolicyMap, by_subject: dict[int, EndpointPolicy]) -> None:
    pm.apply_many((s, p, None) for s, p in by_subject.items())
    if len(pm) or pm.enforced():
        raise BenchError(f"policy maps not empty after removing every subject: {len(pm)} left")


def compute_and_program(pm: PolicyMap, p: Params) -> list[dict[str, Any]]:
    rows = []
    for n_endpoints in p.endpoints:
        for n_rules in p.rules:
            computes, cpus, programs = [], [], []
            cluster: Cluster | None = None
            blocks = 0
            for _ in range(p.program_reps):
                cluster = compute(n_endpoints, n_rules)
                seconds, blocks = program(pm, cluster.by_subject)
                held = len(pm)
                unprogram(pm, cluster.by_subject)
                if held != blocks:
                    raise BenchError(f"the map holds {held} blocks, {blocks} were written")
                computes.append(cluster.compute_s)
                cpus.append(cluster.compute_cpu_s)
                programs.append(seconds)
            assert cluster is not None
            row = {
                "endpoints": cluster.endpoints,
                "rules": n_rules,
                "identities": cluster.identities,
                "subjects": len(cluster.by_subject) - len(POD_IDENTITY),
                "entries": cluster.entries,
                "map_blocks": blocks,
                "compute_s": round(median(computes), 4),
                "compute_cpu_s": round(median(cpus), 4),
                "program_s": round(median(programs), 4),
                "total_s": round(
                    median([a + b for a, b in zip(computes, programs, strict=True)]), 4
                ),
                "runs": {
                    "compute_s": [round(x, 4) for x in computes],
                    "program_s": [round(x, 4) for x in programs],
                },
            }
            log(
                f"program: {row['endpoints']} endpoints, {n_rules} rules: compute "
                f"{row['compute_s']:.3f} s + program {row['program_s']:.3f} s "
                f"({blocks} blocks) = {row['total_s']:.3f} s"
            )
            rows.append(row)
    return rows


# --- the bench pods' policy ----------------------------------------------------------


def pod_labels(role: str) -> dict[str, str]:
    return {"app": f"{BENCH_APP}-{role}", NAMESPACE_LABEL: svc.NAMESPACE}


def _cnp(name: str, spec: dict[str, Any]) -> Policy:
    return parse_policy(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": svc.NAMESPACE},
            "spec": spec,
        },
        cluster=CLUSTER,
    )


def bench_policies() -> list[Policy]:
    """The clients' egress allows the servers on their ports; the servers' ingress
    allows the clients on them: both ends enforce, nothing else is open."""
    ports = [{"ports": [{"port": str(port), "protocol": "TCP"} for port in SERVER_PORTS]}]
    clients = [{"matchLabels": pod_labels(r)} for r in ("client", "client-tc")]
    servers = [{"matchLabels": pod_labels(r)} for r in ("backend", "direct")]
    return [
        _cnp(
            f"{role}-out",
            {
                "endpointSelector": {"matchLabels": pod_labels(role)},
                "egress": [{"toEndpoints": servers, "toPorts": ports}],
            },
        )
        for role in ("client", "client-tc")
    ] + [
        _cnp(
            f"{role}-in",
            {
                "endpointSelector": {"matchLabels": pod_labels(role)},
                "ingress": [{"fromEndpoints": clients, "toPorts": ports}],
            },
        )
        for role in ("backend", "direct")
    ]


# --- the node ----------------------------------------------------------------------


class Node(svc.GliaNode):
    """services.py's glia node, its pods given identities of their own."""

    def build(self) -> None:
        super().build()
        for j, (ns, ip) in enumerate(self.pods()):
            role = ("client", "backend", "direct", "client-tc")[j]
            info = self.dp.endpoints.get(ip)
            if info is None:
                raise BenchError(f"{ns}: no endpoint entry for {ip}")
            self.dp.endpoints.upsert(ip, replace(info, identity=POD_IDENTITY[role]))

    def policy_drops(self) -> int:
        return sum(self.dp.metrics.get(Reason.DROP_POLICY, d)[0] for d in Direction)


class Policies:
    """Switches the node between no policy (maps empty) and the full state."""

    def __init__(self, node: Node, cluster: Cluster) -> None:
        self.node = node
        self.cluster = cluster
        self.on = False

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        pm = self.node.dp.policy
        if on:
            program(pm, self.cluster.by_subject)
        else:
            unprogram(pm, self.cluster.by_subject)
        self.on = on


def refused_by_policy(node: Node) -> bool:
    """A connection the policy does not allow (client -> the backend's pod IP on a
    port no rule names... through the client's egress: none names the backend's
    8079) times out, and the datapath counts a policy drop."""
    before = node.policy_drops()

    def attempt() -> bool:
        try:
            socket.create_connection((svc.BACKEND_IP, 8079), timeout=0.5).close()
        except TimeoutError:
            return True
        except OSError:
            return False  # refused: the SYN reached the server
        return False

    timed_out = in_netns(netns_path(node.client), attempt)
    return timed_out and node.policy_drops() > before


# --- measurements ------------------------------------------------------------------


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (tick-based accounting here: softirq work done
    in its context, such as the tc programs on the veths it sends through,
    counts as its system time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(node: Node) -> list[int]:
    """The nginx processes of the backend and pod-IP target pods (their pid files)."""
    pids = []
    for ns in (node.backend, node.direct):
        pid_file = svc.RUN_DIR / f"nginx-{ns}.pid"
        try:
            pids.append(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError) as e:
            raise BenchError(f"nginx of {ns}: no pid in {pid_file}: {e}") from None
    return pids


def wrk_run(case: svc.Case, p: Params, seconds: int) -> dict[str, float]:
    """One wrk run (short connections): its rate, and its connections per CPU
    second of wrk and both nginx processes (what the path costs, which other
    work on a shared machine stretches far less than the wall-clock rate)."""
    case.node.flush()
    argv = ["wrk", f"-t{p.wrk_threads}", f"-c{p.wrk_connections}", f"-d{seconds}s"]
    argv += ["--latency", "-H", "Connection: close", case.url]
    assert isinstance(case.node, Node)
    servers = server_pids(case.node)
    before = sum(_proc_cpu_s(pid) for pid in servers)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child meanwhile
    proc = subprocess.Popen(
        case.client(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BenchError(f"{case.name}: wrk did not finish") from None
    if proc.returncode != 0:
        raise BenchError(f"{case.name}: wrk exited {proc.returncode}: {err.decode().strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    server_cpu = sum(_proc_cpu_s(pid) for pid in servers) - before
    got = svc.parse_wrk(out.decode(errors="replace"))
    if got["requests"] <= 0 or got["errors"] > 0.01 * got["requests"]:
        raise BenchError(f"{case.name}: wrk: {got['errors']:.0f} errors in {got['requests']:.0f}")
    cpu = client_cpu + server_cpu
    return {"rate": got["rate"], "per_cpu_s": got["requests"] / cpu if cpu > 0 else 0.0}


def wrk_rate(case: svc.Case, p: Params, seconds: int) -> float:
    return wrk_run(case, p, seconds)["rate"]


def paired(
    names: Sequence[str], rounds: int, measure: Callable[[str], float | dict[str, float]]
) -> dict[str, Any]:
    """``measure(name)`` for each name in every round, the order reversed every
    other round; per name the runs and median, and the per-round ratio of the
    second name to the first (median and range). A measure giving several
    figures (a dict) gets this per figure, the first one also at the top."""
    runs: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for name in names if r % 2 == 0 else list(reversed(names)):
            got = measure(name)
            figures = got if isinstance(got, dict) else {"value": got}
            for fig, value in figures.items():
                runs.setdefault(fig, {n: [] for n in names})[name].append(value)
    base, other = names
    out: dict[str, Any] = {}
    for fig, by_name in runs.items():
        per_round = [b / a for a, b in zip(by_name[base], by_name[other], strict=True) if a]
        out[fig] = {
            **{
                n: {"median": round(median(v), 3), "runs": [round(x, 3) for x in v]}
                for n, v in by_name.items()
            },
            "ratio": round(median(per_round), 3),
            "ratio_rounds": [round(x, 3) for x in per_round],
        }
    first = next(iter(out.values()))
    return {**first, **({} if list(out) == ["value"] else out)}


def program_ids(node: Node) -> dict[str, int]:
    return _throughput.tc_programs(netns_path(node.node))


def bpf_cost(node: Node, action: Callable[[], Any]) -> dict[str, Any]:
    return _throughput.bpf_cost(program_ids(node), action)


def enforcement(node: Node, pols: Policies, p: Params) -> dict[str, Any]:
    case = svc.Case(POD_IP, node, node.client, svc.DIRECT_IP, svc.SERVER_PORTS[0])
    states = {NO_POLICY: False, POLICY: True}
    pols.set(True)
    svc.reach(case)
    if not refused_by_policy(node):
        raise BenchError("policy on, yet a connection no rule allows was not dropped")
    pols.set(False)
    svc.reach(case)

    def rate(state: str) -> dict[str, float]:
        pols.set(states[state])
        return wrk_run(case, p, p.rate_seconds)

    log(f"enforcement: rate, {p.rate_rounds} rounds")
    rates = paired((NO_POLICY, POLICY), p.rate_rounds, rate)
    log(
        f"enforcement: rate {rates[POLICY]['median']:.0f} / {rates[NO_POLICY]['median']:.0f} "
        f"conn/s, paired ratio {rates['ratio']}"
    )

    pooled: dict[str, list[float]] = {NO_POLICY: [], POLICY: []}

    def lat(state: str) -> float:
        pols.set(states[state])
        node.flush()
        got = svc.http_crr([case], p.latency_count, svc.LATENCY_WARMUP)[POD_IP]
        pooled[state] += got
        return median(got)

    log(f"enforcement: latency, {p.latency_rounds} blocks of {p.latency_count}")
    lat_rounds = paired((NO_POLICY, POLICY), p.latency_rounds, lat)
    latency = {s: summary(v) for s, v in pooled.items()}

    def gbps(state: str) -> float:
        pols.set(states[state])
        return svc.iperf(case, p.iperf_seconds)

    log(f"enforcement: throughput, {p.iperf_rounds} rounds")
    tput = paired((NO_POLICY, POLICY), p.iperf_rounds, gbps)

    path = Path4(
        POD_IP,
        svc.CLIENT_IP,
        (svc.DIRECT_IP, svc.SERVER_PORTS[0]),
        svc.DIRECT_IP,
        (svc.DIRECT_IP, svc.SERVER_PORTS[0]),
    )
    log(f"enforcement: BPF run time per connection, {p.testrun_connections} each (test runs)")
    per_conn: dict[str, list[float]] = {NO_POLICY: [], POLICY: []}
    blocks = 10
    for b in range(blocks):
        for state in (NO_POLICY, POLICY) if b % 2 == 0 else (POLICY, NO_POLICY):
            pols.set(states[state])
            got = connection_ns(node, [path], p.testrun_connections // blocks, TESTRUN_SPORT)
            per_conn[state].append(got[POD_IP]["p50"])
    testrun = {s: {"p50_of_blocks": median(v), "blocks": v} for s, v in per_conn.items()}
    cost = {}
    for state in (NO_POLICY, POLICY):
        pols.set(states[state])
        cost[state] = bpf_cost(node, lambda: wrk_rate(case, p, p.cost_seconds))
    pols.set(False)
    return {
        "rate_cps": rates,
        "latency_us": {**latency, "median_ratio": lat_rounds["ratio"], "block_medians": lat_rounds},
        "throughput_gbps": tput,
        "bpf_cost": cost,
        "testrun_ns_per_connection": testrun,
    }


# One short connection, as (from the client?, TCP flags) per packet: handshake,
# request, response, both closes.
CONNECTION = (
    (True, TCP_SYN),
    (False, TCP_SYN | TCP_ACK),
    (True, TCP_ACK),
    (True, TCP_PSH | TCP_ACK),
    (False, TCP_PSH | TCP_ACK),
    (False, TCP_FIN | TCP_ACK),
    (True, TCP_FIN | TCP_ACK),
    (False, TCP_ACK),
)


@dataclass(frozen=True)
class Path4:
    """A connection's addresses as each end sees them."""

    name: str
    client: str  # client pod IP
    dst: tuple[str, int]  # what the client connects to
    server: str  # the pod that answers
    src: tuple[str, int]  # where its answers come from (before any reverse NAT)


def connection_ns(node: Node, paths: Sequence[Path4], count: int, sport0: int) -> dict[str, Any]:
    """from_endpoint's own run time for whole short connections, by
    BPF_PROG_TEST_RUN (no network, no other process: this machine's noise
    barely touches it): per connection the sum of its 8 packets' durations,
    the paths interleaved connection by connection. Each connection has its
    own client port, so every one is new to conntrack, as in wrk's runs."""
    dp = node.dp
    fd = dp.prog_fd("from_endpoint")
    eps = {}
    for path in paths:
        for ip in (path.client, path.server):
            info = dp.endpoints.get(ip)
            if info is None:
                raise BenchError(f"no endpoint {ip}")
            eps[ip] = info
    out: dict[str, list[float]] = {path.name: [] for path in paths}

    def one(path: Path4, sport: int) -> float:
        total = 0
        for from_client, flags in CONNECTION:
            if from_client:
                ep, src, dst = eps[path.client], (path.client, sport), path.dst
            else:
                ep, src, dst = eps[path.server], path.src, (path.client, sport)
            l3 = ipv4(src[0], dst[0], tcp(src[1], dst[1], flags), proto=IPPROTO_TCP)
            frame = ethernet(ep.node_mac, ep.mac, ETH_P_IP, l3)
            got = run_program(fd, frame, ingress_ifindex=ep.ifindex)
            if got.retval != TC_ACT_REDIRECT:
                raise BenchError(f"{path.name}: test run of {flags:#x} gave {got.retval}")
            total += got.duration_ns
        return float(total)

    def body() -> None:
        for i in range(count):
            order = paths if i % 2 == 0 else list(reversed(paths))
            for j, path in enumerate(order):
                out[path.name].append(one(path, sport0 + 2 * i + j))

    node.flush()
    in_netns(netns_path(node.node), body)
    node.flush()
    return {name: summary(v) for name, v in out.items()}


TESTRUN_SPORT = 30000  # the test runs' client ports: TESTRUN_SPORT + 2 x connection (+1)


def affinity_backend(node: Node) -> tuple[str, int]:
    """The backend the client's affinity entry names: the one its connections to
    the VIP reach (read from a connection's conntrack entry)."""
    for e in node.dp.ct.entries():
        if e.kind == "service" and e.dst == svc.TEST_VIP and e.src == svc.CLIENT_TC_IP:
            return e.nat_addr, e.nat_port
    raise BenchError("no conntrack entry of the client's connections to the VIP")


def service_path(node: Node, p: Params) -> dict[str, Any]:
    record = replace(
        svc.cluster_service(svc.test_service()),
        session_affinity=True,
        lb_algorithm=LBAlgorithm.MAGLEV,
    )
    node.program([record])
    cases = {
        POD_IP: svc.Case(POD_IP, node, node.client_tc, svc.DIRECT_IP, svc.SERVER_PORTS[0]),
        VIP_TC: svc.Case(VIP_TC, node, node.client_tc, svc.TEST_VIP, svc.HTTP_PORT),
    }
    for case in cases.values():
        svc.reach(case)
    node.flush()
    xlate = node.sock_xlate()
    svc.http_crr([cases[VIP_TC]], 20, 0)
    if node.vip_ct_entries() == 0 or node.sock_xlate() != xlate:
        raise BenchError("the VIP case did not take the per-packet path (no conntrack entry)")
    backend = affinity_backend(node)

    pod_path = Path4(
        POD_IP,
        svc.CLIENT_TC_IP,
        (svc.DIRECT_IP, svc.SERVER_PORTS[0]),
        svc.DIRECT_IP,
        (svc.DIRECT_IP, svc.SERVER_PORTS[0]),
    )
    vip_path = Path4(VIP_TC, svc.CLIENT_TC_IP, (svc.TEST_VIP, svc.HTTP_PORT), backend[0], backend)
    log(f"service: BPF run time per connection, {p.testrun_connections} each (test runs)")
    testrun = connection_ns(node, (pod_path, vip_path), p.testrun_connections, TESTRUN_SPORT)
    log(
        f"service: from_endpoint per connection {testrun[VIP_TC]['p50']:.0f} ns (VIP) against "
        f"{testrun[POD_IP]['p50']:.0f} ns (pod IP)"
    )
    log(f"service: rate, {p.rate_rounds} rounds")
    rates = paired((POD_IP, VIP_TC), p.rate_rounds, lambda c: wrk_run(cases[c], p, p.rate_seconds))
    log(
        f"service: rate {rates[VIP_TC]['median']:.0f} / {rates[POD_IP]['median']:.0f} conn/s, "
        f"paired ratio {rates['ratio']}"
    )
    log(f"service: latency, {p.latency_rounds} x {p.latency_count} interleaved")
    pooled: dict[str, list[float]] = {POD_IP: [], VIP_TC: []}
    for _ in range(p.latency_rounds):
        node.flush()
        got = svc.http_crr(list(cases.values()), p.latency_count, svc.LATENCY_WARMUP)
        for name, values in got.items():
            pooled[name] += values
    log(f"service: throughput, {p.iperf_rounds} rounds")
    tput = paired((POD_IP, VIP_TC), p.iperf_rounds, lambda c: svc.iperf(cases[c], p.iperf_seconds))
    cost = {
        name: bpf_cost(node, functools.partial(wrk_rate, case, p, p.cost_seconds))
        for name, case in cases.items()
    }
    node.program([])
    lat = {name: summary(v) for name, v in pooled.items()}
    return {
        "service": {
            "algorithm": "maglev",
            "session_affinity": "ClientIP",
            "client": "outside the socket-LB cgroup",
        },
        "rate_cps": rates,
        "latency_us": lat,
        "throughput_gbps": tput,
        "bpf_cost": cost,
        "testrun_ns_per_connection": testrun,
    }


# --- ratios, targets, plot (pure) -----------------------------------------------------


def _us_ratio(lat: dict[str, Any], a: str, b: str, q: str) -> float | None:
    return round(lat[b][q] / lat[a][q], 3) if lat[a][q] else None


def ratios(doc: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    e = doc.get("enforcement")
    if e:
        out["enforcement.rate"] = e["rate_cps"]["ratio"]
        out["enforcement.conn_per_cpu_s"] = e["rate_cps"]["per_cpu_s"]["ratio"]
        out["enforcement.throughput"] = e["throughput_gbps"]["ratio"]
        for q in ("p50", "p99"):
            out[f"enforcement.latency_{q}"] = _us_ratio(e["latency_us"], NO_POLICY, POLICY, q)
    s = doc.get("service")
    if s:
        out["service.rate"] = s["rate_cps"]["ratio"]
        out["service.conn_per_cpu_s"] = s["rate_cps"]["per_cpu_s"]["ratio"]
        out["service.throughput"] = s["throughput_gbps"]["ratio"]
        for q in ("p50", "p99"):
            out[f"service.latency_{q}"] = _us_ratio(s["latency_us"], POD_IP, VIP_TC, q)
    return out


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    r = doc["ratios"]
    full = [
        row for row in doc.get("program", []) if row["endpoints"] == 1000 and row["rules"] == 1000
    ]
    total = full[0]["total_s"] if full else None

    def entry(value: float | None, limit: float, unit: str, higher: bool) -> dict[str, Any]:
        met = None if value is None else (value >= limit if higher else value < limit)
        return {"value": value, "limit": limit, "unit": unit, "met": met}

    prop = doc.get("propagation")
    change_p99 = round(prop["every_node_ms"]["p99"] / 1000, 4) if prop else None
    return {
        "compute_and_program_1000_rules_1000_endpoints": entry(total, 1.0, "s", False),
        # The "a policy change on every node within 1 s", over many changes.
        "policy_change_every_node": entry(change_p99, 1.0, "s", False),
        "enforcement_rate_ratio": entry(r.get("enforcement.rate"), 0.95, "ratio", True),
        "enforcement_throughput_ratio": entry(r.get("enforcement.throughput"), 0.98, "ratio", True),
        "service_per_packet_rate_ratio": entry(r.get("service.rate"), 0.95, "ratio", True),
        # The same rate targets in connections per CPU-second: the cost, which the
        # other work of a shared machine hardly moves (the wall-clock rate it does).
        "enforcement_conn_per_cpu_ratio": entry(
            r.get("enforcement.conn_per_cpu_s"), 0.95, "ratio", True
        ),
        "service_per_packet_conn_per_cpu_ratio": entry(
            r.get("service.conn_per_cpu_s"), 0.95, "ratio", True
        ),
    }


def merge_previous(
    doc: dict[str, Any], previous: dict[str, Any], parts_run: set[str]
) -> dict[str, Any]:
    """``doc`` with the parts it did not measure taken from ``previous`` (the
    policy.json of an earlier run); ``part_runs`` says which run measured each
    (its date, commit and load: the top-level ``host`` is this run's)."""
    out = dict(doc)
    old_runs = previous.get("part_runs") or {}

    def run_of(d: dict[str, Any]) -> dict[str, Any]:
        host = d.get("host") or {}
        keys = ("glia_commit", "load_average_1m_before", "load_average_1m_after")
        return {"date": d.get("date"), **{k: host.get(k) for k in keys}}

    runs: dict[str, Any] = {}
    for part in PARTS:
        if part in parts_run and part in doc:
            runs[part] = run_of(doc)
        elif part in previous and part not in doc:
            out[part] = previous[part]
            runs[part] = old_runs.get(part, run_of(previous))
    out["part_runs"] = runs
    return out


def _propagation_panel(ax: Any, prop: dict[str, Any] | None) -> None:
    if not prop:
        ax.text(0.5, 0.5, "propagation not measured", ha="center", va="center")
        ax.set_axis_off()
        return
    samples = sorted(prop["samples_ms"])
    n = len(samples)
    ax.plot(samples, [(i + 1) / n for i in range(n)], color=GLIA_COLOR, label="every node")
    every = prop["every_node_ms"]
    for q, style in (("p50", ":"), ("p99", "--")):
        ax.axvline(
            every[q], color="#555555", linestyle=style, linewidth=1, label=f"{q} {every[q]} ms"
        )
    ax.axvline(1000, color="#c0392b", linestyle="--", linewidth=1, label="1 s target (p99)")
    ax.set_xscale("log")
    ax.set_xlabel("write returned -> programmed on every node (ms)")
    ax.set_ylabel("fraction of changes")
    agent = prop["agent_flush_ms"]
    ax.set_title(
        f"a policy change on every node: {prop['lab']['nodes']} nodes, {prop['changes']} changes"
        f"\nagents' flush p50: {agent['latency_ms']['p50']} ms (compute "
        f"{agent['compute_ms']['p50']}, program {agent['program_ms']['p50']})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower right")


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(21, 5))
    ax = axes[0]
    rows = doc.get("program", [])
    labels = [f"{r['endpoints']}/{r['rules']}" for r in rows]
    comp = [r["compute_s"] for r in rows]
    prog = [r["program_s"] for r in rows]
    x = range(len(rows))
    ax.bar(x, comp, color=GLIA_COLOR, label="compute (PolicyEngine)")
    ax.bar(x, prog, bottom=comp, color="#8e6bbf", label="program (BPF maps)")
    ax.axhline(1.0, color="#c0392b", linestyle="--", linewidth=1, label="1 s target (1000/1000)")
    ax.set_xticks(list(x), labels, rotation=45)
    ax.set_xlabel("endpoints / rules")
    ax.set_ylabel("s")
    ax.set_title("compute + program, every endpoint")
    ax.legend(fontsize=8)
    for ax, key, title, limits in (
        (axes[1], "enforcement", "policy at both ends / no policy", (0.95, 0.98)),
        (axes[2], "service", "per-packet VIP (Maglev, ClientIP) / pod IP", (0.95, 0.95)),
    ):
        r = doc["ratios"]
        names = ["rate", "conn_per_cpu_s", "throughput", "latency_p50", "latency_p99"]
        vals = [r.get(f"{key}.{n}") or 0 for n in names]
        colors = [GLIA_COLOR, GLIA_COLOR, GLIA_COLOR, "#9a9a9a", "#9a9a9a"]
        ax.bar(["rate", "conn/CPU-s", "throughput", "p50", "p99"], vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(i, v + 0.01, f"{v:.3f}", ha="center", fontsize=9)
        ax.axhline(1.0, color="black", linewidth=0.5)
        ax.axhline(limits[0], color="#c0392b", linestyle="--", linewidth=1)
        ax.set_ylim(0.5, 1.3)
        ax.set_title(f"{title}\n(latency: higher = slower)", fontsize=10)
    _propagation_panel(axes[3], doc.get("propagation"))
    runs = doc.get("part_runs") or {}
    by_run: dict[tuple[Any, ...], list[str]] = {}
    for part, r in runs.items():
        key = (r["date"], r["load_average_1m_before"], r["load_average_1m_after"])
        by_run.setdefault(key, []).append(part)
    if len(by_run) > 1:  # --merge: parts of several runs
        title = "glia policy benchmark: " + "; ".join(
            f"{', '.join(parts)} {date} (load {before} -> {after})"
            for (date, before, after), parts in by_run.items()
        )
    else:
        title = (
            f"glia policy benchmark, {doc['date']} (load {doc['host']['load_average_1m_before']}"
            f" -> {doc['host']['load_average_1m_after']})"
        )
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main ------------------------------------------------------------------------


def check_host(obj_dir: Path, parts: set[str]) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark builds namespaces and loads BPF")
    tools = (*TOOLS, *LAB_TOOLS) if "propagation" in parts else TOOLS
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    missing_objs = [o for o in OBJECT_FILES if not (obj_dir / o).is_file()]
    if missing_objs:
        raise BenchError(f"no {', '.join(missing_objs)} in {obj_dir}: run `make bpf`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder ({RESULTS})")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only these parts (repeatable; default: all)",
    )
    parser.add_argument(
        "--obj-dir",
        type=Path,
        default=default_obj_dir(),
        help="BPF objects to load (default: this tree's build/bpf; another tree's "
        "for a before/after comparison)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the parts this run does not measure from the policy.json in --out",
    )
    parser.add_argument("--changes", type=int, help="policy changes of the propagation part")
    args = parser.parse_args(argv)
    p = Params.quick() if args.quick else Params()
    if args.changes:
        p = replace(p, prop_changes=args.changes)
    parts = set(args.only or PARTS)
    interrupt_on_sigterm()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    obj_dir = args.obj_dir.resolve()
    bg = Background(record=svc.PIDS)
    node: Node | None = None
    host: dict[str, Any] = {}
    doc: dict[str, Any] = {}
    try:
        check_host(obj_dir, parts)
        host = host_info()
        svc.cleanup()  # leftovers of a crashed run
        svc.RUN_DIR.mkdir(parents=True)
        if parts & set(NODE_PARTS):
            node = Node(obj_dir)
            node.build()
        if node is not None and "program" in parts:
            doc["program"] = compute_and_program(node.dp.policy, p)
        if "service" in parts or "enforcement" in parts:
            svc.start_servers(bg, node)
        if "service" in parts:
            doc["service"] = service_path(node, p)
        if "enforcement" in parts:
            cluster = compute(p.full_endpoints, p.full_rules, bench_policies())
            doc["enforcement"] = enforcement(node, Policies(node, cluster), p)
            doc["enforcement"]["full_map"] = {
                "endpoints": cluster.endpoints,
                "rules": p.full_rules,
                "identities": cluster.identities,
                "entries": cluster.entries,
            }
        if node is not None:
            bg.stop_all()
            node.close()  # the lab below has the machine to itself
            node = None
        if "propagation" in parts:
            pp = _polprop.PropParams(changes=p.prop_changes, background=p.prop_background)
            doc["propagation"] = _polprop.run(pp)
    except (BenchError, DatapathError, LabError, subprocess.SubprocessError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("tearing down")
        bg.stop_all()
        if node is not None:
            with contextlib.suppress(Exception):
                node.close()
        svc.cleanup()
    doc = {
        "benchmark": "policy",
        "schema": 1,
        "date": date,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
        "host": {**host, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "params": asdict(p),
        "bpf_objects": str(obj_dir),
        **doc,
    }
    previous = args.out / "policy.json"
    if args.merge and previous.is_file():
        doc = merge_previous(doc, json.loads(previous.read_text()), parts)
    doc["ratios"] = ratios(doc)
    doc["targets"] = targets(doc)
    text = write_json(args.out / "policy.json", doc)
    plot(doc, args.out / "policy.png")
    sys.stdout.write(text)
    log(f"done in {doc['duration_s']:.0f} s: {args.out / 'policy.json'}, policy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
