"""Pod networking benchmark: glia's datapath against plain kernel networking, in one run.

Run as root from the repository: ``.venv/bin/python bench/pods.py [--quick] [--out DIR]
[--lab NAME] [--affinity none|split|shared] [--only SECTIONS]`` (``make bench``). It brings
up its own lab
(``--lab``, default "gliabench": one cluster, two nodes, real etcd, agents and
podman), builds a reference of its own in namespaces named ``<lab>-ref-*``,
measures, and tears everything down at the end, also on failure or Ctrl-C.
It prints one JSON document on stdout (progress goes to stderr) and writes
``pods.json`` and ``pods.png`` into ``--out`` (default ``bench/results``); a
run of some sections only (``--only egress,dns``) writes ``pods-<sections>.json``
and ``.png`` instead, so it never overwrites the full result. The document's
``targets`` judges issue 10's speed targets (bench/_podsreport.py).

What is measured, side by side (only ratios from one run mean something on a
noisy 2-vCPU machine), by section:

- ``throughput`` and ``latency``: TCP throughput (iperf3, one stream, rounds
  of every path with the order rotating; per path median and spread, per round
  glia / reference: the paired ratio; load average per run;
  bench/_throughput.py) and, over one more glia run, the BPF programs' ns per
  packet and ms per GB; request/response latency (one-byte ping-pong over one
  connection, and one round trip on a fresh connection each time) between pods
  on the same node and across nodes: glia pods (podman containers through
  glia-cni, the eBPF datapath) against the reference, pods wired by kernel
  routing without BPF (same node: a node namespace with forwarding on, veths,
  /32 routes; across nodes: two node namespaces on a bridge, routed either
  directly over the underlay or over a kernel VXLAN device with a static FDB,
  glia's encapsulation). Every pod, glia's and the reference's, has MTU 1450
  (glia's pod MTU), so the datapath is the only difference.
- ``cni``: glia-cni ADD and DEL latency: the plugin run as podman runs it
  (environment, stdin, inside the node's namespace) against the node's agent,
  on a namespace of our own, DEL after each ADD.
- ``start``: container start: ``podman run -d`` until it returns (container
  running) with the glia network and with ``--network none``, and, for glia,
  until the container's first ICMP echo reply from a pod on the same node
  (pinged from inside the container's namespace as soon as podman creates it).
- ``egress``: a pod's TCP throughput to the lab's world masqueraded by the
  node against the same path routed without NAT (bench/egress.py's measure).
- ``dns``: query times from a pod to its node's agent, per kind of query
  (bench/dnslatency.py's measure).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _throughput
import dnslatency
import egress
from _common import (  # bench/ is a folder of scripts
    Background,
    BenchError,
    LogReporter,
    in_netns,
    interrupt_on_sigterm,
    listening,
    log,
    netns_add,
    netns_delete,
    netns_path,
    nsenter,
    run,
    summary,
    wait_for,
    write_json,
)
from _common import (
    host_info as common_host_info,
)
from _podsreport import (
    ACROSS,
    GLIA,
    ROUTING,
    SAME,
    SECTIONS,
    VXLAN,
    parse_sections,
    plot,
    ratios,
    result_stem,
    targets,
)
from _probe import first_echo_reply, interface_ipv4, new_netns  # bench/ is a folder of scripts
from _throughput import AFFINITIES, KernelReference
from _throughput import Path as TPath
from glia.lab import topology
from glia.lab.lab import Lab, LabError, bin_dir
from glia.lab.podman import Container, NodePodman

LAB = "gliabench"
REF = "gliabench-ref-"  # prefix of the reference's namespaces
CNI_NS = "gliabench-cni"
CONTAINER = "gliabench-"  # prefix of the containers this benchmark starts
NODE1, NODE2 = "c1/n1", "c1/n2"
MTU = 1450  # glia's pod MTU (agent default: underlay 1500 minus VXLAN)
IPERF_PORT = 5201
RR_PORT = 7777
REACH_TIMEOUT = 30.0
TOOL = Path(__file__).resolve().parent / "_loadtool.py"
RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = ("ip", "bridge", "nsenter", "ss", "sysctl", "iperf3", "podman")

REFERENCES = {
    ROUTING: "no BPF: veths with /32 routes and static neighbours in a node namespace with "
    "forwarding on; across nodes routed directly over the underlay bridge (no encapsulation)",
    VXLAN: "no BPF: as kernel_routing on each node, across nodes through a kernel VXLAN "
    "device (static FDB and neighbour), the same encapsulation as glia",
}


@dataclass(frozen=True)
class Params:
    iperf_seconds: int = 4
    iperf_reps: int = 8  # rounds; one stream on 2 shared vCPUs moves +-30% run to run
    affinity: str = "none"  # key of AFFINITIES: where iperf3's client and server run
    rr_count: int = 5000  # one-byte round trips per run on one connection
    crr_count: int = 1000  # fresh connections per run, one round trip each
    latency_reps: int = 3
    cni_count: int = 50
    start_count: int = 20
    egress_rounds: int = 5  # rounds of masquerade, routed and node, 1 iperf3 run each
    egress_seconds: int = 5
    dns_count: int = 5000  # queries of each kind

    @classmethod
    def quick(cls) -> Params:
        return cls(
            iperf_seconds=1,
            iperf_reps=2,
            rr_count=1000,
            crr_count=100,
            latency_reps=1,
            cni_count=5,
            start_count=3,
            egress_rounds=2,
            egress_seconds=1,
            dns_count=500,
        )


@dataclass(frozen=True)
class Case:
    """One client -> server path to measure."""

    scenario: str  # SAME or ACROSS
    variant: str  # GLIA, ROUTING or VXLAN
    client_ns: str  # namespace path
    server_ns: str
    server_ip: str
    prepare: Callable[[], None] = field(default=lambda: None, compare=False)


# --- the reference: pods wired by kernel routing ------------------------------------


class Reference(KernelReference):
    """bench/_throughput.py's reference under this benchmark's names (``REF``*)."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__(prefix or REF, MTU)


# --- measurements ----------------------------------------------------------------


def _path(case: Case) -> TPath:
    return TPath(
        f"{case.scenario}/{case.variant}",
        case.client_ns,
        case.server_ns,
        case.server_ip,
        case.prepare,
    )


def reach(case: Case) -> None:
    _throughput.reach(_path(case))


def iperf(case: Case, seconds: int, affinity: str | None = None) -> float:
    """One iperf3 run from client to server; received Gbit/s."""
    return _throughput.iperf(_path(case), seconds, affinity).gbps


def request_response(case: Case, params: Params) -> tuple[list[float], list[float]]:
    case.prepare()
    argv = [
        sys.executable,
        str(TOOL),
        "rr-client",
        "--host",
        case.server_ip,
        "--port",
        str(RR_PORT),
        "--count",
        str(params.rr_count),
        "--connects",
        str(params.crr_count),
    ]
    proc = run(nsenter(case.client_ns, argv), timeout=180)
    out = json.loads(proc.stdout)
    return list(out["rr_us"]), list(out["crr_us"])


def start_servers(bg: Background, cases: list[Case]) -> None:
    """iperf3 and the request/response server in every server namespace, listening."""
    for server_ns in sorted({c.server_ns for c in cases}):
        servers = {
            IPERF_PORT: ["iperf3", "-s", "-p", str(IPERF_PORT)],
            RR_PORT: [sys.executable, str(TOOL), "rr-server", "--port", str(RR_PORT)],
        }
        for port, argv in servers.items():
            _wait_listening(bg.start(nsenter(server_ns, argv)), server_ns, port, argv[0])


def _wait_listening(proc: subprocess.Popen[bytes], ns: str, port: int, what: str) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BenchError(f"{what} in {ns} exited with {proc.returncode}: {err.strip()}")
        return listening(ns, port)

    wait_for(f"{what} listening on port {port} in {ns}", up, 20)


def cni_latency(lab: Lab, params: Params) -> dict[str, Any]:
    """glia-cni ADD then DEL on namespace CNI_NS, run as podman runs it, ``cni_count`` times;
    and VERSION, which podman runs before each ADD and DEL while it loads the network list.

    The plugin is what podman executes (the lab's CNI bin dir: the compiled fast path),
    and, for comparison, the Python plugin it falls back to (``python``). It is
    started from a thread inside the node's namespace, as podman (which runs
    there) starts it: no nsenter in the timing.
    """
    node = lab.node(NODE1)
    conflist = json.loads((node.cni_config_dir / "glia.conflist").read_text())
    # What libcni hands each plugin of a list: the list's version and name merged in.
    conf = {
        "cniVersion": conflist["cniVersion"],
        "name": conflist["name"],
        **conflist["plugins"][0],
    }
    netns_delete(CNI_NS)
    target = netns_add(CNI_NS)
    plugins = {"fast": lab.topo.cni_bin_dir / "glia-cni", "python": bin_dir() / "glia-cni"}
    out: dict[str, Any] = {}
    for kind, plugin in plugins.items():
        times = in_netns(
            netns_path(node.netns),
            lambda plugin=plugin, kind=kind: _cni_runs(lab, params, conf, target, plugin, kind),
        )
        out[kind] = {verb: summary(ms) for verb, ms in times.items()}
    netns_delete(CNI_NS)
    return {**out["fast"], "python": out["python"]}


def _cni_runs(
    lab: Lab, params: Params, conf: dict[str, Any], target: str, plugin: Path, kind: str
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"add": [], "del": [], "version": []}
    for i in range(params.cni_count + 1):  # the first round warms caches, not counted
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_CONTAINERID": secrets.token_hex(32),
            "CNI_NETNS": target,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={CONTAINER}cni-{kind}-{i}",
            "CNI_PATH": str(lab.topo.cni_bin_dir),
        }
        t0 = time.monotonic()
        version = run([str(plugin)], env={**env, "CNI_COMMAND": "VERSION"}, timeout=60)
        t1 = time.monotonic()
        if b"supportedVersions" not in version.stdout:
            raise BenchError(f"glia-cni VERSION printed {version.stdout[:200]!r}")
        added = run(
            [str(plugin)],
            env={**env, "CNI_COMMAND": "ADD"},
            input=json.dumps(conf).encode(),
            timeout=60,
            check=False,
        )
        t2 = time.monotonic()
        result = _cni_output(added, "ADD")
        if not result.get("ips"):
            raise BenchError(f"glia-cni ADD returned no IP: {result}")
        prev = json.dumps({**conf, "prevResult": result}).encode()
        t3 = time.monotonic()
        deleted = run(
            [str(plugin)], env={**env, "CNI_COMMAND": "DEL"}, input=prev, timeout=60, check=False
        )
        t4 = time.monotonic()
        _cni_output(deleted, "DEL")
        if i:
            times["version"].append((t1 - t0) * 1000)
            times["add"].append((t2 - t1) * 1000)
            times["del"].append((t4 - t3) * 1000)
    return times


def _cni_output(proc: subprocess.CompletedProcess[bytes], verb: str) -> dict[str, Any]:
    text = proc.stdout.decode(errors="replace").strip()
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        raise BenchError(f"glia-cni {verb} printed no JSON: {text[:200]!r}") from None
    if proc.returncode != 0:
        raise BenchError(f"glia-cni {verb} failed: {doc.get('msg')} {doc.get('details', '')}")
    return dict(doc)


def start_one(pm: NodePodman, name: str, network: str, peer: Container | None) -> dict[str, float]:
    """Times in ms from the start of ``podman run -d``: until it returned, until ``peer``
    (a pod on the same node) first gets an echo reply from the new container, and the rm.

    The pinging is done from the peer: the container is pinged as soon as its
    namespace has an address. Sending from inside the new namespace while the
    agent still configures it would race the agent's neighbour entry.
    """
    found: list[float] = []
    failed: list[BaseException] = []
    probe = new_netns(set(os.listdir("/run/netns")))

    def pinger(peer_ns: str) -> None:
        try:
            deadline = time.monotonic() + REACH_TIMEOUT
            path = wait_for(f"the namespace of {name}", probe, REACH_TIMEOUT, every=0.001)
            ip = in_netns(
                path,
                lambda: wait_for(
                    f"an address in {name}", lambda: interface_ipv4("eth0"), 20, every=0.001
                ),
            )
            left = deadline - time.monotonic()
            found.append(in_netns(peer_ns, lambda: first_echo_reply(ip, left, 0.001)))
        except BaseException as e:
            failed.append(e)

    argv = pm.argv(
        ["run", "-d", "--name", name, "--network", network, topology.IMAGE, "sleep", "3600"]
    )
    thread = None
    if peer is not None and peer.netns_path:
        thread = threading.Thread(target=pinger, args=(peer.netns_path,), name="glia-bench-ping")
    t0 = time.monotonic()
    if thread is not None:
        thread.start()
    proc = run(argv, env=pm.env, timeout=60, check=False)
    t_run = time.monotonic()
    if thread is not None:
        thread.join()
    t1 = time.monotonic()
    run(pm.argv(["rm", "-f", "-t", "0", name]), env=pm.env, timeout=60, check=False)
    t_rm = time.monotonic() - t1
    if proc.returncode != 0:
        raise BenchError(f"podman run {name} failed: {proc.stderr.decode(errors='replace')}")
    if failed:
        raise BenchError(f"{name}: {failed[0]}")
    out = {"run": (t_run - t0) * 1000, "rm": t_rm * 1000}
    if found:
        out["first_ping"] = (found[0] - t0) * 1000
    return out


def container_start(lab: Lab, params: Params, peer: Container) -> dict[str, Any]:
    pm = lab.podman(NODE1)
    times: dict[str, dict[str, list[float]]] = {"glia": {}, "none": {}}
    for i in range(params.start_count):
        for network, ping_from in (("glia", peer), ("none", None)):
            got = start_one(pm, f"{CONTAINER}start-{network}-{i}", network, ping_from)
            for key, ms in got.items():
                times[network].setdefault(key, []).append(ms)
    return {net: {k: summary(v) for k, v in t.items()} for net, t in times.items()}


# --- the run ---------------------------------------------------------------------


def pod_mtu(path: str) -> int:
    out = run(nsenter(path, ["ip", "-o", "link", "show", "eth0"])).stdout.decode()
    m = re.search(r"\bmtu (\d+)", out)
    if m is None:
        raise BenchError(f"no MTU in {out!r}")
    return int(m.group(1))


def glia_pods(lab: Lab) -> tuple[Container, Container, Container]:
    made = []
    for node, name in ((NODE1, "a"), (NODE1, "b"), (NODE2, "c")):
        c = lab.run_container(node, CONTAINER + name, command=["sleep", "3600"])
        if not c.ip or not c.netns_path:
            raise BenchError(f"container {c.name} has no IP or namespace: {c}")
        made.append(c)
    return made[0], made[1], made[2]


def cases_for(a: Container, b: Container, c: Container, ref: Reference) -> list[Case]:
    assert a.netns_path and b.netns_path and c.netns_path and b.ip and c.ip
    p1, p2, p3 = (netns_path(ref.ns(p)) for p in ("p1", "p2", "p3"))
    return [
        Case(SAME, GLIA, a.netns_path, b.netns_path, b.ip),
        Case(SAME, ROUTING, p1, p2, ref.pod_ip("p2")),
        Case(ACROSS, GLIA, a.netns_path, c.netns_path, c.ip),
        Case(ACROSS, ROUTING, p1, p3, ref.pod_ip("p3"), lambda: ref.use(ROUTING)),
        Case(ACROSS, VXLAN, p1, p3, ref.pod_ip("p3"), lambda: ref.use(VXLAN)),
    ]


def measure(lab: Lab, params: Params, bg: Background, sections: Sequence[str]) -> dict[str, Any]:
    """The figures of ``sections`` (keys of SECTIONS), measured in SECTIONS' order."""
    out: dict[str, Any] = {}
    peer: Container | None = None
    if {"throughput", "latency", "start"} & set(sections):
        log(f"glia: containers {CONTAINER}a, {CONTAINER}b on {NODE1} and {CONTAINER}c on {NODE2}")
        a, b, c = glia_pods(lab)
        peer = b
        if {"throughput", "latency"} & set(sections):
            out.update(measure_paths(lab, params, bg, (a, b, c), sections))
    if "cni" in sections:
        log(f"glia-cni ADD/DEL x{params.cni_count} on {NODE1}")
        out["cni_ms"] = cni_latency(lab, params)
    if peer is not None and "start" in sections:
        log(f"container start x{params.start_count}: glia vs --network none on {NODE1}")
        out["container_start_ms"] = container_start(lab, params, peer)
    if "egress" in sections:
        log(f"egress x{params.egress_rounds}: masquerade vs routed to the world from {NODE1}")
        out["egress"] = egress.measure(
            lab, params.egress_rounds, params.egress_seconds, CONTAINER + "egress"
        )
    if "dns" in sections:
        log(f"DNS: {params.dns_count} queries of each kind from a pod on {NODE2}")
        out["dns"] = {
            "queries_per_kind": params.dns_count,
            "unit": "µs per query, from a pod to its node's agent over UDP",
            "latency_us": dnslatency.measure(lab, params.dns_count, CONTAINER + "dns"),
        }
    return out


def measure_paths(
    lab: Lab,
    params: Params,
    bg: Background,
    pods: tuple[Container, Container, Container],
    sections: Sequence[str],
) -> dict[str, Any]:
    """Sections ``throughput`` and ``latency``: glia's pods ``pods`` against the reference."""
    a, b, c = pods
    ref = Reference()
    log(f"reference: kernel-routed pods in namespaces {REF}*")
    ref.build()
    cases = cases_for(a, b, c, ref)
    for case in cases:
        reach(case)
    start_servers(bg, cases)
    out: dict[str, Any] = {
        "mtu": {
            "glia_pod": pod_mtu(a.netns_path or ""),
            "reference_pod": MTU,
            "reference_vxlan": MTU,
            "underlay": 1500,
        }
    }
    if "throughput" in sections:
        out.update(measure_throughput(lab, params, cases))
    if "latency" in sections:
        out["latency_us"] = measure_latency(params, cases)
    bg.stop_all()
    return out


def measure_throughput(lab: Lab, params: Params, cases: list[Case]) -> dict[str, Any]:
    # Rounds of every case, the order rotating each round (drift and other
    # people's load hit every case alike); glia and its reference of a round
    # are compared with each other (paired ratios).
    paths = [_path(case) for case in cases]
    runs = _throughput.interleave(
        paths, params.iperf_reps, params.iperf_seconds, AFFINITIES[params.affinity]
    )
    log("BPF cost per packet: one more glia run across nodes with BPF statistics on")
    cost = datapath_cost(lab, next(p for p in paths if p.label == f"{ACROSS}/{GLIA}"), params)
    throughput: dict[str, Any] = {}
    for case in cases:
        stats = _throughput.path_stats(runs[f"{case.scenario}/{case.variant}"])
        throughput.setdefault(case.scenario, {})[case.variant] = {**stats, "best": stats["max"]}
    paired = {
        f"{scenario}.glia/{ref_variant}": _throughput.paired_ratio(
            runs[f"{scenario}/{GLIA}"], runs[f"{scenario}/{ref_variant}"]
        )
        for scenario, ref_variant in ((SAME, ROUTING), (ACROSS, ROUTING), (ACROSS, VXLAN))
    }
    return {
        "throughput_gbps": throughput,
        "throughput_paired_ratio": paired,
        "datapath_cost": cost,
    }


def measure_latency(params: Params, cases: list[Case]) -> dict[str, Any]:
    rr: dict[tuple[str, str], list[float]] = {}
    crr: dict[tuple[str, str], list[float]] = {}
    for rep in range(params.latency_reps):
        for case in cases:
            log(f"request/response {rep + 1}/{params.latency_reps}: {case.scenario} {case.variant}")
            got_rr, got_crr = request_response(case, params)
            rr.setdefault((case.scenario, case.variant), []).extend(got_rr)
            crr.setdefault((case.scenario, case.variant), []).extend(got_crr)
    latency: dict[str, Any] = {}
    for case in cases:
        key = (case.scenario, case.variant)
        latency.setdefault(case.scenario, {})[case.variant] = {
            "rr": summary(rr[key]),
            "connect_rr": summary(crr[key]),
        }
    return latency


def datapath_cost(lab: Lab, path: TPath, params: Params) -> dict[str, Any]:
    """ns of BPF per packet of every glia program on both nodes, over one glia run
    across nodes (data: from_endpoint on n1, from_overlay on n2; ACKs the other
    way), and per GB moved: the datapath's own work, which the throughput noise
    of a shared machine does not blur."""
    progs: dict[str, int] = {}
    for node in (NODE1, NODE2):
        ns = netns_path(lab.node(node).netns)
        for name, prog_id in _throughput.tc_programs(ns).items():
            progs[f"{node}:{name}"] = prog_id
    moved: list[float] = []

    def one_run() -> None:
        got = _throughput.iperf(path, params.iperf_seconds, AFFINITIES[params.affinity])
        moved.append(got.gbps * params.iperf_seconds / 8)  # GB

    per_prog = _throughput.bpf_cost(progs, one_run)
    gigabytes = moved[0] if moved else 0.0
    total_ms = sum(p["total_ms"] for p in per_prog.values())
    return {
        "programs": per_prog,
        "gbps": round(gigabytes * 8 / params.iperf_seconds, 3),
        "bpf_ms_per_gb": round(total_ms / gigabytes, 1) if gigabytes else None,
    }


def host_info() -> dict[str, Any]:
    iperf_version = run(["iperf3", "--version"], check=False).stdout.decode().split("\n")[0]
    return common_host_info(iperf3=iperf_version.strip())


def check_host() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark builds namespaces, a lab and containers")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")


def cleanup_reference() -> None:
    Reference().remove()
    netns_delete(CNI_NS)


def use_names(lab: str) -> None:
    """Every name this benchmark makes derives from the lab's: two runs with other
    --lab values share nothing (namespaces, containers, lab directory)."""
    global LAB, REF, CNI_NS, CONTAINER
    LAB, REF, CNI_NS, CONTAINER = lab, f"{lab}-ref-", f"{lab}-cni", f"{lab}-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder ({RESULTS})")
    parser.add_argument(
        "--lab",
        default=LAB,
        help=f"lab name, also the prefix of every namespace and container ({LAB}); "
        "'glia' + up to 8 [a-z0-9], so runs of several people never meet",
    )
    parser.add_argument(
        "--affinity",
        choices=sorted(AFFINITIES),
        default="none",
        help="iperf3 client and server CPUs: none (the scheduler's choice, default), "
        "split (CPU 0 and 1), shared (both on CPU 1: the whole path's cost on one CPU)",
    )
    parser.add_argument(
        "--only",
        type=parse_sections,
        default=SECTIONS,
        metavar="SECTIONS",
        help=f"a comma list of sections to measure ({','.join(SECTIONS)}; default all); "
        "a partial run writes pods-<sections>.json and .png, never pods.json",
    )
    args = parser.parse_args(argv)
    sections: tuple[str, ...] = args.only
    if not re.fullmatch(r"glia[a-z0-9]{1,8}", args.lab):
        parser.error(f"--lab {args.lab!r}: expected 'glia' + 1 to 8 of [a-z0-9]")
    use_names(args.lab)
    params = Params.quick() if args.quick else Params()
    params = replace(params, affinity=args.affinity)
    interrupt_on_sigterm()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    bg = Background()
    lab: Lab | None = None
    host: dict[str, Any] = {}
    try:
        check_host()
        host = host_info()
        cleanup_reference()  # leftovers of a crashed run
        lab_dir = topology.DEFAULT_LAB_DIR.with_name(f"lab-{LAB}")
        lab = Lab.open(LAB, lab_dir, clusters=1, nodes=2, reporter=LogReporter())
        lab.up(recreate=True)
        figures = measure(lab, params, bg, sections)
    except (BenchError, LabError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        # A second Ctrl-C must not leave half a lab behind: teardown runs to its end.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("tearing down")
        bg.stop_all()
        cleanup_reference()
        if lab is not None:
            report = lab.down()
            for problem in report.problems:
                log(f"teardown: {problem}")
    doc: dict[str, Any] = {
        "benchmark": "pods",
        "schema": 2,
        "date": date,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
        "host": {**host, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "params": asdict(params),
        "sections": list(sections),
        **({"references": REFERENCES} if "mtu" in figures else {}),
        **figures,
    }
    doc["ratios"] = ratios(doc)
    doc["targets"] = targets(doc)
    stem = args.out / result_stem(sections)
    text = write_json(stem.with_suffix(".json"), doc)
    plot(doc, stem.with_suffix(".png"))
    sys.stdout.write(text)
    log(f"done in {doc['duration_s']:.0f} s: {stem}.json, {stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
