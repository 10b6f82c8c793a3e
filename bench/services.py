"""Services benchmark: glia's eBPF load balancer against kube-proxy's modes, in one run.

Run as root from the repository: ``.venv/bin/python bench/services.py [--quick] [--out DIR]``
(``make bench-services``). It builds its own namespaces (prefix ``gliabench-svc``),
measures, and tears everything down at the end, also on failure or Ctrl-C. It
prints one JSON document on stdout (progress goes to stderr) and writes
``services.json`` and ``services.png`` into ``--out`` (default ``bench/results``).

Five copies of one small cluster node, each a node namespace with three pods
(the same addresses in every copy): a client; a backend, one nginx process on
three ports (the Service's three backends) and iperf3; and the pod-IP target,
the same servers outside the Service.

- ``glia``: the pods plumbed and the datapath loaded, configured and attached
  as the agent does it (glia.agent.daemon, glia.endpoint.manager), the
  Services programmed by the agent's reconciler (glia.service.lbsync); the
  socket load-balancer attached to a cgroup v2 of its own (``gliabench-svc``)
  that the glia clients join, as the lab's containers join their node's; and
  a fourth pod, a second client outside that cgroup, for the per-packet
  load-balancer;
- ``plain``: the pods wired by kernel routing (a node namespace with
  forwarding on, /32 routes, static neighbours), no rules at all;
- ``iptnft``, ``iptleg``, ``nft``: as ``plain``, with the Services programmed
  the way kube-proxy does: iptables mode through ``iptables-nft-restore`` and
  ``iptables-legacy-restore``, and nftables mode (a verdict map) through
  ``nft -f``.

With N = 1, 1000 and 10000 Services installed (glia also 100000; one is the
Service under test, the others fillers with fake backends), it measures from
the client: the short-connection rate (wrk, a new connection per request),
the latency of connect + ``GET /`` + close one at a time (p50/p99), stream
throughput (iperf3), each through the VIP and, as the limit, straight to the
pod-IP target; and the time to program the N Services. Through glia the VIP
is measured twice: with socket load-balancing (the client in the cgroup: the
connect() goes straight to a backend) and with the per-packet path (a client
outside it: from_endpoint's DNAT and conntrack). Only ratios from one run mean
something on a noisy 2-vCPU machine: every case is measured in every round, in
a rotating order, and the latencies connection by connection in turn. glia's
three cases are also measured alone, many short rounds in a changing order,
and their short-connection rates compared round by round (the paired rate, what
the targets use: one short wrk run scatters far more than 5% here). The glia
metric SOCK_XLATE proves which path each glia run took.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import functools
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # bench/ is a folder of scripts
    GLIA_COLOR,
    Background,
    BenchError,
    interrupt_on_sigterm,
    ip_batch,
    listening,
    log,
    median,
    netns_add,
    netns_delete,
    netns_names,
    netns_path,
    nsenter,
    ratio,
    reap_recorded,
    run,
    summary,
    sysctl,
    wait_for,
    write_json,
)
from _common import (
    host_info as common_host_info,
)
from _loadtool import in_cgroup  # bench/ is a folder of scripts
from glia.datapath import netlink
from glia.datapath.cgroup import (
    cgroup2_root,
    create_cgroup,
    ensure_cgroup2_root,
    release_glia_mount,
    remove_cgroup,
)
from glia.datapath.drop import Direction, Reason
from glia.datapath.errors import DatapathError
from glia.datapath.loader import OBJECT_FILES, Datapath, default_obj_dir, unpin
from glia.datapath.netns import run_in_netns
from glia.datapath.nodemaps import EndpointInfo
from glia.model import make_cluster_identity
from glia.model.service import Backend, ClusterService, Protocol, ServicePort
from glia.service.lbsync import ServiceMapSync

T = TypeVar("T")

PREFIX = "gliabench-svc"  # every namespace of this benchmark, and its cgroup v2
PIN_DIR = Path("/sys/fs/bpf/glia-bench-svc")  # the glia node's private pins
RUN_DIR = Path("/run/glia-bench-svc")  # nginx config, rule files, PIDs of a run
PIDS = RUN_DIR / "pids"
RESULTS = Path(__file__).resolve().parent / "results"
TOOL = Path(__file__).resolve().parent / "_loadtool.py"
TOOLS = (
    *("ip", "nsenter", "ss", "sysctl", "conntrack", "wrk", "iperf3", "nginx", "nft"),
    *("iptables-nft-restore", "iptables-legacy-restore", "iptables-nft-save"),
    "iptables-legacy-save",
)

# One node's addresses, the same in every copy (each copy is its own namespaces).
POD_CIDR = "10.244.0.0/16"  # the cluster CIDR: kube-proxy masquerades what comes from outside
GATEWAY = "10.244.0.1"
CLIENT_IP = "10.244.0.2"
# glia's node only: the client of the per-packet VIP case, outside the cgroup. Its
# own address, because the socket-LB client's connections reach the same backend
# ports under the backend's own address: from one client address, a SYN through the
# VIP would meet the server's TIME_WAIT of a socket-LB'd connection (timestamps and
# ISN hashed for the other destination) and stall ~8 ms, as DIRECT_IP explains.
CLIENT_TC_IP = "10.244.0.3"
# The Service's three backends are three ports of one nginx process in one pod:
# the balancer really picks among three, yet the server side is exactly the
# pod-IP path's (one process). Three single-process servers would slow the VIP
# down on two vCPUs for reasons that are not the datapath (more wake-ups).
BACKEND_IP = "10.244.0.11"
SERVER_PORTS = (8080, 8081, 8082)  # nginx listens on all three in both server pods
# The pod-IP cases' server: a pod like the backend but outside the Service. Sharing
# the backend would make a new connection by pod IP meet the TIME_WAIT of one made
# through the VIP (timestamps and ISN hashed for the other address pair): the
# server answers the SYN with an ACK and the client retries ~8 ms later.
DIRECT_IP = "10.244.0.12"
SERVICE_CIDR = "100.64.0.0/10"
TEST_VIP = "100.64.0.10"
FILLER_BASE = int(ipaddress.IPv4Address("100.65.0.0"))  # filler VIPs from here on
FAKE_BACKENDS = int(ipaddress.IPv4Address("10.245.0.0"))  # filler backends: never answer
FILLER_BACKENDS = 2
HTTP_PORT, IPERF_PORT = 80, 5201  # the Service's ports; iperf3 listens on 5201 itself
NODE_IP = "198.18.250.1"  # the glia node's address in its config (no underlay needed)
CLUSTER_ID = 1
MTU = 1450  # glia's pod MTU; the kernel-routed pods get the same
NAMESPACE = "bench"
TEST_SERVICE = "web"

# Cases: what the client connects to, through which node.
GLIA_VIP, GLIA_VIP_TC, GLIA_POD = "glia_vip", "glia_vip_tc", "glia_pod_ip"
KERNEL_POD = "kernel_pod_ip"
IPT_NFT, IPT_LEGACY, NFTABLES = "iptables_nft", "iptables_legacy", "nftables"
KUBE_MODES = (IPT_NFT, IPT_LEGACY, NFTABLES)
GLIA_CASES = (GLIA_VIP, GLIA_POD, GLIA_VIP_TC)
CASES = (*GLIA_CASES, KERNEL_POD, *KUBE_MODES)
OTHERS = CASES[1:]  # what glia_vip is compared with
# The kube-proxy nodes use the same VIP: a client in glia's cgroup would be
# socket-LB'd by glia's programs there too. Only these cases run in the cgroup.
IN_CGROUP = (GLIA_VIP, GLIA_POD)
# The paired rate runs: glia's cases alone, and the ratios taken round by round.
PAIR_RATE_CASES = (GLIA_VIP, GLIA_VIP_TC, GLIA_POD)
PAIR_RATIOS = ((GLIA_VIP, GLIA_POD), (GLIA_VIP_TC, GLIA_POD))
# A paired run whose wrk counted more errors than this share of its requests did not
# measure the path's cost (refused, reset or timed-out connections): the run stops.
PAIR_ERROR_SHARE = 0.01
DESCRIPTIONS = {
    GLIA_VIP: "the Service's VIP through glia with socket load-balancing, as the lab's "
    "pods get it: the client is in the cgroup v2 that glia's sock programs are attached "
    "to, whose connect() hook picks a random backend and points the socket straight at "
    "it (no DNAT, no conntrack: the packets are the pod-IP path's)",
    GLIA_POD: "the pod-IP target (a pod with the backend's servers, in no Service) through "
    "glia's eBPF datapath, the client in the same cgroup (its connect() hook looks the "
    "address up and misses, as on every pod of a socket-LB node): the limit of glia_vip",
    GLIA_VIP_TC: "the same VIP from a second client pod outside the cgroup: glia's "
    "per-packet load-balancer in from_endpoint (VIP lookup, random backend, DNAT, "
    "conntrack; reverse NAT on delivery), what every packet of a socket the hooks did "
    "not translate takes",
    KERNEL_POD: "the pod-IP target by kernel routing, no rules, no conntrack",
    IPT_NFT: "the VIP as kube-proxy's iptables mode programs it (KUBE-SERVICES, KUBE-SVC-*, "
    "KUBE-SEP-* with statistic random and DNAT), loaded with iptables-nft-restore",
    IPT_LEGACY: "the same rules, loaded with iptables-legacy-restore (x_tables)",
    NFTABLES: "the VIP as kube-proxy's nftables mode programs it (service-ips verdict map "
    "-> per-service chain, numgen random mod N vmap -> endpoint chain with dnat), nft -f",
}
COLORS = {
    GLIA_VIP: GLIA_COLOR,
    GLIA_POD: "#7fb3d5",
    GLIA_VIP_TC: "#8e6bbf",
    KERNEL_POD: "#9a9a9a",
    IPT_NFT: "#c9a227",
    IPT_LEGACY: "#e07b39",
    NFTABLES: "#6bb36b",
}
NAMES = {
    GLIA_VIP: "glia VIP (socket LB)",
    GLIA_POD: "glia pod IP",
    GLIA_VIP_TC: "glia VIP (per-packet)",
    KERNEL_POD: "kernel pod IP",
    IPT_NFT: "iptables (nft)",
    IPT_LEGACY: "iptables (legacy)",
    NFTABLES: "nftables (vmap)",
}
GLIA = "glia"  # the programming-time key of glia's reconciler


@dataclass(frozen=True)
class Params:
    counts: tuple[int, ...] = (1, 1000, 10000)  # N with every mode
    ebpf_counts: tuple[int, ...] = (100000,)  # N with glia only
    wrk_seconds: int = 2
    wrk_reps: int = 6  # short runs, many rounds: the VM's drift is larger than the effects
    wrk_connections: int = 32
    wrk_threads: int = 2  # with nginx, the two vCPUs are saturated: rate = CPU per connection
    # The glia trio's paired rate runs: a single short wrk run scatters +-15-20% on this
    # VM, far more than the 5% target; ratios taken within one round cancel the drift.
    pair_rate_rounds: int = 16
    pair_rate_seconds: int = 1
    latency_count: int = 2000  # connect + GET + close per case and N, all cases interleaved
    # The glia pair alone, the 5% target's latency: a p99 of 2000 moved ±8% run to run
    # (its 20 slowest connections); the pair is cheap, so it gets more samples.
    pair_latency_count: int = 10000
    # (and again glia_vip with glia_pod_ip alone, the pair run)
    probe_connections: int = 20  # per glia case and N: which path did it take?
    iperf_seconds: int = 2
    iperf_reps: int = 2
    program_reps: int = 3  # loads timed per mode and N (1 once a load takes > SLOW_LOAD_S)

    @classmethod
    def quick(cls) -> Params:
        return cls(
            counts=(1, 1000),
            ebpf_counts=(100000,),
            wrk_seconds=1,
            wrk_reps=2,
            pair_rate_rounds=3,
            latency_count=300,
            pair_latency_count=300,
            iperf_seconds=1,
            iperf_reps=1,
            program_reps=1,
        )


SLOW_LOAD_S = 3.0


# --- the Services (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class SvcPort:
    name: str
    port: int
    endpoints: tuple[tuple[str, int], ...]  # backend IP and port (the target port)


@dataclass(frozen=True)
class BenchService:
    name: str
    vip: str
    ports: tuple[SvcPort, ...]

    @property
    def key(self) -> str:
        return f"{NAMESPACE}/{self.name}"


def test_service() -> BenchService:
    """Port 80 -> nginx on the backend pod's three ports; 5201 -> iperf3 there (one
    backend: a stream's control and data connections must meet the same server)."""
    return BenchService(
        TEST_SERVICE,
        TEST_VIP,
        (
            SvcPort("http", HTTP_PORT, tuple((BACKEND_IP, port) for port in SERVER_PORTS)),
            SvcPort("iperf", IPERF_PORT, ((BACKEND_IP, IPERF_PORT),)),
        ),
    )


def filler(i: int) -> BenchService:
    """Filler Service ``i``: its own VIP, port 80 -> 8080 on two fake backends."""
    vip = str(ipaddress.IPv4Address(FILLER_BASE + i))
    fakes = tuple(
        (str(ipaddress.IPv4Address(FAKE_BACKENDS + 1 + (FILLER_BACKENDS * i + j) % 65000)), 8080)
        for j in range(FILLER_BACKENDS)
    )
    return BenchService(f"filler-{i}", vip, (SvcPort("http", 80, fakes),))


def service_set(n: int) -> list[BenchService]:
    """N Services: N-1 fillers with the one under test in the middle.

    kube-proxy writes KUBE-SERVICES in Go map order, i.e. at random; the middle
    is where a Service sits on average in that linear chain.
    """
    out = [filler(i) for i in range(n - 1)]
    out.insert((n - 1) // 2, test_service())
    return out


def cluster_service(svc: BenchService) -> ClusterService:
    """The ClusterService record the operator would publish for ``svc``."""
    backends = [
        Backend(ip, port, Protocol.TCP, p.name, p.port, "n1", "c1", f"{NAMESPACE}/{ip}", True)
        for p in svc.ports
        for ip, port in p.endpoints
    ]
    # The target port is per backend here (Backend.port); the spec's is informational.
    ports = [ServicePort(p.port, p.endpoints[0][1], Protocol.TCP, p.name) for p in svc.ports]
    return ClusterService(NAMESPACE, svc.name, "c1", CLUSTER_ID, svc.vip, ports, backends)


def _hash(text: str, length: int) -> str:
    """kube-proxy's chain-name hash: base32 of SHA-256, truncated."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def iptables_rules(services: Sequence[BenchService]) -> str:
    """What kube-proxy's iptables mode restores for ``services`` (ClusterIPs only).

    The chains and rules of kube-proxy 1.28+ with ``--cluster-cidr`` set: the
    built-in chains jump to KUBE-*; KUBE-SERVICES has one rule per service
    port (matched in order for a new connection), each KUBE-SVC-* chain marks
    outside traffic for masquerading and picks an endpoint with ``statistic
    --mode random`` (probability 1/(n-i) for the i-th of n), and each
    KUBE-SEP-* chain DNATs to its endpoint.
    """
    nat_chains = [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ]
    nat = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ]
    body: list[str] = []
    for svc in services:
        for p in svc.ports:
            spn = f"{svc.key}:{p.name}"
            svc_chain = "KUBE-SVC-" + _hash(spn + "tcp", 16)
            nat_chains.append(svc_chain)
            match = f'-d {svc.vip}/32 -p tcp -m comment --comment "{spn} cluster IP" -m tcp'
            nat.append(f"-A KUBE-SERVICES {match} --dport {p.port} -j {svc_chain}")
            body.append(
                f"-A {svc_chain} ! -s {POD_CIDR} {match} --dport {p.port} -j KUBE-MARK-MASQ"
            )
            n = len(p.endpoints)
            for i, (ip, target) in enumerate(p.endpoints):
                sep = "KUBE-SEP-" + _hash(f"{spn}tcp{ip}:{target}", 16)
                nat_chains.append(sep)
                comment = f'-m comment --comment "{spn} -> {ip}:{target}"'
                pick = (
                    f"-m statistic --mode random --probability {1 / (n - i):.10f} "
                    if i < n - 1
                    else ""
                )
                body.append(f"-A {svc_chain} {comment} {pick}-j {sep}")
                body.append(f'-A {sep} -s {ip}/32 -m comment --comment "{spn}" -j KUBE-MARK-MASQ')
                body.append(
                    f'-A {sep} -p tcp -m comment --comment "{spn}" -m tcp '
                    f"-j DNAT --to-destination {ip}:{target}"
                )
    nat.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must '
        'be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    filter_chains = [
        "KUBE-FORWARD",
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
    ]
    new = "-m conntrack --ctstate NEW"
    filt = [
        f'-A INPUT {new} -m comment --comment "kubernetes load balancer firewall" '
        "-j KUBE-PROXY-FIREWALL",
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        f'-A INPUT {new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
        f'-A FORWARD {new} -m comment --comment "kubernetes load balancer firewall" '
        "-j KUBE-PROXY-FIREWALL",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        f'-A FORWARD {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        f'-A FORWARD {new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
        f'-A OUTPUT {new} -m comment --comment "kubernetes load balancer firewall" '
        "-j KUBE-PROXY-FIREWALL",
        f'-A OUTPUT {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        "-m mark --mark 0x4000/0x4000 -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    lines = ["*filter", *(f":{c} - [0:0]" for c in filter_chains), *filt, "COMMIT", "*nat"]
    lines += [f":{c} - [0:0]" for c in nat_chains] + nat + body + ["COMMIT"]
    return "\n".join(lines) + "\n"


IPTABLES_EMPTY = "*filter\nCOMMIT\n*nat\nCOMMIT\n"  # restored without --noflush: all gone


def nft_rules(services: Sequence[BenchService]) -> str:
    """What kube-proxy's nftables mode (1.31+) sends ``nft -f`` for ``services``.

    The same command stream knftables writes: table ``ip kube-proxy``, its
    base chains (filter before DNAT, nat), the ``services`` chain with one
    lookup in the ``service-ips`` verdict map (VIP . proto . port -> goto
    service chain), per service port a chain that marks outside traffic for
    masquerading and picks an endpoint with ``numgen random mod n vmap``, and
    per endpoint a chain with the ``dnat``. Hook priorities are numbers
    (dstnat = -100, filter chains at dstnat - 10): this nft (1.0.6) takes the
    names only on some hooks.
    """
    t = "ip kube-proxy"
    out = [
        f'add table {t} {{ comment "rules for kube-proxy" ; }}',
        f"add chain {t} filter-prerouting {{ type filter hook prerouting priority -110 ; }}",
        f"add chain {t} filter-input {{ type filter hook input priority -110 ; }}",
        f"add chain {t} filter-forward {{ type filter hook forward priority -110 ; }}",
        f"add chain {t} filter-output {{ type filter hook output priority -110 ; }}",
        f"add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; }}",
        f"add chain {t} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; }}",
        f'add set {t} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
        f"add set {t} nodeport-ips {{ type ipv4_addr ; }}",
        f"add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; "
        'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }',
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; }}",
        f"add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : "
        "verdict ; }",
        f"add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
    ]
    for chain in (
        "services",
        "masquerading",
        "mark-for-masquerade",
        "firewall-check",
        "service-endpoints-check",
        "cluster-ips-check",
    ):
        out.append(f"add chain {t} {chain}")
    out += [
        f"add rule {t} filter-prerouting ct state new jump firewall-check",
        f"add rule {t} filter-input ct state new jump service-endpoints-check",
        f"add rule {t} filter-forward ct state new jump service-endpoints-check",
        f"add rule {t} filter-forward ct state new jump cluster-ips-check",
        f"add rule {t} filter-output ct state new jump service-endpoints-check",
        f"add rule {t} filter-output ct state new jump firewall-check",
        f"add rule {t} filter-output ct state new jump cluster-ips-check",
        f"add rule {t} nat-prerouting jump services",
        f"add rule {t} nat-output jump services",
        f"add rule {t} nat-postrouting jump masquerading",
        f"add rule {t} mark-for-masquerade meta mark set meta mark or 0x4000",
        f"add rule {t} masquerading meta mark & 0x4000 == 0 return",
        f"add rule {t} masquerading meta mark set meta mark xor 0x4000",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport "
        "vmap @no-endpoint-services",
        f'add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic '
        'to invalid ports of ClusterIPs"',
        f'add rule {t} cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment "Drop '
        'traffic to unallocated ClusterIPs"',
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport "
        "vmap @service-nodeports",
    ]
    for svc in services:
        out.append(f"add element {t} cluster-ips {{ {svc.vip} }}")
        for p in svc.ports:
            spn = f"{svc.key}/tcp/{p.name}"
            chain = f"service-{_hash(spn, 8)}-{spn}"
            out.append(f"add chain {t} {chain}")
            out.append(
                f"add rule {t} {chain} ip daddr {svc.vip} tcp dport {p.port} "
                f"ip saddr != {POD_CIDR} jump mark-for-masquerade"
            )
            picks = []
            for i, (ip, target) in enumerate(p.endpoints):
                ep = f"{spn}__{ip}/{target}"
                ep_chain = f"endpoint-{_hash(ep, 8)}-{ep}"
                out.append(f"add chain {t} {ep_chain}")
                out.append(f"add rule {t} {ep_chain} ip saddr {ip} jump mark-for-masquerade")
                out.append(f"add rule {t} {ep_chain} meta l4proto tcp dnat to {ip}:{target}")
                picks.append(f"{i} : goto {ep_chain}")
            out.append(
                f"add rule {t} {chain} numgen random mod {len(picks)} vmap {{ {', '.join(picks)} }}"
            )
            out.append(
                f"add element {t} service-ips {{ {svc.vip} . tcp . {p.port} : goto {chain} }}"
            )
    return "\n".join(out) + "\n"


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise BenchError(f"wrk: cannot read the duration {text!r}")
    return float(m.group(1)) * _WRK_UNITS[m.group(2)]


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, latency p50/p99 (ms), requests and errors from wrk's ``--latency`` output."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in", text, re.M)
    if rate is None or total is None:
        raise BenchError(f"wrk printed no rate: {text.strip()[:300]!r}")
    out = {"rate": float(rate.group(1)), "requests": float(total.group(1)), "errors": 0.0}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", text, re.M)
        if m is None:
            raise BenchError(f"wrk printed no {q}th percentile: {text.strip()[:300]!r}")
        out[f"p{q}_ms"] = round(_wrk_ms(m.group(1)), 3)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if errors is not None:
        out["errors"] += sum(float(g) for g in errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx is not None:
        out["errors"] += float(non2xx.group(1))
    return out


# --- namespaces ----------------------------------------------------------------------


def _pod_macs(j: int) -> tuple[str, str]:
    return f"02:62:01:00:{j:02x}:01", f"02:62:01:00:{j:02x}:02"


@dataclass
class Node:
    """One copy of the node: its namespace and three pods (client, backend, direct);
    glia's node a fourth (client_tc)."""

    topo: str  # "glia", "plain", "iptnft", "iptleg", "nft"
    mode: str | None = None  # kube-proxy mode programmed here (KUBE_MODES) or None

    def ns(self, role: str) -> str:
        return f"{PREFIX}-{self.topo}-{role}"

    @property
    def node(self) -> str:
        return self.ns("node")

    @property
    def client(self) -> str:
        return self.ns("client")

    @property
    def backend(self) -> str:
        return self.ns("backend")

    @property
    def direct(self) -> str:
        return self.ns("direct")

    def pods(self) -> list[tuple[str, str]]:
        return [(self.client, CLIENT_IP), (self.backend, BACKEND_IP), (self.direct, DIRECT_IP)]

    def clients(self) -> list[str]:
        return [self.client]

    def build_kernel(self) -> None:
        """Pods wired by kernel routing, addressed as glia addresses its pods."""
        netns_add(self.node)
        sysctl(self.node, "net.ipv4.ip_forward", "1")
        for j, (ns, ip) in enumerate(self.pods(), 1):
            host_mac, pod_mac = _pod_macs(j)
            netns_add(ns)
            ip_batch(
                self.node,
                [
                    f"link add p{j} address {host_mac} mtu {MTU} type veth peer name eth0 "
                    f"address {pod_mac} mtu {MTU} netns {ns}",
                    f"link set p{j} up",
                    f"route add {ip}/32 dev p{j}",
                    f"neigh add {ip} lladdr {pod_mac} dev p{j} nud permanent",
                ],
            )
            ip_batch(
                ns,
                [
                    f"addr add {ip}/32 dev eth0",
                    "link set eth0 up",
                    f"route add {GATEWAY}/32 dev eth0 scope link",
                    f"route add default via {GATEWAY} dev eth0 onlink",
                    f"neigh add {GATEWAY} lladdr {host_mac} dev eth0 nud permanent",
                ],
            )
        self._client_sysctls()

    def _client_sysctls(self) -> None:
        # Short connections by the ten thousand: reuse TIME_WAIT ports, use them all.
        for ns in self.clients():
            sysctl(ns, "net.ipv4.tcp_tw_reuse", "1")
            sysctl(ns, "net.ipv4.ip_local_port_range", "1024 65535")

    def flush(self) -> None:
        """Conntrack emptied and TIME_WAIT sockets gone, so each run starts alike."""
        if self.mode is not None:
            run(nsenter(netns_path(self.node), ["conntrack", "-F"]))
        self.flush_time_wait()

    def flush_time_wait(self) -> None:
        # Tens of thousands of them per run: later runs would reuse their ports.
        for ns, _ in self.pods():
            run(nsenter(netns_path(ns), ["ss", "-K", "-Htn", "state", "time-wait"]))


async def _run_now(fn: Callable[[], T]) -> T:
    return fn()  # the benchmark has no other datapath user: no worker thread needed


class GliaNode(Node):
    """The node with glia's datapath, set up with the agent's own calls."""

    def __init__(self, obj_dir: Path) -> None:
        super().__init__("glia")
        self.dp = Datapath(PIN_DIR, obj_dir)
        self.loop = asyncio.new_event_loop()
        self.sync = ServiceMapSync(self.dp, _run_now)
        self.cgroup: Path | None = None  # socket LB's cgroup v2, once made

    @property
    def client_tc(self) -> str:
        return self.ns("client-tc")

    def pods(self) -> list[tuple[str, str]]:
        return [*super().pods(), (self.client_tc, CLIENT_TC_IP)]

    def clients(self) -> list[str]:
        return [self.client, self.client_tc]

    def build(self) -> None:
        node_path = netns_add(self.node)
        for ns, _ in self.pods():
            netns_add(ns)
        cgroup = ensure_cgroup2_root() / PREFIX
        remove_cgroup(cgroup)  # a crashed run's (cleanup() removes it too)
        create_cgroup(cgroup)
        self.cgroup = cgroup
        # glia.agent.daemon.Agent.start: load, VXLAN device, configure, attach overlay,
        # socket LB on the configured cgroup.
        self.dp.load()
        vxlan = run_in_netns(node_path, netlink.ensure_vxlan, netlink.VXLAN_NAME)
        self.dp.configure(
            node_ip=NODE_IP,
            vxlan_ifindex=vxlan,
            cluster_id=CLUSTER_ID,
            vxlan_port=netlink.VXLAN_PORT,
        )
        run_in_netns(node_path, self.dp.attach_overlay, vxlan)
        self.dp.attach_socket_lb(cgroup)
        # glia.endpoint.manager.EndpointManager._add_locked: veth, attach, endpoint entry.
        for j, (ns, ip) in enumerate(self.pods()):
            veth = run_in_netns(
                node_path,
                lambda ns=ns, ip=ip: netlink.create_endpoint_veth(
                    netns_path=netns_path(ns),
                    ifname="eth0",
                    host_ifname=netlink.host_ifname_for(ns, "eth0"),
                    ip=ip,
                    gateway=GATEWAY,
                    mtu=MTU,
                ),
            )
            run_in_netns(node_path, self.dp.attach_endpoint, veth.host_ifindex)
            identity = make_cluster_identity(CLUSTER_ID, 256 + j)
            info = EndpointInfo(veth.host_ifindex, identity, veth.container_mac, veth.host_mac)
            self.dp.endpoints.upsert(ip, info)
        self._client_sysctls()

    def program(self, services: list[ClusterService]) -> None:
        self._await(self.sync.set_services(services))
        status = self.sync.status()
        if not status["ok"]:
            raise BenchError(f"glia: programming {len(services)} Services failed: {status}")

    def _await(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def frontends(self) -> int:
        return len(self.dp.lb.read().services)

    def sock_xlate(self) -> int:
        """Connections (and UDP sends) the socket LB has pointed at a backend so far."""
        return self.dp.metrics.get(Reason.SOCK_XLATE, Direction.EGRESS)[0]

    def vip_ct_entries(self) -> int:
        """Conntrack entries of connections to the test VIP: the per-packet LB's."""
        return sum(1 for e in self.dp.ct.entries() if e.kind == "service" and e.dst == TEST_VIP)

    def flush(self) -> None:
        self.dp.ct.flush()
        self.flush_time_wait()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._await(self.sync.stop())
        self.loop.close()
        if self.cgroup is not None:
            # Detached first: the cgroup's removal must not leave links behind.
            self.dp.detach_socket_lb()
            try:
                remove_cgroup(self.cgroup)
            except DatapathError as e:
                log(f"teardown: {e}")
            self.cgroup = None
        self.dp.close()


# --- programming -------------------------------------------------------------------


def restore_tool(mode: str) -> str:
    return "iptables-nft-restore" if mode == IPT_NFT else "iptables-legacy-restore"


def kube_reset(node: Node) -> None:
    """Empty the node's tables (not timed)."""
    assert node.mode is not None
    path = netns_path(node.node)
    if node.mode == NFTABLES:
        run(nsenter(path, ["nft", "flush", "ruleset"]))
    else:
        run(nsenter(path, [restore_tool(node.mode), "-w", "5"]), input=IPTABLES_EMPTY.encode())


def kube_load(node: Node, rules: Path, noflush: bool = True) -> float:
    """Load a pre-generated rule file; seconds the load took.

    iptables modes: kube-proxy always restores with ``--noflush`` (other chains
    of the tables are not its own). With iptables-nft that path grows faster
    than linearly with the number of chains; ``noflush=False`` (the whole
    tables replaced) shows what the same file costs without it.
    """
    assert node.mode is not None
    path = netns_path(node.node)
    if node.mode == NFTABLES:
        argv = ["nft", "-f", str(rules)]
    else:
        argv = [restore_tool(node.mode), "-w", "5", *(["--noflush"] if noflush else [])]
        argv.append(str(rules))
    t0 = time.perf_counter()
    run(nsenter(path, argv), timeout=600)
    return time.perf_counter() - t0


def kube_frontends(node: Node) -> int:
    """Service ports the node's rules hold (read back, to be sure the load was whole)."""
    assert node.mode is not None
    path = netns_path(node.node)
    if node.mode == NFTABLES:
        out = run(nsenter(path, ["nft", "list", "map", "ip", "kube-proxy", "service-ips"]))
        return out.stdout.decode().count(": goto ")
    save = "iptables-nft-save" if node.mode == IPT_NFT else "iptables-legacy-save"
    out = run(nsenter(path, [save, "-t", "nat"]))
    return len(re.findall(r"^-A KUBE-SERVICES -d ", out.stdout.decode(), re.M))


def timed_loads(reps: int, reset: Callable[[], None], load: Callable[[], float]) -> list[float]:
    """``reps`` timed loads, each after an untimed reset; a slow load is not repeated."""
    times: list[float] = []
    for _ in range(reps):
        reset()
        times.append(load())
        if times[-1] > SLOW_LOAD_S:
            break
    return times


def _seconds(times: list[float]) -> dict[str, Any]:
    return {"median": round(median(times), 4), "runs": [round(t, 4) for t in times]}


# --- servers and measurements --------------------------------------------------------

NGINX_CONF = """\
# One process serving (no master: the benchmark kills it by PID), nothing logged.
master_process off;
daemon off;
worker_rlimit_nofile 16384;
error_log {dir}/nginx.log crit;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
{listen}
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_servers(bg: Background, node: Node) -> None:
    """nginx (one process, SERVER_PORTS) and iperf3 in the backend and the pod-IP
    target pods; waits until they listen."""
    conf = RUN_DIR / "nginx.conf"
    if not conf.exists():
        (RUN_DIR / "tmp").mkdir(parents=True, exist_ok=True)
        listen = "\n".join(f"        listen {port} backlog=4096;" for port in SERVER_PORTS)
        conf.write_text(NGINX_CONF.format(dir=RUN_DIR, listen=listen))
    for ns in (node.backend, node.direct):
        pid = RUN_DIR / f"nginx-{ns}.pid"
        nginx = ["nginx", "-p", str(RUN_DIR), "-c", str(conf), "-e", str(RUN_DIR / "nginx.log")]
        nginx += ["-g", f"pid {pid};"]
        for port, argv in (
            (SERVER_PORTS[-1], nginx),
            (IPERF_PORT, ["iperf3", "-s", "-p", str(IPERF_PORT)]),
        ):
            proc = bg.start(nsenter(netns_path(ns), argv))
            _wait_listening(proc, ns, port, argv[0])


def _wait_listening(proc: subprocess.Popen[bytes], ns: str, port: int, what: str) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise BenchError(f"{what} in {ns} exited with {proc.returncode}: {err.strip()}")
        return listening(netns_path(ns), port)

    wait_for(f"{what} listening on port {port} in {ns}", up, 20)


@dataclass(frozen=True)
class Case:
    name: str  # one of CASES
    node: Node = field(compare=False)
    client_ns: str  # the client pod's namespace
    target: str  # the VIP or the pod-IP target
    http_port: int  # the Service's port, or nginx's own on the pod-IP target
    cgroup: Path | None = None  # the cgroup v2 every client process joins (glia's socket LB)

    def client(self, argv: list[str]) -> list[str]:
        """``argv`` as this case's client: in its pod's namespace, and its cgroup if any."""
        cmd = nsenter(netns_path(self.client_ns), argv)
        return in_cgroup(self.cgroup, cmd) if self.cgroup is not None else cmd

    @property
    def url(self) -> str:
        return f"http://{self.target}:{self.http_port}/"


def http_crr(cases: list[Case], count: int, warmup: int) -> dict[str, list[float]]:
    """``count`` connect + GET + close per case, interleaved connection by connection
    (the tool's workers enter each client namespace and cgroup themselves); µs per case."""
    argv = [sys.executable, str(TOOL), "http-crr", "--count", str(count), "--warmup", str(warmup)]
    for c in cases:
        target = f"{c.name},{netns_path(c.client_ns)},{c.target},{c.http_port}"
        argv += ["--target", target + (f",{c.cgroup}" if c.cgroup is not None else "")]
    proc = run(argv, timeout=60 + count * len(cases) / 1000, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"connect + GET + close failed: {err}")
    return {k: list(v) for k, v in json.loads(proc.stdout)["crr_us"].items()}


def reach(case: Case) -> None:
    """A few requests, so a broken path fails here, not in wrk."""
    try:
        http_crr([case], 10, 0)
    except BenchError as e:
        raise BenchError(f"{case.name}: {case.url} does not answer: {e}") from None


def wrk(case: Case, params: Params, seconds: int) -> dict[str, float]:
    case.node.flush()
    argv = ["wrk", f"-t{params.wrk_threads}", f"-c{params.wrk_connections}"]
    argv += [f"-d{seconds}s", "--latency", "-H", "Connection: close"]
    argv.append(case.url)
    proc = run(case.client(argv), timeout=seconds + 60)
    got = parse_wrk(proc.stdout.decode(errors="replace"))
    if got["errors"]:
        log(
            f"{case.name}: wrk counted {got['errors']:.0f} errors in {got['requests']:.0f} requests"
        )
    return got


LATENCY_WARMUP = 50  # connections per case before the measured ones
IPERF_CONNECTIONS = 2  # an iperf3 run connects twice: control and one stream


def latency(cases: list[Case], count: int) -> dict[str, list[float]]:
    for node in {id(c.node): c.node for c in cases}.values():
        node.flush()
    return http_crr(cases, count, LATENCY_WARMUP)


def iperf(case: Case, seconds: int) -> float:
    """One iperf3 run from the client to the target's port 5201; received Gbit/s."""
    case.node.flush()
    argv = ["iperf3", "-c", case.target, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"]
    proc = run(case.client(argv), timeout=seconds + 30, check=False)
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        doc = {}
    if proc.returncode != 0 or "error" in doc:
        detail = doc.get("error") or proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"iperf3 {case.name} failed: {detail}")
    return round(float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9, 3)


def rotated(cases: Sequence[T], k: int) -> list[T]:
    """The cases starting at the k-th, so no case always runs first (or right after another)."""
    k %= len(cases)
    return [*cases[k:], *cases[:k]]


def pair_order(cases: Sequence[T], r: int) -> list[T]:
    """Round ``r``'s order of the paired rate runs: rotated by ``r``, reversed every
    other round. With three cases, six rounds hold all six orders, so each case runs
    before and after each other one, first and last, equally often."""
    out = rotated(cases, r)
    return out[::-1] if r % 2 else out


# --- paired rate runs (pure) ---------------------------------------------------------


def rate_entry(runs: Sequence[dict[str, float]]) -> dict[str, Any]:
    """A case's wrk runs: the median rate, each run's, errors and requests in all."""
    return {
        "median": round(median([r["rate"] for r in runs]), 1),
        "runs": [round(r["rate"], 1) for r in runs],
        "errors": int(sum(r["errors"] for r in runs)),
        "requests": int(sum(r["requests"] for r in runs)),
    }


def round_ratios(rates: Mapping[str, Sequence[float]], case: str, other: str) -> list[float]:
    """``case``'s rate / ``other``'s in each round (``rates``: case -> rate per round)."""
    return [round(a / b, 4) for a, b in zip(rates[case], rates[other], strict=True)]


def pair_rate_problems(runs: dict[str, list[dict[str, float]]], rounds: int) -> list[str]:
    """What makes the paired rate runs unfit for a ratio: a missing round, a run that
    completed no request, or one whose wrk counted errors (refused, reset or timed-out
    connections: the rate is then not the path's cost)."""
    out = []
    for case in PAIR_RATE_CASES:
        got = runs.get(case, [])
        if len(got) != rounds:
            out.append(f"{case} ran in {len(got)} of {rounds} rounds")
        for i, r in enumerate(got, 1):
            if r["requests"] <= 0 or r["rate"] <= 0:
                out.append(f"round {i}: {case} completed no request")
            elif r["errors"] > PAIR_ERROR_SHARE * r["requests"]:
                out.append(
                    f"round {i}: {case}: wrk counted {r['errors']:.0f} errors in "
                    f"{r['requests']:.0f} requests (more than {PAIR_ERROR_SHARE:.0%})"
                )
    return out


def pair_rate_summary(
    runs: dict[str, list[dict[str, float]]], order: list[list[str]]
) -> dict[str, Any]:
    """``results.<N>.pair_rate_cps``: per case as ``rate_cps``, runs in round order; per
    ratio the median of the rounds' ratios, the rounds' ratios and the ratio of the
    medians, and its median over the rounds where either case ran first; and each
    round's order. Only for runs :func:`pair_rate_problems` passed."""
    rates = {c: [r["rate"] for r in rs] for c, rs in runs.items()}
    out: dict[str, Any] = {c: rate_entry(rs) for c, rs in runs.items()}
    out["ratios"] = {}
    for case, other in PAIR_RATIOS:
        per_round = round_ratios(rates, case, other)
        # Split by which of the two ran first in the round: a gap between the halves
        # is a carry-over from one run to the next, which the balanced order cancels
        # in the median but which is worth seeing.
        first = [o.index(case) < o.index(other) for o in order]
        halves = {
            f"{case} first": [r for r, f in zip(per_round, first, strict=True) if f],
            f"{other} first": [r for r, f in zip(per_round, first, strict=True) if not f],
        }
        out["ratios"][f"{case}/{other}"] = {
            "median": round(median(per_round), 3),
            "rounds": per_round,
            "ratio_of_medians": ratio(median(rates[case]), median(rates[other]), 3),
            "median_by_order": {k: round(median(v), 3) if v else None for k, v in halves.items()},
        }
    out["order"] = order
    return out


# --- socket LB checks (pure) ----------------------------------------------------------


def xlate_problem(what: str, got: int, expected: int, exact: bool) -> str | None:
    """What is wrong with ``got`` socket-LB translations (the SOCK_XLATE metric's growth)
    in a run that made ``expected`` connections through glia_vip (``exact``: and none
    else could be translated), or None when nothing is."""
    if got < expected:
        least = "" if exact else "at least "
        return (
            f"{what}: glia's socket LB translated {got} connections, {least}{expected} "
            f"expected: {GLIA_VIP}'s client did not get socket load-balancing"
        )
    if exact and got > expected:
        return (
            f"{what}: glia's socket LB translated {got} connections, {expected} expected: "
            "a client outside its cgroup was load-balanced by it"
        )
    return None


def probe_problems(probe: dict[str, Any]) -> list[str]:
    """What :meth:`Bench.probe_socket_lb` saw that contradicts the cases' paths."""
    k = probe["connections"]
    vip, tc, pod = probe[GLIA_VIP], probe[GLIA_VIP_TC], probe[GLIA_POD]
    out = []
    if vip["sock_xlate"] != k:
        out.append(
            f"{k} connections through {GLIA_VIP} (client in the cgroup), "
            f"{vip['sock_xlate']} translated by the socket LB"
        )
    if vip["vip_ct_entries"]:
        out.append(
            f"{GLIA_VIP} left {vip['vip_ct_entries']} conntrack entries: its packets met "
            "the per-packet load-balancer"
        )
    if tc["sock_xlate"]:
        out.append(
            f"{GLIA_VIP_TC} (client outside the cgroup) had {tc['sock_xlate']} of {k} "
            "connections translated by the socket LB"
        )
    if not tc["vip_ct_entries"]:
        out.append(
            f"{GLIA_VIP_TC} left no conntrack entry: its connections did not go through "
            "the per-packet load-balancer"
        )
    if pod["sock_xlate"] or pod["vip_ct_entries"]:
        out.append(
            f"{GLIA_POD} (the pod-IP target, client in the cgroup) had {pod['sock_xlate']} of "
            f"{k} connections translated by the socket LB and left {pod['vip_ct_entries']} "
            "conntrack entries for the VIP: it is not the limit of the VIP paths"
        )
    return out


# --- the run -----------------------------------------------------------------------


@dataclass
class Bench:
    params: Params
    bg: Background
    glia: GliaNode
    plain: Node
    kube: dict[str, Node]  # mode -> node

    def cases(self, kube_too: bool) -> list[Case]:
        glia, cgroup = self.glia, self.glia.cgroup
        assert cgroup is not None, "the glia node is built"
        out = [
            Case(GLIA_VIP, glia, glia.client, TEST_VIP, HTTP_PORT, cgroup),
            Case(GLIA_POD, glia, glia.client, DIRECT_IP, SERVER_PORTS[0], cgroup),
            Case(GLIA_VIP_TC, glia, glia.client_tc, TEST_VIP, HTTP_PORT),
        ]
        if kube_too:
            plain = self.plain
            out.append(Case(KERNEL_POD, plain, plain.client, DIRECT_IP, SERVER_PORTS[0]))
            for mode in KUBE_MODES:
                out.append(Case(mode, self.kube[mode], self.kube[mode].client, TEST_VIP, HTTP_PORT))
        wrong = [c.name for c in out if (c.cgroup is not None) != (c.name in IN_CGROUP)]
        if wrong:
            raise BenchError(f"cases {wrong}: in the wrong cgroup (only {IN_CGROUP} belong in it)")
        return out

    def program(self, n: int, kube_too: bool) -> dict[str, Any]:
        """Install N Services everywhere; the timed loads and what was generated."""
        services = service_set(n)
        frontends = sum(len(s.ports) for s in services)
        t0 = time.perf_counter()
        records = [cluster_service(s) for s in services]
        generated = {GLIA: round(time.perf_counter() - t0, 4)}
        log(f"N={n}: glia programs {n} Services ({frontends} frontends)")

        def glia_load() -> float:
            t = time.perf_counter()
            self.glia.program(records)
            return time.perf_counter() - t

        timings = {
            GLIA: timed_loads(self.params.program_reps, lambda: self.glia.program([]), glia_load)
        }
        if self.glia.frontends() != frontends:
            raise BenchError(f"glia holds {self.glia.frontends()} frontends, not {frontends}")
        sizes: dict[str, int] = {}
        replace: dict[str, float] = {}
        if kube_too:
            texts = {}
            for mode, make in ((IPT_NFT, iptables_rules), (NFTABLES, nft_rules)):
                t0 = time.perf_counter()
                texts[mode] = make(services)
                generated[mode] = round(time.perf_counter() - t0, 4)
            texts[IPT_LEGACY] = texts[IPT_NFT]
            generated[IPT_LEGACY] = generated[IPT_NFT]
            for mode in KUBE_MODES:
                node = self.kube[mode]
                rules = RUN_DIR / f"rules-{mode}-{n}.txt"
                rules.write_text(texts[mode])  # written before any timing starts
                sizes[mode] = texts[mode].count("\n")
                log(f"N={n}: {mode} loads {sizes[mode]} lines")
                if mode != NFTABLES:
                    kube_reset(node)
                    replace[mode] = round(kube_load(node, rules, noflush=False), 4)
                timings[mode] = timed_loads(
                    self.params.program_reps,
                    functools.partial(kube_reset, node),
                    functools.partial(kube_load, node, rules),
                )
                held = kube_frontends(node)
                if held != frontends:
                    raise BenchError(f"{mode} holds {held} service ports, not {frontends}")
                rules.unlink()
        return {
            "program_s": {k: _seconds(v) for k, v in timings.items()},
            "program_replace_s": replace,
            "generate_s": generated,
            "rule_lines": sizes,
            "frontends": frontends,
        }

    def xlated(self, fn: Callable[[], T]) -> tuple[T, int]:
        """``fn()``, and how many connections glia's socket LB translated meanwhile."""
        before = self.glia.sock_xlate()
        out = fn()
        return out, self.glia.sock_xlate() - before

    def check(self, problem: str | None) -> None:
        """No fake results: a run that took the wrong glia path stops the benchmark."""
        if problem is not None:
            raise BenchError(f"{problem} (socket LB cgroup {self.glia.cgroup})")

    def probe_socket_lb(self, cases: list[Case]) -> dict[str, Any]:
        """A few connections through each glia case alone: glia_vip socket-LB'd
        (translated, no conntrack entry), glia_vip_tc not (the reverse), glia_pod_ip
        neither (not translated, no VIP conntrack entry)."""
        by_name = {c.name: c for c in cases}
        k = self.params.probe_connections
        out: dict[str, Any] = {"connections": k}
        for name in (GLIA_VIP_TC, GLIA_POD, GLIA_VIP):
            self.glia.flush()
            _, got = self.xlated(functools.partial(http_crr, [by_name[name]], k, 0))
            out[name] = {"sock_xlate": got, "vip_ct_entries": self.glia.vip_ct_entries()}
        problems = probe_problems(out)
        self.check(f"socket LB probe: {'; '.join(problems)}" if problems else None)
        return out

    def timed_latency(
        self, what: str, cases: list[Case], count: int
    ) -> tuple[dict[str, Any], dict[str, int]]:
        """One interleaved latency run: its summaries, and the socket LB's count, which
        must be exactly the connections made through glia_vip."""
        vip_conns = (count + LATENCY_WARMUP) * sum(c.name == GLIA_VIP for c in cases)
        crr, got = self.xlated(functools.partial(latency, cases, count))
        self.check(xlate_problem(what, got, vip_conns, exact=True))
        log(f"{what}: glia's socket LB translated {got} connections, {vip_conns} via {GLIA_VIP}")
        summaries = {c: summary(v) for c, v in crr.items()}
        return summaries, {"glia_vip_connections": vip_conns, "sock_xlate": got}

    def checked_wrk(self, what: str, case: Case, seconds: int) -> tuple[dict[str, float], int]:
        """One wrk run, and the socket LB's count for it: glia_vip's must be translated
        (each request is its own connection, plus those the run's end cut short), no
        other case's."""
        got, xlated = self.xlated(functools.partial(wrk, case, self.params, seconds))
        vip = case.name == GLIA_VIP
        expected = int(got["requests"]) if vip else 0
        self.check(xlate_problem(what, xlated, expected, exact=not vip))
        return got, xlated

    def pair_rate(self, n: int, by_name: dict[str, Case]) -> tuple[dict[str, Any], dict[str, int]]:
        """glia's three cases alone, round after round, the order changing each round;
        ``pair_rate_cps`` and the socket LB's counts. A single short wrk run scatters
        far more than the 5% target on this VM; a ratio within one round does not."""
        p = self.params
        cases = [by_name[c] for c in PAIR_RATE_CASES]
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in PAIR_RATE_CASES}
        order: list[list[str]] = []
        xlate = 0
        for r in range(p.pair_rate_rounds):
            what = f"N={n} paired rate {r + 1}/{p.pair_rate_rounds}"
            names = []
            for case in pair_order(cases, r):
                got, xlated = self.checked_wrk(f"{what}: {case.name}", case, p.pair_rate_seconds)
                xlate += xlated
                runs[case.name].append(got)
                names.append(case.name)
            order.append(names)
            rates = {c: runs[c][-1]["rate"] for c in PAIR_RATE_CASES}
            cells = ", ".join(f"{c} {rates[c]:.0f}" for c in names)
            shares = ", ".join(
                f"{a}/{b} {rates[a] / rates[b]:.3f}" for a, b in PAIR_RATIOS if rates[b]
            )
            log(f"{what}: {cells} /s; {shares}")
        problems = pair_rate_problems(runs, p.pair_rate_rounds)
        if problems:
            raise BenchError(f"N={n} paired rate: {'; '.join(problems)}")
        out = pair_rate_summary(runs, order)
        for key, entry in out["ratios"].items():
            halves = ", ".join(f"{k} {v}" for k, v in entry["median_by_order"].items())
            log(
                f"N={n} paired rate {key}: median of rounds {entry['median']:.3f} "
                f"({min(entry['rounds']):.3f}-{max(entry['rounds']):.3f}), "
                f"ratio of medians {entry['ratio_of_medians']}; by order: {halves}"
            )
        vip_requests = out[GLIA_VIP]["requests"]
        log(
            f"N={n}: glia's socket LB translated {xlate} connections in {GLIA_VIP}'s paired "
            f"runs ({vip_requests} requests), none of the other cases'"
        )
        return out, {"glia_vip_requests": vip_requests, "sock_xlate": xlate}

    def measure(self, n: int, kube_too: bool) -> dict[str, Any]:
        p = self.params
        programmed = self.program(n, kube_too)
        cases = self.cases(kube_too)
        by_name = {c.name: c for c in cases}
        for case in cases:
            reach(case)
        socket_lb: dict[str, Any] = {"probe": self.probe_socket_lb(cases)}
        # Latency first: right after a load every path is slower for a minute or so.
        # The pair alone first: interleaved with the other nodes' connections, glia's
        # map entries go cold between two of its own.
        pair = [by_name[GLIA_VIP], by_name[GLIA_POD]]
        log(
            f"N={n} latency: {p.pair_latency_count} connections per case, {GLIA_VIP} and {GLIA_POD}"
        )
        pair_us, socket_lb["pair_latency"] = self.timed_latency(
            f"N={n} latency pair", pair, p.pair_latency_count
        )
        log(f"N={n} latency: {p.latency_count} connections per case, all cases interleaved")
        crr_us, socket_lb["latency"] = self.timed_latency(f"N={n} latency", cases, p.latency_count)
        # The glia cases' rates, paired round by round (the targets' figure), then
        # every case's (the comparison with kube-proxy).
        log(
            f"N={n} paired rate: {', '.join(PAIR_RATE_CASES)} alone, "
            f"{p.pair_rate_rounds} rounds of {p.pair_rate_seconds} s"
        )
        pair_rate_cps, socket_lb["pair_rate"] = self.pair_rate(n, by_name)
        runs: dict[str, list[dict[str, float]]] = {c.name: [] for c in cases}
        wrk_xlate = 0
        for rep in range(p.wrk_reps):
            for case in rotated(cases, rep):
                what = f"N={n} wrk {rep + 1}/{p.wrk_reps}: {case.name}"
                log(what)
                got, xlated = self.checked_wrk(what, case, p.wrk_seconds)
                wrk_xlate += xlated
                runs[case.name].append(got)
        gbps: dict[str, list[float]] = {c.name: [] for c in cases}
        iperf_xlate = 0
        for rep in range(p.iperf_reps):
            for case in rotated(cases, rep + 1):
                what = f"N={n} iperf3 {rep + 1}/{p.iperf_reps}: {case.name}"
                log(what)
                rate, xlated = self.xlated(functools.partial(iperf, case, p.iperf_seconds))
                vip = case.name == GLIA_VIP
                expected = IPERF_CONNECTIONS if vip else 0
                self.check(xlate_problem(what, xlated, expected, exact=not vip))
                iperf_xlate += xlated
                gbps[case.name].append(rate)
        vip_requests = int(sum(r["requests"] for r in runs[GLIA_VIP]))
        socket_lb["wrk"] = {"glia_vip_requests": vip_requests, "sock_xlate": wrk_xlate}
        socket_lb["iperf3"] = {
            "glia_vip_connections": IPERF_CONNECTIONS * p.iperf_reps,
            "sock_xlate": iperf_xlate,
        }
        log(
            f"N={n}: glia's socket LB translated {wrk_xlate} connections in {GLIA_VIP}'s wrk runs "
            f"({vip_requests} requests), none of the other cases'"
        )
        return {
            **programmed,
            "rate_cps": {c: rate_entry(rs) for c, rs in runs.items()},
            "pair_rate_cps": pair_rate_cps,
            "wrk_latency_ms": {
                c: {q: round(median([r[f"{q}_ms"] for r in rs]), 3) for q in ("p50", "p99")}
                for c, rs in runs.items()
            },
            "latency_us": crr_us,
            "pair_latency_us": pair_us,
            "throughput_gbps": {c: {"median": median(v), "runs": v} for c, v in gbps.items()},
            "socket_lb": socket_lb,
        }

    def clear_kube(self) -> None:
        for node in self.kube.values():
            kube_reset(node)


def build(params: Params, bg: Background, obj_dir: Path) -> Bench:
    glia = GliaNode(obj_dir)
    plain = Node("plain")
    kube = {IPT_NFT: Node("iptnft", IPT_NFT), IPT_LEGACY: Node("iptleg", IPT_LEGACY)}
    kube[NFTABLES] = Node("nft", NFTABLES)
    bench = Bench(params, bg, glia, plain, kube)
    log(f"glia node: datapath pinned at {PIN_DIR}, pods plumbed by glia.datapath.netlink")
    try:
        glia.build()
    except BaseException:
        glia.close()  # main() only closes a Bench it got back
        raise
    for node in (plain, *kube.values()):
        log(f"kernel-routed node {node.node}")
        node.build_kernel()
    for node in (glia, plain, *kube.values()):
        start_servers(bg, node)
    return bench


def run_all(bench: Bench) -> dict[str, Any]:
    per_n: dict[str, Any] = {}
    p = bench.params
    for n in p.counts:
        per_n[str(n)] = bench.measure(n, kube_too=True)
    bench.clear_kube()  # the kube-proxy nodes are idle from here: no rules on the machine
    for n in p.ebpf_counts:
        per_n[str(n)] = bench.measure(n, kube_too=False)
    return per_n


# --- ratios and targets (pure) ---------------------------------------------------------

# The figures of a case at one N. rate, pair_rate and gbps: higher is better, the rest
# lower. rate is from the all-cases wrk runs, pair_rate from the paired runs of glia's
# cases alone; p50/p99 from the all-cases latency run, pair_p50/pair_p99 from the run
# of glia_vip and glia_pod_ip alone.
METRICS = ("rate", "p50", "p99", "gbps")  # every case
POD_METRICS = ("pair_rate", "pair_p50", "pair_p99", "gbps")  # glia_vip against glia_pod_ip
PER_PACKET_METRICS = ("pair_rate", "p50", "p99", "gbps")  # glia_vip_tc against glia_pod_ip
FIGURES = ("rate", "pair_rate", "p50", "p99", "pair_p50", "pair_p99", "gbps")
HIGHER_BETTER = ("rate", "pair_rate", "gbps")


def _fig(doc: dict[str, Any], n: str, case: str, metric: str) -> float | None:
    """One figure (FIGURES) of case ``case`` at N=``n``, latencies in µs; None if absent."""
    at = doc["results"][n]
    if case not in at["rate_cps"]:
        return None
    if metric == "rate":
        return float(at["rate_cps"][case]["median"])
    if metric == "pair_rate":
        pair = at.get("pair_rate_cps", {})
        return float(pair[case]["median"]) if case in pair else None
    if metric == "gbps":
        return float(at["throughput_gbps"][case]["median"])
    source = at["pair_latency_us"] if metric.startswith("pair_") else at["latency_us"]
    if case not in source:
        return None
    return float(source[case][metric.removeprefix("pair_")])


def _ratio_key(metric: str, n: str, case: str, other: str) -> str:
    return f"{metric}.N{n}.{case}/{other}"


def _metric_ratio(doc: dict[str, Any], metric: str, n: str, case: str, other: str) -> float | None:
    """``case`` / ``other`` for one figure at N=``n``: for pair_rate the median of the
    rounds' ratios (the paired runs' figure), for the rest the ratio of the figures."""
    if metric == "pair_rate":
        paired = doc["results"][n].get("pair_rate_cps", {}).get("ratios", {})
        entry = paired.get(f"{case}/{other}")
        return float(entry["median"]) if entry is not None else None
    a, b = _fig(doc, n, case, metric), _fig(doc, n, other, metric)
    return ratio(a, b, 3) if a is not None and b is not None else None


def ratios(doc: dict[str, Any]) -> dict[str, float | None]:
    """glia_vip / X for every figure, N and other case X (rate, p50/p99 from the
    all-cases runs; pair_rate, the median of the paired rounds' ratios; pair_p50/pair_p99
    from the pair run); glia_vip_tc / glia_pod_ip (the per-packet path); glia_vip at N /
    at the smallest N; glia's programming time / each mode's."""
    out: dict[str, float | None] = {}
    counts = list(doc["results"])

    def put(metric: str, n: str, case: str, other: str) -> None:
        r = _metric_ratio(doc, metric, n, case, other)
        if r is not None:
            out[_ratio_key(metric, n, case, other)] = r

    for n in counts:
        for metric in METRICS:
            for other in OTHERS:
                put(metric, n, GLIA_VIP, other)
        for metric in ("pair_rate", "pair_p50", "pair_p99"):
            put(metric, n, GLIA_VIP, GLIA_POD)
        for metric in (*METRICS, "pair_rate"):
            put(metric, n, GLIA_VIP_TC, GLIA_POD)
        for metric in FIGURES:
            now, first = _fig(doc, n, GLIA_VIP, metric), _fig(doc, counts[0], GLIA_VIP, metric)
            if now is not None and first is not None and n != counts[0]:
                out[f"{metric}.{GLIA_VIP}.N{n}/N{counts[0]}"] = ratio(now, first, 3)
        prog = doc["results"][n]["program_s"]
        for mode in KUBE_MODES:
            if mode in prog:
                out[f"program.N{n}.{GLIA}/{mode}"] = ratio(
                    prog[GLIA]["median"], prog[mode]["median"], 4
                )
    return out


def _better(metric: str, value: float, other: float, slack: float) -> bool:
    """``value`` at least as good as ``other`` within ``slack`` (0.05 = 5%)."""
    if metric in HIGHER_BETTER:
        return value >= other * (1 - slack)
    return value <= other * (1 + slack)


def _versus(
    doc: dict[str, Any],
    case: str,
    other: str,
    metrics: Sequence[str],
    slack: dict[str, float],
) -> dict[str, Any]:
    """``case`` against ``other`` at every N where both ran, per figure. The verdict
    is on the ratio: for pair_rate the median of the paired rounds' ratios (the ratio
    of the two medians is kept beside it), for the rest the ratio of the figures."""
    detail: dict[str, Any] = {}
    for n in doc["results"]:
        for metric in metrics:
            g, o = _fig(doc, n, case, metric), _fig(doc, n, other, metric)
            r = _metric_ratio(doc, metric, n, case, other)
            if g is None or o is None or r is None:
                continue
            entry: dict[str, Any] = {case: g, other: o, "ratio": r}
            if metric == "pair_rate":
                entry["ratio_of_medians"] = ratio(g, o, 3)
            entry["met"] = _better(metric, r, 1.0, slack[metric])
            detail[f"{metric}.N{n}"] = entry
    return {"met": all(v["met"] for v in detail.values()), "detail": detail}


def _flat(doc: dict[str, Any]) -> dict[str, Any]:
    """glia_vip/glia_pod_ip at every N against the same ratio at the smallest N.

    Each N is measured minutes apart and the machine drifts more than 5% in
    that time; the pod-IP path measured in the same rounds is the yardstick.
    """
    counts = list(doc["results"])
    detail: dict[str, Any] = {}
    for n in counts[1:]:
        for metric in POD_METRICS:
            vip, vip1 = _fig(doc, n, GLIA_VIP, metric), _fig(doc, counts[0], GLIA_VIP, metric)
            r_now = _metric_ratio(doc, metric, n, GLIA_VIP, GLIA_POD)
            r_then = _metric_ratio(doc, metric, counts[0], GLIA_VIP, GLIA_POD)
            if vip is None or vip1 is None or not r_now or not r_then:
                continue
            detail[f"{metric}.N{n}"] = {
                f"{GLIA_VIP}/{GLIA_POD}": round(r_now, 3),
                f"at N={counts[0]}": round(r_then, 3),
                "ratio": round(r_now / r_then, 3),
                f"{GLIA_VIP} (absolute)": vip,
                f"{GLIA_VIP} at N={counts[0]} (absolute)": vip1,
                "met": _better(metric, r_now, r_then, 0.05),
            }
    return {"met": all(v["met"] for v in detail.values()), "detail": detail}


FIVE_PCT = dict.fromkeys(FIGURES, 0.05)


def targets(doc: dict[str, Any]) -> dict[str, Any]:
    """The issue's four targets, each with its per-N, per-figure verdicts from this run.

    glia_vip is the socket-LB path, what the lab's agents run.
    """
    # Strictly better in rate and latency; a stream's packets never meet the rules
    # (only a connection's first one does), so there "ahead" means parity within 5%.
    strict = {"rate": 0.0, "p50": 0.0, "p99": 0.0, "gbps": 0.05}
    out: dict[str, Any] = {
        "vip_within_5pct_of_pod_ip": {
            "what": f"{GLIA_VIP} (socket LB) against {GLIA_POD} (same node, client in the same "
            "cgroup) at every N: rate and throughput >= 95%, latency p50 and p99 <= 105%; "
            "the rate is the median of the paired rounds' ratios (glia's cases alone, the "
            "order changing each round), the latencies from the pair run (the two alone, "
            "interleaved)",
            **_versus(doc, GLIA_VIP, GLIA_POD, POD_METRICS, FIVE_PCT),
        },
        "vip_within_5pct_of_kernel_pod_ip": {
            "what": f"{GLIA_VIP} against {KERNEL_POD} (kernel routing, no rules), where "
            "measured; latencies from the all-cases run",
            **_versus(doc, GLIA_VIP, KERNEL_POD, METRICS, FIVE_PCT),
        },
        "flat_1_to_max": {
            "what": f"{GLIA_VIP}/{GLIA_POD} at every N within 5% of that ratio at the smallest "
            "N (the same-round pod-IP path cancels the machine's drift between N); the rate "
            "from the paired rounds (median of their ratios), latencies from the pair run",
            **_flat(doc),
        },
    }
    ahead = {mode: _versus(doc, GLIA_VIP, mode, METRICS, strict) for mode in KUBE_MODES}
    out["ahead_of_kube_proxy"] = {
        "what": f"{GLIA_VIP} better than every kube-proxy mode at every N: higher rate, lower "
        "latency p50 and p99 (all-cases run), throughput at least 95% (streams do not meet "
        "the rules)",
        "met": all(v["met"] for v in ahead.values()),
        "per_mode": ahead,
    }
    n10k = doc["results"].get("10000")
    glia_10k = n10k["program_s"][GLIA]["median"] if n10k else None
    out["program_10000_under_1s"] = {
        "what": "ServiceMapSync.set_services of 10000 Services into empty maps, "
        "planning included (median)",
        "seconds": glia_10k,
        "met": glia_10k is not None and glia_10k < 1.0,
    }
    return out


def per_packet_path(doc: dict[str, Any]) -> dict[str, Any]:
    """Informational, not a target: glia's per-packet VIP path against the pod IP."""
    return {
        "what": f"informational, not a target: {GLIA_VIP_TC}, the VIP through glia's "
        "per-packet load-balancer (a client outside the socket-LB cgroup: sockets the hooks "
        f"do not translate), against {GLIA_POD} with the thresholds of "
        "vip_within_5pct_of_pod_ip; the rate from the paired rounds (median of their "
        "ratios), latencies from the all-cases run",
        **_versus(doc, GLIA_VIP_TC, GLIA_POD, PER_PACKET_METRICS, FIVE_PCT),
    }


# --- plot -------------------------------------------------------------------------------


def _short(value: float) -> str:
    if value >= 10000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def _panel(
    ax: Any,
    title: str,
    unit: str,
    rows: dict[str, dict[str, float]],
    log: bool,
    paired: dict[str, dict[str, float]] | None = None,
) -> None:
    """Bars per N (``rows``: N -> case -> value), each labelled "value · glia/this";
    with ``paired`` (N -> case -> ratio), that ratio instead of glia's bar / this bar."""
    width = 0.8 / max(len(row) for row in rows.values())
    top = max(v for row in rows.values() for v in row.values())
    bottom = min(v for row in rows.values() for v in row.values())
    seen: set[str] = set()
    for gi, (n, row) in enumerate(rows.items()):
        glia = row.get(GLIA_VIP)
        cases = [c for c in CASES if c in row]
        for bi, case in enumerate(cases):
            x = gi - width * (len(cases) - 1) / 2 + bi * width
            value = row[case]
            label = None if case in seen else NAMES[case]
            seen.add(case)
            ax.bar(x, value, width * 0.92, color=COLORS[case], label=label)
            text = _short(value)
            r: float | None = None
            if paired is not None:
                r = paired.get(n, {}).get(case)
            elif glia is not None and case != GLIA_VIP and value:
                r = glia / value
            if r is not None:
                text += f" · {r:.2f}" if r >= 0.1 else f" · {r:.2g}"
            y = value * 1.15 if log else value + top * 0.015
            ax.text(x, y, text, ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set_xticks(range(len(rows)), [f"N = {int(n):,}" for n in rows], fontsize=8)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom / 3, top * 300)
    else:
        ax.set_ylim(0, top * 1.45)
    ax.set_ylabel(unit)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", ncol=2)


def _ratio_rows(
    doc: dict[str, Any], label: str, case: str, other: str, metrics: Sequence[str]
) -> list[str]:
    """One table row per N: ``case``/``other`` for each of ``metrics``."""
    lines = []
    for n in doc["results"]:
        got = [doc["ratios"].get(_ratio_key(m, n, case, other)) for m in metrics]
        if all(v is None for v in got):
            continue
        cells = "".join(f"{v:6.2f}" if v is not None else "     -" for v in got)
        lines.append(f"{label:24s}{int(n):8,d} {cells}")
    return lines


def _table_lines(doc: dict[str, Any]) -> list[str]:
    head = f"{'X':24s}{'N':>8s}{'rate':>7s}{'p50':>6s}{'p99':>6s}{'Gbps':>6s}"
    lines = [f"{NAMES[GLIA_VIP]} / X at each N", "", head]
    lines += _ratio_rows(doc, f"{NAMES[GLIA_POD]}, paired", GLIA_VIP, GLIA_POD, POD_METRICS)
    for other in OTHERS:
        lines += _ratio_rows(doc, NAMES[other], GLIA_VIP, other, METRICS)
    lines += [
        "",
        "paired: rate = median of the per-round ratios",
        "of glia's cases run alone; p50, p99 = glia VIP",
        "and glia pod IP alone, interleaved. The rest:",
        "all cases in every round / interleaved.",
        "rate, Gbit/s: above 1 = glia better",
        "p50, p99: below 1 = glia better",
    ]
    return lines


def _verdict_lines(doc: dict[str, Any]) -> list[str]:
    def missed(entry: dict[str, Any]) -> str:
        details = [entry.get("detail", {})]
        details += [m["detail"] for m in entry.get("per_mode", {}).values()]
        names = {k.split(".")[0] for d in details for k, v in d.items() if not v["met"]}
        return f" (missed: {', '.join(m for m in FIGURES if m in names)})" if names else ""

    lines = ["Targets (this run; missed: the figures", "that missed at some N):"]
    for name, t in doc["targets"].items():
        lines.append(f"  {'met    ' if t['met'] else 'NOT met'}  {name}{missed(t)}")
    pp = doc["per_packet_path"]
    head = f"{'':24s}{'N':>8s}{'rate':>7s}{'p50':>6s}{'p99':>6s}{'Gbps':>6s}"
    lines += ["", f"Informational: {NAMES[GLIA_VIP_TC]} / {NAMES[GLIA_POD]}", head]
    lines += _ratio_rows(doc, "per-packet, rate paired", GLIA_VIP_TC, GLIA_POD, PER_PACKET_METRICS)
    lines.append(f"  within 5%: {'yes' if pp['met'] else 'no'}{missed(pp)}")
    return lines


def _pair_labels(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    """N -> case -> median over the paired rounds of glia_vip's rate / that case's."""
    out: dict[str, dict[str, float]] = {}
    for n, at in doc["results"].items():
        pair = at.get("pair_rate_cps")
        if pair is None:
            continue
        rates = {c: pair[c]["runs"] for c in PAIR_RATE_CASES}
        out[n] = {c: median(round_ratios(rates, GLIA_VIP, c)) for c in (GLIA_POD, GLIA_VIP_TC)}
    return out


def _spread_panel(ax: Any, doc: dict[str, Any]) -> None:
    """Per N, each paired round's ratio to the pod IP as a dot, the median as a bar."""
    p = doc["params"]
    offsets = {GLIA_VIP: -0.18, GLIA_VIP_TC: 0.18}
    seen: set[str] = set()
    counts = [n for n in doc["results"] if "pair_rate_cps" in doc["results"][n]]
    for gi, n in enumerate(counts):
        ratios_at = doc["results"][n]["pair_rate_cps"]["ratios"]
        for case, other in PAIR_RATIOS:
            entry = ratios_at[f"{case}/{other}"]
            rounds = entry["rounds"]
            x = gi + offsets[case]
            # Spread the dots sideways a little, so equal ratios do not hide each other.
            xs = [x + 0.1 * (i / max(len(rounds) - 1, 1) - 0.5) for i in range(len(rounds))]
            label = None if case in seen else f"{NAMES[case]} / {NAMES[other]}"
            seen.add(case)
            ax.scatter(xs, rounds, s=14, color=COLORS[case], alpha=0.8, label=label)
            ax.hlines(entry["median"], x - 0.12, x + 0.12, color="black", linewidth=2)
            ax.text(x + 0.13, entry["median"], f"{entry['median']:.3f}", va="center", fontsize=7)
    ax.axhline(1.0, color="#9a9a9a", linewidth=0.8)
    ax.axhline(0.95, color="#c0392b", linewidth=0.8, linestyle="--", label="0.95 (the target)")
    ax.set_xticks(range(len(counts)), [f"N = {int(n):,}" for n in counts], fontsize=8)
    ax.set_ylabel("ratio of rates in one round")
    ax.set_title(
        f"short connections, paired: each round's rate / {NAMES[GLIA_POD]}'s "
        f"({p['pair_rate_rounds']} rounds of {p['pair_rate_seconds']} s; bar: median)",
        fontsize=10,
    )
    ax.legend(fontsize=7, loc="lower left")


def _pair_rate_lines(doc: dict[str, Any]) -> list[str]:
    """Per N and paired ratio: the median of the rounds' ratios, their range, and the
    ratio of the medians."""
    p = doc["params"]
    lines = [
        "Short-connection rate, paired runs: glia's",
        f"cases alone, {p['pair_rate_rounds']} rounds of {p['pair_rate_seconds']} s, the order",
        "changing every round; a ratio per round.",
        "",
        f"{'':18s}{'N':>8s}{'median':>8s}{'min':>7s}{'max':>7s}{'of med.':>8s}"
        f"{'A 1st':>7s}{'B 1st':>7s}",
    ]
    for case, other in PAIR_RATIOS:
        for n, at in doc["results"].items():
            entry = at.get("pair_rate_cps", {}).get("ratios", {}).get(f"{case}/{other}")
            if entry is None:
                continue
            label = "socket LB / pod" if case == GLIA_VIP else "per-packet / pod"
            halves = "".join(
                f"{v:7.3f}" if v is not None else "      -"
                for v in entry["median_by_order"].values()
            )
            lines.append(
                f"{label:18s}{int(n):8,d}{entry['median']:8.3f}{min(entry['rounds']):7.3f}"
                f"{max(entry['rounds']):7.3f}{entry['ratio_of_medians'] or 0:8.3f}{halves}"
            )
    lines += [
        "",
        "median: of the per-round ratios (the targets');",
        "of med.: ratio of the two cases' median rates;",
        "A 1st, B 1st: median of the rounds where A (B)",
        "ran before B (A), for A / B: a gap between them",
        "is a carry-over from run to run.",
        "A single short wrk run scatters +-15-20% on this",
        "VM; both cases of a round share its drift.",
    ]
    return lines


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = doc["results"]

    def rows(metric: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for n in res:
            out[n] = {}
            for case in CASES:
                value = _fig(doc, n, case, metric)
                if value is not None:
                    out[n][case] = value
        return out

    program: dict[str, dict[str, float]] = {}
    for n, at in res.items():
        program[n] = {GLIA_VIP: at["program_s"][GLIA]["median"] * 1000}
        for mode in KUBE_MODES:
            if mode in at["program_s"]:
                program[n][mode] = at["program_s"][mode]["median"] * 1000

    fig = plt.figure(figsize=(20, 21))
    grid = fig.add_gridspec(4, 3)
    conns = doc["params"]["wrk_connections"]
    crr = "connect + GET + close, one at a time"
    panels = [
        (
            (0, 0),
            f"short connections: wrk, {conns} connections, Connection: close, all cases (median)",
            "connections/s",
            "rate",
        ),
        ((0, 1), f"{crr}, all cases interleaved: p50", "µs", "p50"),
        ((0, 2), f"{crr}, all cases interleaved: p99", "µs", "p99"),
        ((1, 1), f"{crr}, glia VIP and pod IP alone (pair run): p50", "µs", "pair_p50"),
        ((1, 2), f"{crr}, glia VIP and pod IP alone (pair run): p99", "µs", "pair_p99"),
        ((2, 1), "stream throughput: iperf3 (median)", "Gbit/s", "gbps"),
    ]
    for (r, c), title, unit, metric in panels:
        _panel(fig.add_subplot(grid[r, c]), title, unit, rows(metric), False)
    _panel(
        fig.add_subplot(grid[1, 0]),
        "short connections, glia's cases alone (paired runs): median\n"
        "on the bars: value · median over the rounds of glia VIP / that bar",
        "connections/s",
        rows("pair_rate"),
        False,
        paired=_pair_labels(doc),
    )
    _spread_panel(fig.add_subplot(grid[2, 0]), doc)
    ax = fig.add_subplot(grid[2, 2])
    _panel(
        ax,
        "time to program N Services (glia: set_services; iptables: restore --noflush; "
        "nftables: nft -f)",
        "ms (log)",
        program,
        True,
    )
    ax.title.set_fontsize(8)
    texts = ((0, _table_lines(doc)), (1, _verdict_lines(doc)), (2, _pair_rate_lines(doc)))
    for c, lines in texts:
        text = fig.add_subplot(grid[3, c])
        text.axis("off")
        text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    host = doc["host"]
    fig.suptitle(
        f"glia services benchmark, {doc['date'][:16]} UTC, kernel {host['kernel']}, "
        f"{host['cpus']} vCPUs, load {host['load_average_1m_before']}"
        f"->{host['load_average_1m_after']}{' (quick)' if doc['quick'] else ''}\n"
        "client pod -> node -> server pod, namespaces on one kernel; glia VIP = socket "
        "LB (client in the cgroup), per-packet = from_endpoint's LB; "
        "on each bar: value · glia VIP / that bar (this run)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.975))  # room for the two-line title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------


def _version(argv: list[str]) -> str:
    proc = run(argv, check=False)
    return (proc.stdout or proc.stderr).decode(errors="replace").strip().split("\n")[0]


def host_info() -> dict[str, Any]:
    return common_host_info(
        wrk=_version(["wrk", "-v"]),
        nginx=_version(["nginx", "-v"]),
        iperf3=_version(["iperf3", "--version"]),
        iptables_nft=_version(["iptables-nft", "--version"]),
        iptables_legacy=_version(["iptables-legacy", "--version"]),
        nft=_version(["nft", "--version"]),
    )


def check_host(obj_dir: Path) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark builds namespaces and loads BPF")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    missing_objs = [o for o in OBJECT_FILES if not (obj_dir / o).is_file()]
    if missing_objs:
        raise BenchError(f"no {', '.join(missing_objs)} in {obj_dir}: run `make bpf`")


def cleanup() -> None:
    """Everything of this benchmark, also a crashed run's: processes, namespaces, pins
    (the socket LB's links with them), the cgroup."""
    reap_recorded(PIDS)
    for name in netns_names(PREFIX):
        netns_delete(name)
    try:
        unpin(PIN_DIR)
    except DatapathError as e:
        log(f"teardown: {e}")
    try:
        root = cgroup2_root()
        if root is not None:
            # Clients a killed run left inside are moved out (they end on their own).
            remove_cgroup(root / PREFIX)
        release_glia_mount()  # only if the run mounted cgroup2 itself and it is empty
    except DatapathError as e:
        log(f"teardown: {e}")
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs (smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder ({RESULTS})")
    args = parser.parse_args(argv)
    params = Params.quick() if args.quick else Params()
    interrupt_on_sigterm()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    obj_dir = default_obj_dir()
    bg = Background(record=PIDS)
    bench: Bench | None = None
    host: dict[str, Any] = {}
    socket_lb_cgroup = None
    try:
        check_host(obj_dir)
        host = host_info()
        cleanup()  # leftovers of a crashed run
        RUN_DIR.mkdir(parents=True)
        bench = build(params, bg, obj_dir)
        socket_lb_cgroup = str(bench.glia.cgroup)
        results = run_all(bench)
    except (BenchError, DatapathError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        # A second Ctrl-C must not leave half a benchmark behind: teardown runs to its end.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log("tearing down")
        bg.stop_all()
        if bench is not None:
            bench.glia.close()
        cleanup()
    doc: dict[str, Any] = {
        "benchmark": "services",
        "schema": 3,
        "date": date,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
        "host": {**host, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "params": asdict(params),
        "cases": DESCRIPTIONS,
        "addresses": {
            "pod_cidr": POD_CIDR,
            "client": CLIENT_IP,
            "client_tc": CLIENT_TC_IP,
            "backends": [f"{BACKEND_IP}:{port}" for port in SERVER_PORTS],
            "pod_ip_target": f"{DIRECT_IP}:{SERVER_PORTS[0]}",
            "service_cidr": SERVICE_CIDR,
            "test_vip": TEST_VIP,
            "pod_mtu": MTU,
        },
        "socket_lb_cgroup": socket_lb_cgroup,
        "results": results,
    }
    doc["ratios"] = ratios(doc)
    doc["targets"] = targets(doc)
    doc["per_packet_path"] = per_packet_path(doc)
    text = write_json(args.out / "services.json", doc)
    plot(doc, args.out / "services.png")
    sys.stdout.write(text)
    log(f"done in {doc['duration_s']:.0f} s: {args.out / 'services.json'}, services.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
