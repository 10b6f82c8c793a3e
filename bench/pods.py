"""Pod networking benchmark: glia's datapath against plain kernel networking, in one run.

Run as root from the repository: ``.venv/bin/python bench/pods.py [--quick] [--out DIR]``
(``make bench``). It brings up its own lab ("gliabench": one cluster, two nodes,
real etcd, agents and podman), builds a reference of its own in namespaces
named ``gliabench-ref-*``, measures, and tears everything down at the end, also
on failure or Ctrl-C. It prints one JSON document on stdout (progress goes to
stderr) and writes ``pods.json`` and ``pods.png`` into ``--out``
(default ``bench/results``).

What is measured, side by side (only ratios from one run mean something on a
noisy 2-vCPU machine):

- TCP throughput (iperf3, median of interleaved runs) and request/response
  latency (one-byte ping-pong over one connection, and one round trip on a
  fresh connection each time) between pods on the same node and across nodes:
  glia pods (podman containers through glia-cni, the eBPF datapath) against
  the reference, pods wired by kernel routing without BPF (same node: a node
  namespace with forwarding on, veths, /32 routes; across nodes: two node
  namespaces on a bridge, routed either directly over the underlay or over a
  kernel VXLAN device with a static FDB, glia's encapsulation). Every pod,
  glia's and the reference's, has MTU 1450 (glia's pod MTU), so the datapath
  is the only difference.
- glia-cni ADD and DEL latency: the plugin run as podman runs it (environment,
  stdin, inside the node's namespace) against the node's agent, on a namespace
  of our own, DEL after each ADD.
- Container start: ``podman run -d`` until it returns (container running) with
  the glia network and with ``--network none``, and, for glia, until the
  container's first ICMP echo reply from a pod on the same node (pinged from
  inside the container's namespace as soon as podman creates it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # bench/ is a folder of scripts
    GLIA_COLOR,
    Background,
    Bar,
    BenchError,
    Group,
    bar_panel,
    first_echo_reply,
    in_netns,
    interface_ipv4,
    ip_batch,
    listening,
    log,
    median,
    netns_add,
    netns_delete,
    netns_names,
    netns_path,
    new_netns,
    nsenter,
    ratio,
    run,
    summary,
    sysctl,
    wait_for,
    write_json,
)
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
TOOL = Path(__file__).resolve().parent / "_common.py"
RESULTS = Path(__file__).resolve().parent / "results"
TOOLS = ("ip", "bridge", "nsenter", "ss", "sysctl", "iperf3", "podman")

GLIA, ROUTING, VXLAN = "glia", "kernel_routing", "kernel_vxlan"
SAME, ACROSS = "same_node", "across_nodes"
REFERENCES = {
    ROUTING: "no BPF: veths with /32 routes and static neighbours in a node namespace with "
    "forwarding on; across nodes routed directly over the underlay bridge (no encapsulation)",
    VXLAN: "no BPF: as kernel_routing on each node, across nodes through a kernel VXLAN "
    "device (static FDB and neighbour), the same encapsulation as glia",
}


@dataclass(frozen=True)
class Params:
    iperf_seconds: int = 5
    iperf_reps: int = 5
    rr_count: int = 5000  # one-byte round trips per run on one connection
    crr_count: int = 1000  # fresh connections per run, one round trip each
    latency_reps: int = 3
    cni_count: int = 50
    start_count: int = 20

    @classmethod
    def quick(cls) -> Params:
        return cls(
            iperf_seconds=1,
            iperf_reps=1,
            rr_count=1000,
            crr_count=100,
            latency_reps=1,
            cni_count=5,
            start_count=3,
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


class Reference:
    """Nodes ``n1``/``n2`` on an underlay bridge; pods p1, p2 on n1 and p3 on n2.

    Addressing copies glia's (glia.datapath.netlink): pod ip/32, ``gateway/32
    scope link``, ``default via gateway onlink``, permanent neighbours on both
    sides, so no ARP is involved; the node routes ``ip/32`` to the pod's veth.
    """

    UNDERLAY = f"{REF}ul"
    NODES = {
        "n1": ("172.31.250.1", "10.251.1.0/24", "02:62:00:00:f1:00"),
        "n2": ("172.31.250.2", "10.251.2.0/24", "02:62:00:00:f2:00"),
    }
    PODS = {"p1": ("n1", "10.251.1.2"), "p2": ("n1", "10.251.1.3"), "p3": ("n2", "10.251.2.2")}

    @staticmethod
    def ns(short: str) -> str:
        return REF + short

    def pod_ip(self, pod: str) -> str:
        return self.PODS[pod][1]

    def build(self) -> None:
        netns_add(self.UNDERLAY)
        ip_batch(self.UNDERLAY, ["link add br0 type bridge", "link set br0 up"])
        for i, (node, (under_ip, _, vx_mac)) in enumerate(self.NODES.items(), 1):
            ns = self.ns(node)
            netns_add(ns)
            ip_batch(
                self.UNDERLAY,
                [
                    f"link add {node}u type veth peer name eth0 netns {ns}",
                    f"link set {node}u master br0 up",
                ],
            )
            ip_batch(
                ns,
                [
                    f"addr add {under_ip}/24 dev eth0",
                    "link set eth0 up",
                    f"link add vx0 address {vx_mac} mtu {MTU} type vxlan id 251 "
                    f"local {under_ip} dstport 4789 dev eth0 nolearning",
                    "link set vx0 up",
                ],
            )
            sysctl(ns, "net.ipv4.ip_forward", "1")
            other = self.NODES["n2" if i == 1 else "n1"]
            ip_batch(
                ns,
                [f"neigh add {_first(other[1])} lladdr {other[2]} dev vx0 nud permanent"],
            )
            ip_batch(ns, [f"fdb append {other[2]} dev vx0 dst {other[0]}"], tool="bridge")
        for j, (pod, (node, ip)) in enumerate(self.PODS.items(), 1):
            self._pod(pod, node, ip, j)
        self.use(ROUTING)

    def _pod(self, pod: str, node: str, ip: str, j: int) -> None:
        pod_ns, node_ns = self.ns(pod), self.ns(node)
        gateway = _gateway(self.NODES[node][1])
        host_mac, pod_mac = f"02:62:00:00:{j:02x}:01", f"02:62:00:00:{j:02x}:02"
        netns_add(pod_ns)
        ip_batch(
            node_ns,
            [
                f"link add {pod}h address {host_mac} mtu {MTU} type veth peer name eth0 "
                f"address {pod_mac} mtu {MTU} netns {pod_ns}",
                f"link set {pod}h up",
                f"route add {ip}/32 dev {pod}h",
                f"neigh add {ip} lladdr {pod_mac} dev {pod}h nud permanent",
            ],
        )
        ip_batch(
            pod_ns,
            [
                f"addr add {ip}/32 dev eth0",
                "link set eth0 up",
                f"route add {gateway}/32 dev eth0 scope link",
                f"route add default via {gateway} dev eth0 onlink",
                f"neigh add {gateway} lladdr {host_mac} dev eth0 nud permanent",
            ],
        )

    def use(self, variant: str) -> None:
        """Route between the nodes' pod subnets directly (ROUTING) or over vx0 (VXLAN)."""
        for node, other in (("n1", "n2"), ("n2", "n1")):
            under_ip, subnet, _ = self.NODES[other]
            if variant == VXLAN:
                via = f"via {_first(subnet)} dev vx0 onlink"
            else:
                via = f"via {under_ip} dev eth0"
            ip_batch(self.ns(node), [f"route replace {subnet} {via}"])

    @staticmethod
    def remove() -> None:
        for name in netns_names(REF):
            netns_delete(name)


def _first(subnet: str) -> str:
    """The subnet's network address, used as the VXLAN next hop (flannel's scheme)."""
    return subnet.split("/")[0]


def _gateway(subnet: str) -> str:
    a, b, c, _ = _first(subnet).split(".")
    return f"{a}.{b}.{c}.1"


# --- measurements ----------------------------------------------------------------


def reach(case: Case) -> None:
    case.prepare()
    label = f"{case.variant} {case.scenario} -> {case.server_ip}"
    try:
        in_netns(case.client_ns, lambda: first_echo_reply(case.server_ip, REACH_TIMEOUT, 0.05))
    except BenchError as e:
        raise BenchError(f"{label}: the path does not work: {e}") from None


def iperf(case: Case, seconds: int) -> float:
    """One iperf3 run from client to server; received Gbit/s."""
    case.prepare()
    argv = ["iperf3", "-c", case.server_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    proc = run(nsenter(case.client_ns, argv), timeout=seconds + 30, check=False)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    if proc.returncode != 0 or "error" in doc:
        detail = doc.get("error") or proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"iperf3 {case.variant} {case.scenario} failed: {detail}")
    bps = float(doc["end"]["sum_received"]["bits_per_second"])
    return round(bps / 1e9, 3)


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
    """glia-cni ADD then DEL on namespace CNI_NS, run as podman would, ``cni_count`` times."""
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
    plugin = nsenter(netns_path(node.netns), [str(bin_dir() / "glia-cni")])
    add_ms: list[float] = []
    del_ms: list[float] = []
    for i in range(params.cni_count + 1):  # the first pair warms caches, not counted
        cid = secrets.token_hex(32)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": target,
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME={CONTAINER}cni-{i}",
            "CNI_PATH": str(lab.topo.cni_bin_dir),
        }
        t0 = time.monotonic()
        added = run(
            plugin,
            env={**env, "CNI_COMMAND": "ADD"},
            input=json.dumps(conf).encode(),
            timeout=60,
            check=False,
        )
        t1 = time.monotonic()
        result = _cni_output(added, "ADD")
        if not result.get("ips"):
            raise BenchError(f"glia-cni ADD returned no IP: {result}")
        prev = json.dumps({**conf, "prevResult": result}).encode()
        t2 = time.monotonic()
        deleted = run(
            plugin, env={**env, "CNI_COMMAND": "DEL"}, input=prev, timeout=60, check=False
        )
        t3 = time.monotonic()
        _cni_output(deleted, "DEL")
        if i:
            add_ms.append((t1 - t0) * 1000)
            del_ms.append((t3 - t2) * 1000)
    netns_delete(CNI_NS)
    return {"add": summary(add_ms), "del": summary(del_ms)}


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


class Reporter:
    def step(self, text: str) -> None:
        log(text)

    def note(self, text: str) -> None:
        pass


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


def measure(lab: Lab, params: Params, bg: Background) -> dict[str, Any]:
    ref = Reference()
    log("reference: kernel-routed pods in namespaces gliabench-ref-*")
    ref.build()
    log("glia: containers gliabench-a, gliabench-b on c1/n1 and gliabench-c on c1/n2")
    a, b, c = glia_pods(lab)
    cases = cases_for(a, b, c, ref)
    for case in cases:
        reach(case)
    start_servers(bg, cases)

    gbps: dict[tuple[str, str], list[float]] = {}
    for rep in range(params.iperf_reps):
        for case in cases:  # interleaved, so drift hits every case alike
            log(f"iperf3 {rep + 1}/{params.iperf_reps}: {case.scenario} {case.variant}")
            gbps.setdefault((case.scenario, case.variant), []).append(
                iperf(case, params.iperf_seconds)
            )
    rr: dict[tuple[str, str], list[float]] = {}
    crr: dict[tuple[str, str], list[float]] = {}
    for rep in range(params.latency_reps):
        for case in cases:
            log(f"request/response {rep + 1}/{params.latency_reps}: {case.scenario} {case.variant}")
            got_rr, got_crr = request_response(case, params)
            rr.setdefault((case.scenario, case.variant), []).extend(got_rr)
            crr.setdefault((case.scenario, case.variant), []).extend(got_crr)
    bg.stop_all()

    log(f"glia-cni ADD/DEL x{params.cni_count} on {NODE1}")
    cni = cni_latency(lab, params)
    log(f"container start x{params.start_count}: glia vs --network none on {NODE1}")
    start = container_start(lab, params, b)

    throughput: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    for scenario, variant in gbps:
        runs = gbps[scenario, variant]
        throughput.setdefault(scenario, {})[variant] = {
            "median": median(runs),
            "best": max(runs),
            "runs": runs,
        }
        latency.setdefault(scenario, {})[variant] = {
            "rr": summary(rr[scenario, variant]),
            "connect_rr": summary(crr[scenario, variant]),
        }
    return {
        "mtu": {
            "glia_pod": pod_mtu(a.netns_path or ""),
            "reference_pod": MTU,
            "reference_vxlan": MTU,
            "underlay": 1500,
        },
        "throughput_gbps": throughput,
        "latency_us": latency,
        "cni_ms": cni,
        "container_start_ms": start,
    }


def ratios(doc: dict[str, Any]) -> dict[str, float | None]:
    """glia / reference for every figure that has a reference (throughput: higher is
    better for glia; latencies and times: lower is better)."""
    out: dict[str, float | None] = {}
    for scenario, variants in doc["throughput_gbps"].items():
        for ref in (ROUTING, VXLAN):
            if ref in variants:
                g, r = variants[GLIA]["median"], variants[ref]["median"]
                out[f"throughput.{scenario}.glia/{ref}"] = ratio(g, r)
                for kind in ("rr", "connect_rr"):
                    for q in ("p50", "p99"):
                        lat = doc["latency_us"][scenario]
                        key = f"latency_{kind}_{q}.{scenario}.glia/{ref}"
                        out[key] = ratio(lat[GLIA][kind][q], lat[ref][kind][q])
    start = doc["container_start_ms"]
    for q in ("p50", "p99"):
        out[f"start_run_{q}.glia/none"] = ratio(start["glia"]["run"][q], start["none"]["run"][q])
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {GLIA: "glia (eBPF)", ROUTING: "kernel routing", VXLAN: "kernel VXLAN"}
    scen = {SAME: "same node", ACROSS: "across nodes"}

    def groups(pick: Callable[[dict[str, Any]], float], data: dict[str, Any]) -> list[Group]:
        return [
            Group(
                scen[s],
                tuple(Bar(names[v], pick(data[s][v]), v == GLIA) for v in data[s]),
            )
            for s in data
        ]

    lat = doc["latency_us"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    bar_panel(
        axes[0][0],
        "TCP throughput (iperf3, median)",
        "Gbit/s",
        groups(lambda v: v["median"], doc["throughput_gbps"]),
    )
    bar_panel(
        axes[0][1],
        "request/response p50 (1 byte, one connection)",
        "µs",
        groups(lambda v: v["rr"]["p50"], lat),
    )
    bar_panel(axes[0][2], "request/response p99", "µs", groups(lambda v: v["rr"]["p99"], lat))
    bar_panel(
        axes[1][0],
        "new connection + 1 round trip, p50",
        "µs",
        groups(lambda v: v["connect_rr"]["p50"], lat),
    )
    cni = doc["cni_ms"]
    shades = {"p50": GLIA_COLOR, "p99": "#7fb3d5"}
    bar_panel(
        axes[1][1],
        "glia-cni ADD / DEL (plugin run -> agent -> result)",
        "ms",
        [
            Group(verb.upper(), tuple(Bar(q, cni[verb][q], color=c) for q, c in shades.items()))
            for verb in ("add", "del")
        ],
    )
    st = doc["container_start_ms"]
    bar_panel(
        axes[1][2],
        "container start: ms from the start of `podman run -d`",
        "ms",
        [
            Group(
                q,
                (
                    Bar("glia: run returns", st["glia"]["run"][q], True),
                    Bar("--network none: run returns", st["none"]["run"][q]),
                    Bar("glia: first ping answered", st["glia"]["first_ping"][q], True, "#7fb3d5"),
                ),
            )
            for q in ("p50", "p99")
        ],
    )
    fig.suptitle(
        f"glia pods benchmark, {doc['date'][:16]} UTC, kernel {doc['host']['kernel']}, "
        f"{doc['host']['cpus']} vCPUs, load {doc['host']['load_average_1m_before']}"
        f"->{doc['host']['load_average_1m_after']}{' (quick)' if doc['quick'] else ''}\n"
        "ratios are glia / reference from this one run; every pod has MTU 1450",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def host_info() -> dict[str, Any]:
    iperf_version = run(["iperf3", "--version"], check=False).stdout.decode().split("\n")[0]
    repo = ["git", "-C", str(Path(__file__).resolve().parents[1])]
    commit = run([*repo, "rev-parse", "--short", "HEAD"], check=False).stdout.decode().strip()
    status = [*repo, "status", "--porcelain", "--untracked-files=no", "src", "bpf"]
    changes = run(status, check=False).stdout.decode().strip()
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "iperf3": iperf_version.strip(),
        "glia_commit": commit or None,
        "glia_uncommitted_changes": bool(changes),  # in src/ or bpf/ when it ran
        # Other work on the machine moves every figure: judge a run by these.
        "load_average_1m_before": round(os.getloadavg()[0], 2),
    }


def check_host() -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark builds namespaces, a lab and containers")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")


def cleanup_reference() -> None:
    Reference.remove()
    netns_delete(CNI_NS)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder ({RESULTS})")
    args = parser.parse_args(argv)
    params = Params.quick() if args.quick else Params()
    signal.signal(signal.SIGTERM, _terminate)
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
        lab = Lab.open(LAB, lab_dir, clusters=1, nodes=2, reporter=Reporter())
        lab.up(recreate=True)
        figures = measure(lab, params, bg)
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
        "schema": 1,
        "date": date,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
        "host": {**host, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "params": asdict(params),
        "references": REFERENCES,
        **figures,
    }
    doc["ratios"] = ratios(doc)
    text = write_json(args.out / "pods.json", doc)
    plot(doc, args.out / "pods.png")
    sys.stdout.write(text)
    log(f"done in {doc['duration_s']:.0f} s: {args.out / 'pods.json'}, {args.out / 'pods.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
