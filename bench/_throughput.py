"""Pod-to-pod TCP throughput, glia against the kernel's own VXLAN, measured so that
noise hits every path alike. Imported by ``bench/pods.py`` (across nodes of one
cluster) and meant for ``bench/mesh.py`` (across clusters); not a script.

- :class:`KernelReference`: the reference without BPF. Two node namespaces on
  an underlay bridge, pods p1, p2 on n1 and p3 on n2, addressed as glia
  addresses its pods; between the nodes either plain routing or a kernel
  VXLAN device (static FDB and neighbour, flannel's scheme). Every name starts
  with the caller's prefix, so several benchmarks can run side by side.
- :func:`interleave`: iperf3 runs of several paths in rounds; each round runs
  every path once, the order rotating from round to round, so drift and other
  people's load hit each path alike. Every run records the 1-minute load
  average and TCP retransmissions.
- :func:`path_stats`, :func:`paired_ratio`: median and spread of a path's
  runs; glia / reference per round (both measured back to back), whose median
  is the figure to quote.
- :func:`compare_with_kernel_vxlan`: the whole comparison for two running
  glia pods (client, server): builds the reference, starts the iperf3
  servers, measures, tears the reference down; returns a JSON-ready dict.
- :func:`bpf_cost`: nanoseconds of BPF per packet of given programs over one
  run, with the kernel's run-time statistics switched on through a file
  descriptor (``BPF_ENABLE_STATS``) that is closed right after, so they go
  off again even if the benchmark dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

sys.path.insert(0, str(FsPath(__file__).resolve().parent))

from _common import (  # bench/ is a folder of scripts
    Background,
    BenchError,
    in_netns,
    ip_batch,
    listening,
    log,
    netns_add,
    netns_delete,
    netns_names,
    netns_path,
    nsenter,
    percentile,
    run,
    sysctl,
    wait_for,
)
from _probe import first_echo_reply  # bench/ is a folder of scripts

IPERF_PORT = 5201
REACH_TIMEOUT = 30.0
MTU = 1450  # glia's pod MTU (agent default: underlay 1500 minus VXLAN)
ROUTING, VXLAN = "kernel_routing", "kernel_vxlan"
# iperf3 -A client,server. None: wherever the scheduler puts them (what a
# deployment sees); "split": one CPU each; "shared": both on one CPU, so the
# run measures the whole path's cost per byte on one CPU.
AFFINITIES: dict[str, str | None] = {"none": None, "split": "0,1", "shared": "1,1"}


# --- the reference: pods wired by the kernel, no BPF ---------------------------------


class KernelReference:
    """Nodes ``n1``/``n2`` on an underlay bridge; pods p1, p2 on n1 and p3 on n2.

    Addressing copies glia's (glia.datapath.netlink): pod ip/32, ``gateway/32
    scope link``, ``default via gateway onlink``, permanent neighbours on both
    sides, so no ARP is involved; the node routes ``ip/32`` to the pod's veth.
    The VXLAN device is the kernel's defaults otherwise (``udpcsum``, dst
    cache), bound to the underlay interface: what a flannel-like setup runs.
    """

    NODES = {
        "n1": ("172.31.250.1", "10.251.1.0/24", "02:62:00:00:f1:00"),
        "n2": ("172.31.250.2", "10.251.2.0/24", "02:62:00:00:f2:00"),
    }
    PODS = {"p1": ("n1", "10.251.1.2"), "p2": ("n1", "10.251.1.3"), "p3": ("n2", "10.251.2.2")}

    def __init__(self, prefix: str, mtu: int = MTU) -> None:
        if not prefix.startswith("glia"):
            raise BenchError(f"reference prefix {prefix!r} must start with glia")
        self.prefix = prefix
        self.mtu = mtu

    def ns(self, short: str) -> str:
        return self.prefix + short

    def pod_ip(self, pod: str) -> str:
        return self.PODS[pod][1]

    def pod_netns(self, pod: str) -> str:
        return netns_path(self.ns(pod))

    def build(self) -> None:
        under = self.ns("ul")
        netns_add(under)
        ip_batch(under, ["link add br0 type bridge", "link set br0 up"])
        for i, (node, (under_ip, _, vx_mac)) in enumerate(self.NODES.items(), 1):
            ns = self.ns(node)
            netns_add(ns)
            ip_batch(
                under,
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
                    f"link add vx0 address {vx_mac} mtu {self.mtu} type vxlan id 251 "
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
                f"link add {pod}h address {host_mac} mtu {self.mtu} type veth peer name eth0 "
                f"address {pod_mac} mtu {self.mtu} netns {pod_ns}",
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

    def remove(self) -> None:
        for name in netns_names(self.prefix):
            netns_delete(name)


def _first(subnet: str) -> str:
    """The subnet's network address, used as the VXLAN next hop (flannel's scheme)."""
    return subnet.split("/")[0]


def _gateway(subnet: str) -> str:
    a, b, c, _ = _first(subnet).split(".")
    return f"{a}.{b}.{c}.1"


# --- iperf3 runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    """One client -> server path to measure."""

    label: str  # e.g. "glia", "kernel_vxlan"
    client_ns: str  # namespace path
    server_ns: str
    server_ip: str
    prepare: Callable[[], None] = field(default=lambda: None, compare=False)


@dataclass(frozen=True)
class IperfRun:
    gbps: float  # received
    retransmits: int
    load_1m: float  # load average when the run ended


def reach(path: Path) -> None:
    """The path works: an ICMP echo from the client's namespace is answered."""
    path.prepare()
    try:
        in_netns(path.client_ns, lambda: first_echo_reply(path.server_ip, REACH_TIMEOUT, 0.05))
    except BenchError as e:
        raise BenchError(f"{path.label} -> {path.server_ip}: the path does not work: {e}") from None


def start_iperf_servers(bg: Background, paths: Sequence[Path]) -> None:
    """An iperf3 server in every server namespace, listening."""
    for server_ns in sorted({p.server_ns for p in paths}):
        proc = bg.start(nsenter(server_ns, ["iperf3", "-s", "-p", str(IPERF_PORT)]))

        def up(proc: subprocess.Popen[bytes] = proc, ns: str = server_ns) -> bool:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise BenchError(f"iperf3 in {ns} exited with {proc.returncode}: {err.strip()}")
            return listening(ns, IPERF_PORT)

        wait_for(f"iperf3 listening in {server_ns}", up, 20)


def iperf(path: Path, seconds: int, affinity: str | None = None) -> IperfRun:
    """One iperf3 run (one TCP stream) from client to server."""
    path.prepare()
    argv = ["iperf3", "-c", path.server_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    if affinity:
        argv += ["-A", affinity]
    proc = run(nsenter(path.client_ns, argv), timeout=seconds + 30, check=False)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    if proc.returncode != 0 or "error" in doc:
        detail = doc.get("error") or proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"iperf3 {path.label} failed: {detail}")
    end = doc["end"]
    return IperfRun(
        gbps=round(float(end["sum_received"]["bits_per_second"]) / 1e9, 3),
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        load_1m=round(os.getloadavg()[0], 2),
    )


def interleave(
    paths: Sequence[Path],
    reps: int,
    seconds: int,
    affinity: str | None = None,
    progress: Callable[[str], None] = log,
) -> dict[str, list[IperfRun]]:
    """``reps`` rounds; each runs every path once, the order rotated by one each round
    (two paths: AB, BA, AB, ...), so neither always goes first."""
    runs: dict[str, list[IperfRun]] = {p.label: [] for p in paths}
    for rep in range(reps):
        k = rep % len(paths)
        for path in [*paths[k:], *paths[:k]]:
            got = iperf(path, seconds, affinity)
            runs[path.label].append(got)
            progress(
                f"iperf3 {rep + 1}/{reps} {path.label}: {got.gbps} Gbit/s, "
                f"{got.retransmits} retransmits, load {got.load_1m}"
            )
    return runs


def path_stats(runs: Sequence[IperfRun]) -> dict[str, Any]:
    """Median and spread of one path's runs (Gbit/s); the runs themselves."""
    g = [r.gbps for r in runs]
    med = percentile(g, 50)
    p25, p75 = percentile(g, 25), percentile(g, 75)
    return {
        "median": round(med, 3),
        "p25": round(p25, 3),
        "p75": round(p75, 3),
        "min": min(g),
        "max": max(g),
        # interquartile range relative to the median: how far one run is to be trusted
        "spread": round((p75 - p25) / med, 3) if med else None,
        "runs": g,
        "retransmits": [r.retransmits for r in runs],
        "load_1m": [r.load_1m for r in runs],
    }


def paired_ratio(glia: Sequence[IperfRun], ref: Sequence[IperfRun]) -> dict[str, Any]:
    """glia / reference per round (back-to-back runs share the machine's state):
    their median, quartiles and how many rounds glia was at least as fast."""
    per_round = [round(g.gbps / r.gbps, 3) for g, r in zip(glia, ref, strict=True) if r.gbps]
    if not per_round:
        return {"median": None, "p25": None, "p75": None, "rounds": [], "glia_not_slower": 0}
    return {
        "median": round(percentile(per_round, 50), 3),
        "p25": round(percentile(per_round, 25), 3),
        "p75": round(percentile(per_round, 75), 3),
        "rounds": per_round,
        "glia_not_slower": sum(1 for x in per_round if x >= 1.0),
    }


def compare_with_kernel_vxlan(
    client_ns: str,
    server_ns: str,
    server_ip: str,
    *,
    ref_prefix: str,
    mtu: int = MTU,
    reps: int = 5,
    seconds: int = 5,
    affinity: str | None = None,
    progress: Callable[[str], None] = log,
) -> dict[str, Any]:
    """Throughput of glia pods (client -> server, both running, any two nodes of any
    clusters) against the kernel VXLAN reference, interleaved; JSON-ready.

    Builds the reference in namespaces ``ref_prefix*`` (which must start with
    "glia" and be the caller's own) with pod MTU ``mtu`` (pass glia's pod MTU),
    starts iperf3 servers, runs ``reps`` rounds of ``seconds``-second runs, and
    removes the reference and the servers again, also on failure. Keys:
    ``glia`` and ``kernel_vxlan`` (:func:`path_stats`), ``ratio`` (median glia
    / median reference), ``paired_ratio`` (:func:`paired_ratio`, the figure to
    quote), ``load_1m_before``/``after``, ``method``.
    """
    ref = KernelReference(ref_prefix, mtu)
    bg = Background()
    ref.remove()  # leftovers of a crashed run
    load_before = round(os.getloadavg()[0], 2)
    try:
        ref.build()
        paths = [
            Path("glia", client_ns, server_ns, server_ip),
            Path(
                VXLAN,
                ref.pod_netns("p1"),
                ref.pod_netns("p3"),
                ref.pod_ip("p3"),
                lambda: ref.use(VXLAN),
            ),
        ]
        for path in paths:
            reach(path)
        start_iperf_servers(bg, paths)
        runs = interleave(paths, reps, seconds, affinity, progress)
    finally:
        bg.stop_all()
        ref.remove()
    glia, kvx = runs["glia"], runs[VXLAN]
    gm, km = percentile([r.gbps for r in glia], 50), percentile([r.gbps for r in kvx], 50)
    return {
        "glia": path_stats(glia),
        VXLAN: path_stats(kvx),
        "ratio": round(gm / km, 3) if km else None,
        "paired_ratio": paired_ratio(glia, kvx),
        "load_1m_before": load_before,
        "load_1m_after": round(os.getloadavg()[0], 2),
        "method": (
            f"iperf3 -t {seconds}, one stream, {reps} rounds, glia and reference back to back "
            f"in alternating order; affinity {affinity or 'none'}; every pod MTU {mtu}"
        ),
    }


# --- BPF cost per packet ---------------------------------------------------------------

_SYS_BPF = 321  # x86_64
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


@contextlib.contextmanager
def bpf_run_time_stats() -> Iterator[None]:
    """The kernel's BPF run-time statistics on while inside (a file descriptor from
    BPF_ENABLE_STATS: closing it, or the process dying, switches them off again;
    the sysctl kernel.bpf_stats_enabled is left as it was)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    attr = (ctypes.c_uint32 * 4)(_BPF_STATS_RUN_TIME, 0, 0, 0)
    fd = libc.syscall(_SYS_BPF, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        raise BenchError(f"BPF_ENABLE_STATS: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        os.close(fd)


def tc_programs(netns: str) -> dict[str, int]:
    """``{program name: id}`` of the tc programs attached in ``netns``. One program
    serves every endpoint veth of a node (one id, attached several times), so
    programs are keyed by name, not by device."""
    out = run(nsenter(netns, ["bpftool", "-j", "net", "show"])).stdout
    found: dict[str, int] = {}
    for entry in json.loads(out or b"[]"):
        for att in entry.get("tc", []):
            name = str(att.get("name", "")).split(":")[0]  # "from_overlay:[9285]"
            prog_id = int(att["id"])
            if found.setdefault(name, prog_id) != prog_id:
                raise BenchError(
                    f"{netns}: two {name} programs attached ({found[name]}, {prog_id})"
                )
    return found


def _prog_counters(prog_id: int) -> tuple[int, int]:
    doc = json.loads(run(["bpftool", "-j", "prog", "show", "id", str(prog_id)]).stdout)
    return int(doc.get("run_time_ns", 0)), int(doc.get("run_cnt", 0))


def bpf_cost(programs: dict[str, int], action: Callable[[], Any]) -> dict[str, Any]:
    """Run ``action`` with BPF statistics on; per program: runs, ns per run (the
    statistics' own clock reads included, some 20-40 ns), total ms."""
    with bpf_run_time_stats():
        before = {name: _prog_counters(pid) for name, pid in programs.items()}
        action()
        after = {name: _prog_counters(pid) for name, pid in programs.items()}
    out: dict[str, Any] = {}
    for name in programs:
        ns = after[name][0] - before[name][0]
        cnt = after[name][1] - before[name][1]
        out[name] = {
            "runs": cnt,
            "ns_per_run": round(ns / cnt) if cnt else None,
            "total_ms": round(ns / 1e6, 2),
        }
    return out
