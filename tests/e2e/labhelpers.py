"""Helpers shared by the end-to-end tests (imported as ``labhelpers``; no package here)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from glia.datapath.lbmaps import LBMaps
from glia.datapath.lbtypes import MapContents
from glia.datapath.netlink import HOST_PREFIX, VXLAN_NAME
from glia.kvstore import rbac
from glia.lab import netns, processes, teardown, topology
from glia.lab.lab import Lab, LabError, bin_dir
from glia.lab.podman import Container
from glia.model.identity import MIN_LOCAL

# GLIA_E2E_LAB lets two suites run side by side on one machine (each its own lab).
E2E_LAB = os.environ.get("GLIA_E2E_LAB", "gliat")
MESH_LAB = os.environ.get("GLIA_E2E_MESH_LAB", "gliamesh")  # 2 clusters x 2 nodes
T = TypeVar("T")


def lab_dir(name: str) -> Path:
    """Explicit, so a GLIA_LAB_DIR set for someone's own lab is never used by tests."""
    return topology.DEFAULT_LAB_DIR.with_name(f"lab-{name}")


def leftovers(lab: Lab, extra_netns: list[str] | None = None) -> list[str]:
    """Everything of ``lab`` still on the machine (empty after a clean ``down``)."""
    found = [f"namespace {n}" for n in netns.list_names() if topology.is_lab_netns(lab.name, n)]
    found += [f"namespace {p}" for p in extra_netns or [] if Path(p).exists()]
    if lab.topo.bpf_dir.exists():
        found.append(f"pins {lab.topo.bpf_dir}")
    if lab.dir.exists():
        found.append(f"directory {lab.dir}")
    found += [f"cgroup {path}" for path in teardown.lab_cgroups(lab.topo)]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            line = processes.cmdline(int(proc.name))
            if line is not None and str(lab.dir) + "/" in line:
                found.append(f"process {proc.name}: {line[:120]}")
    return found


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# --- traffic -------------------------------------------------------------------


def glia_run(
    lab: Lab, *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The installed ``glia ARGS`` against ``lab``, as a user runs it; output captured."""
    return subprocess.run(
        [str(bin_dir() / "glia"), *args],
        env=lab.cli_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def glia_ok(lab: Lab, *args: str, stdin: str | None = None) -> str:
    """:func:`glia_run` that must succeed; its stdout."""
    proc = glia_run(lab, *args, stdin=stdin)
    assert proc.returncode == 0, f"glia {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def ping(lab: Lab, src: Container, ip: str, count: int = 1) -> bool:
    """Whether ``count`` pings from ``src`` to ``ip`` all get an answer (1 s each at most)."""
    argv = ["ping", "-c", str(count), "-i", "0.2", "-W", "1", ip]
    r = lab.exec(f"{src.node}/{src.name}", argv)
    return r.returncode == 0 and f"{count} packets received" in r.stdout


def http(lab: Lab, src: Container, ip: str, timeout: int = 3) -> str:
    """The body the busybox httpd at ``ip`` answers to ``src`` ("" on failure)."""
    # `timeout`, not wget's -T: Debian's static busybox 1.35 wget segfaults with -T.
    r = lab.exec(
        f"{src.node}/{src.name}",
        ["timeout", str(timeout), "wget", "-q", "-O", "-", f"http://{ip}/"],
    )
    return r.stdout.strip() if r.returncode == 0 else ""


def reaches(lab: Lab, src: Container, dst: Container) -> None:
    """``src`` pings ``dst`` (waiting for the path to exist), then fetches its name over HTTP."""
    assert dst.ip
    ip = dst.ip
    wait_for(f"ping {src.name} -> {dst.name} ({ip})", lambda: ping(lab, src, ip))
    assert http(lab, src, ip) == dst.name


def node_fetches(lab: Lab, node: str, ctr: Container) -> str:
    """What node ``node`` (its namespace, no container) gets from ``ctr``'s HTTP server."""
    argv = ["timeout", "3", "wget", "-q", "-O", "-", f"http://{ctr.ip}/"]
    return wait_for(f"{node} -> {ctr.ip}", lambda: lab.node_exec(node, argv).stdout.strip() or None)


def all_of(probes: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run independent probes (each a few seconds of waiting) at once; results by name."""
    with ThreadPoolExecutor(max_workers=len(probes) or 1) as pool:
        futures = {name: pool.submit(fn) for name, fn in probes.items()}
        return {name: f.result() for name, f in futures.items()}


RECORDER_PORT = 7001


def recorder_command(name: str) -> list[str]:
    """The default httpd plus a TCP listener on :data:`RECORDER_PORT` that appends a line
    to /tmp/hits for every connection it accepts (see :func:`recorded_hits`)."""
    script = (
        f"mkdir -p /www && echo {name} > /www/index.html"
        " && printf '#!/bin/sh\\necho hit >> /tmp/hits\\n' > /tmp/record && chmod +x /tmp/record"
        f" && (nc -ll -p {RECORDER_PORT} -e /tmp/record &)"
        " && exec httpd -f -p 80 -h /www"
    )
    return ["sh", "-c", script]


def recorded_hits(lab: Lab, ctr: Container) -> int:
    r = lab.exec(f"{ctr.node}/{ctr.name}", ["sh", "-c", "cat /tmp/hits 2>/dev/null; true"])
    return r.stdout.count("hit")


def tcp_send(lab: Lab, src: Container, ip: str, port: int = RECORDER_PORT) -> bool:
    """Whether ``src`` could open a TCP connection to ``ip:port`` (1 s connect timeout)."""
    r = lab.exec(f"{src.node}/{src.name}", ["sh", "-c", f"echo x | nc -w 1 {ip} {port}"])
    return r.returncode == 0


def snmp(lab: Lab, ctr: Container) -> dict[str, int]:
    """The container's own IP stack counters (/proc/net/snmp), as ``{"Icmp.InEchos": n}``."""
    out = lab.exec(f"{ctr.node}/{ctr.name}", ["cat", "/proc/net/snmp"], check=True).stdout
    lines = out.splitlines()
    counters: dict[str, int] = {}
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        proto, names = header.split(":", 1)
        for k, v in zip(names.split(), values.split(":", 1)[1].split(), strict=False):
            counters[f"{proto}.{k}"] = int(v)
    return counters


# --- datapath ------------------------------------------------------------------


def metrics(lab: Lab, node: str) -> dict[tuple[str, str], int]:
    """``glia bpf metrics`` of ``node``: packets by (reason, direction)."""
    return {
        (str(m["reason"]), str(m["direction"])): int(m["packets"])
        for m in lab.agent(node).bpf_metrics()
    }


def metric_delta(
    before: dict[tuple[str, str], int],
    after: dict[tuple[str, str], int],
    reason: str,
    direction: str,
) -> int:
    return after.get((reason, direction), 0) - before.get((reason, direction), 0)


def glia_devices(lab: Lab, node: str) -> dict[str, int]:
    """glia's devices in the node's namespace (glia_vxlan and the gliae* endpoint veths)."""
    out = lab.node_exec(node, ["ip", "-o", "link", "show"], check=True).stdout
    found = {}
    for line in out.splitlines():
        index, name = line.split(":", 2)[:2]
        name = name.strip().split("@", 1)[0]
        if name == VXLAN_NAME or name.startswith(HOST_PREFIX):
            found[name] = int(index)
    return found


def host_veths(lab: Lab, node: str) -> dict[str, int]:
    return {n: i for n, i in glia_devices(lab, node).items() if n.startswith(HOST_PREFIX)}


def ingress_program(lab: Lab, node: str, dev: str) -> str | None:
    """Name of the BPF program on the device's tc ingress, None when there is none."""
    out = lab.node_exec(node, ["tc", "filter", "show", "dev", dev, "ingress"], check=True).stdout
    for word in out.split():
        if word.startswith(("from_endpoint", "from_overlay")):
            return word.split(":", 1)[0]
    return None


def detach_all(lab: Lab, node: str) -> list[str]:
    """Remove every tc ingress filter from glia's devices on ``node``; the devices touched."""
    devices = sorted(glia_devices(lab, node))
    for dev in devices:
        lab.node_exec(node, ["tc", "filter", "del", "dev", dev, "ingress"], check=True)
    return devices


def restart_agents(lab: Lab, nodes: list[str]) -> None:
    """Restart several agents at once (SIGTERM, start, wait until healthy)."""
    for node in nodes:
        lab.stop_agent(node)
    for node in nodes:
        lab.start_agent(node, wait=False)
    lab.wait_agents(nodes)


# --- kvstore -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredKey:
    value: bytes
    lease: int  # 0: not on a lease


def _etcdctl(
    lab: Lab, cluster: str, user: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """etcdctl against ``cluster``'s etcd as ``user``, run from a node (etcd listens on
    the underlay, which the test's own namespace cannot reach)."""
    c = lab.topo.cluster(cluster)
    cfg = lab.etcd_config(cluster, user)
    argv = [
        "etcdctl",
        f"--endpoints={c.etcd_endpoint}",
        f"--cacert={cfg.ca_file}",
        f"--cert={cfg.cert_file}",
        f"--key={cfg.key_file}",
        "--dial-timeout=3s",
        *args,
    ]
    return lab.node_exec(c.nodes[0].ref, argv, input=stdin, timeout=20, check=check)


def etcd_keys(lab: Lab, cluster: str, prefix: str) -> dict[str, StoredKey]:
    """Every key under ``prefix`` in ``cluster``'s etcd."""
    r = _etcdctl(lab, cluster, rbac.RW_USER, "-w", "json", "get", "--prefix", prefix)
    out = {}
    for kv in json.loads(r.stdout).get("kvs") or []:
        key = base64.b64decode(kv["key"]).decode()
        out[key] = StoredKey(base64.b64decode(kv.get("value", "")), int(kv.get("lease", 0)))
    return out


def etcd_delete(lab: Lab, cluster: str, *keys: str) -> None:
    """Delete ``keys`` in one transaction (as the operator's GC does), with etcdctl."""
    # No compares, then the requests if they hold, then none if they do not.
    script = "\n" + "".join(f"del {key}\n" for key in keys) + "\n\n"
    r = _etcdctl(lab, cluster, rbac.RW_USER, "txn", stdin=script)
    assert r.stdout.startswith("SUCCESS"), r.stdout


def etcd_put(lab: Lab, cluster: str, key: str, value: bytes, user: str) -> tuple[bool, str]:
    """Put ``key`` in ``cluster``'s etcd as etcd ``user`` (as a compromised holder of
    that user's certificate would); (ok, etcdctl's message)."""
    r = _etcdctl(lab, cluster, user, "put", key, stdin=value.decode(), check=False)
    return r.returncode == 0, (r.stderr or r.stdout).strip()


def endpoint_named(lab: Lab, ctr: Container) -> dict[str, Any] | None:
    """The agent's endpoint for ``ctr`` once it has its labels' identity (else None)."""
    for ep in lab.agent(ctr.node).endpoints():
        if ep.get("name") == ctr.name and ep.get("identity", 0) >= MIN_LOCAL:
            return ep
    return None


# --- services ------------------------------------------------------------------

NODES = ("c1/n1", "c1/n2")
STREAM_PORT = 7000  # backend_command's line server
UDP_PORT = 5353  # udp_server's port


def backend_command(name: str) -> list[str]:
    """A Service backend whose servers are not PID 1, so a test can stop and restart
    them inside the container: busybox httpd on :80 answering ``name``, and on
    :data:`STREAM_PORT` a line server answering ``name`` to every line it reads
    (``nc -ll`` forks one ``/tmp/lines`` per connection, which outlives the listener)."""
    script = (
        f"mkdir -p /www && echo {name} > /www/index.html && httpd -p 80 -h /www"
        f" && printf '#!/bin/sh\\nwhile read l; do echo {name}; done\\n' > /tmp/lines"
        " && chmod +x /tmp/lines"
        f" && (nc -ll -p {STREAM_PORT} -e /tmp/lines &)"
        " && while true; do sleep 1; done"
    )
    return ["sh", "-c", script]


def service_manifest(
    name: str,
    selector: dict[str, str],
    ports: list[dict[str, Any]],
    *,
    annotations: dict[str, str] | None = None,
    client_ip_affinity: bool = False,
) -> dict[str, Any]:
    """A Kubernetes ``v1 Service`` document as ``glia apply`` takes it."""
    spec: dict[str, Any] = {"selector": selector, "ports": ports}
    if client_ip_affinity:
        spec["sessionAffinity"] = "ClientIP"
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


# The test's own Python, run in a container's network namespace: the busybox
# image has no UDP client or server (its nc lacks -u) and no clock finer than 1 s.
UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(sys.argv[1].encode(), peer)
"""

# Per request a new socket (a new source port): "name peer_ip:peer_port" or the error.
UDP_CLIENT = """
import socket, sys, time
ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.connect((ip, port))
    started = time.monotonic()
    try:
        s.send(b"who")
        data, peer = s.recvfrom(2048)
        print("reply", data.decode(), f"{peer[0]}:{peer[1]}")
    except ConnectionRefusedError:
        print("refused", f"{time.monotonic() - started:.6f}")
    except TimeoutError:
        print("timeout", f"{time.monotonic() - started:.6f}")
    s.close()
"""

# One TCP connect: "connected|refused|timeout SECONDS".
TCP_CONNECT = """
import socket, sys, time
s = socket.socket()
s.settimeout(5)
started = time.monotonic()
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("connected", f"{time.monotonic() - started:.6f}")
except ConnectionRefusedError:
    print("refused", f"{time.monotonic() - started:.6f}")
except TimeoutError:
    print("timeout", f"{time.monotonic() - started:.6f}")
"""

# HTTP GET from fixed source ports: "sport body" per port.
HTTP_FROM_PORTS = """
import socket, sys
ip = sys.argv[1]
for sport in map(int, sys.argv[2].split(",")):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(3)
    s.bind(("0.0.0.0", sport))
    s.connect((ip, 80))
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    raw = b""
    while chunk := s.recv(4096):
        raw += chunk
    s.close()
    print(sport, raw.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip())
"""


def netns_python_argv(ctr: Container, script: str, *args: str) -> list[str]:
    if not ctr.netns_path:
        pytest.fail(f"container {ctr.name} has no network namespace")
    return ["nsenter", f"--net={ctr.netns_path}", sys.executable, "-c", script, *args]


def netns_python(ctr: Container, script: str, *args: str, timeout: float = 30.0) -> str:
    """Run ``script`` in ``ctr``'s network namespace; its output (fails the test on error)."""
    r = subprocess.run(
        netns_python_argv(ctr, script, *args), capture_output=True, text=True, timeout=timeout
    )
    assert r.returncode == 0, f"{ctr.name}: {r.stderr.strip()}"
    return r.stdout


FAILED = "!failed"  # what http_names counts for a request that got no answer


def http_names(lab: Lab, src: Container, ip: str, count: int) -> Counter[str]:
    """``count`` GETs from ``src`` to ``http://ip/``, each a new connection, in one exec:
    how many each backend (by the name it answers) served, failures as :data:`FAILED`."""
    loop = f"for i in $(seq {count}); do timeout 3 wget -q -O - http://{ip}/ || echo {FAILED}; done"
    r = lab.exec(f"{src.node}/{src.name}", ["sh", "-c", loop], timeout=count * 3 + 30)
    return Counter(line.strip() for line in r.stdout.splitlines() if line.strip())


def lb_frontend(lab: Lab, node: str, vip: str, port: int, proto: str = "TCP") -> Any:
    """The ``glia bpf lb list`` row of ``vip:port/proto`` on ``node`` (None if absent)."""
    for row in lab.agent(node).bpf_lb():
        if row["vip"] == vip and row["port"] == port and row["protocol"] == proto:
            return row
    return None


def slotted(row: Any) -> set[str]:
    """IPs of the backends that hold a slot (get new connections) in a ``bpf lb`` row."""
    if row is None:
        return set()
    return {b["ip"] for b in row["backends"] if b["state"] == "ready" and b["slot"] is not None}


def wait_backends(
    lab: Lab,
    vip: str,
    port: int,
    ips: set[str],
    proto: str = "TCP",
    timeout: float = 20.0,
) -> None:
    """Until every node's maps give exactly ``ips`` slots for ``vip:port`` (in sync)."""

    def probe() -> bool:
        for node in NODES:
            row = lb_frontend(lab, node, vip, port, proto)
            if row is None or not row["in_sync"] or slotted(row) != ips:
                return False
        return True

    wait_for(f"{vip}:{port}/{proto} to have backends {sorted(ips)} on every node", probe, timeout)


def frontends(lab: Lab, node: str) -> set[str]:
    return {row["frontend"] for row in lab.agent(node).bpf_lb()}


def container_pid(lab: Lab, ctr: Container) -> int:
    """Host PID of the container's first process."""
    out = lab.podman(ctr.node).run(["container", "inspect", "-f", "{{.State.Pid}}", ctr.name])
    return int(out.strip())


def children(pid: int, comm: str) -> list[int]:
    """Host PIDs of ``pid``'s children whose command is ``comm``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == comm:
                    found.append(int(child))
            except FileNotFoundError:
                continue
    return found


def lb_maps(lab: Lab, node: str) -> tuple[MapContents, set[tuple[str, int, int]]]:
    """The node's lb4 maps read raw from their pins, and its ClientIP affinity entries
    as (client, service id, backend id)."""
    maps = LBMaps.open_pinned(lab.node(node).bpf_pin_dir)
    try:
        contents = maps.read()
        affinity = {(a.client, a.svc_id, a.backend_id) for a in maps.affinity_entries()}
    finally:
        maps.close()
    return contents, affinity


def _mix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def tuple_hash(saddr: str, daddr: str, sport: int, dport: int, proto: int) -> int:
    """Python mirror of ``glia_tuple_hash`` (bpf/include/lb.h): Maglev's slot is this % M."""
    h = _mix32(int(ipaddress.IPv4Address(saddr)) ^ 0x9E3779B9)
    h = _mix32(h ^ int(ipaddress.IPv4Address(daddr)))
    h = _mix32(h ^ ((sport << 16) | dport))
    return _mix32(h ^ proto)


class LineReader:
    """Lines of a running command's output, with the time each arrived (a thread reads)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.strip()))

    def since(self, t: float) -> list[str]:
        with self._lock:
            return [line for at, line in self.lines if at >= t]

    def all(self) -> list[str]:
        with self._lock:
            return [line for _, line in self.lines]

    def wait_more(self, t: float, count: int, timeout: float = 10.0) -> list[str]:
        """At least ``count`` lines that arrived after ``t``."""

        def enough() -> list[str] | None:
            lines = self.since(t)
            return lines if len(lines) >= count else None

        return wait_for(f"{count} more lines of output", enough, timeout)


class Workload:
    """Containers, Services and processes a test makes; :meth:`close` removes them all
    (Services first, waiting until no node's maps hold their frontends any more)."""

    def __init__(self, lab: Lab, api_node: str = NODES[0]) -> None:
        self.lab = lab
        self.api = lab.agent(api_node)
        self.containers: list[Container] = []
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.procs: dict[str, list[subprocess.Popen[str]]] = {}
        self.vips: set[str] = set()

    def container(
        self,
        node: str,
        name: str,
        labels: dict[str, str],
        command: list[str] | None = None,
        publish: tuple[str, ...] = (),
    ) -> Container:
        ctr = self.lab.run_container(node, name, labels=labels, command=command, publish=publish)
        self.containers.append(ctr)
        return ctr

    def endpoint_ready(self, *ctrs: Container) -> None:
        for ctr in ctrs:

            def found(c: Container = ctr) -> dict[str, Any] | None:
                return endpoint_named(self.lab, c)

            wait_for(f"endpoint {ctr.name} with its identity", found)

    def apply(self, *docs: dict[str, Any]) -> list[str]:
        """Store the Services; their ClusterIPs in order."""
        for d in docs:
            self.services[(d["metadata"].get("namespace", "default"), d["metadata"]["name"])] = d
        results = self.api.config_apply(list(docs), "test_services")["results"]
        ips = [str(r["cluster_ip"]) for r in results]
        self.vips.update(ips)
        return ips

    def spawn(self, ctr: Container, script: str, *args: str) -> subprocess.Popen[str]:
        """Run Python ``script`` in ``ctr``'s network namespace, in the background."""
        proc = subprocess.Popen(
            netns_python_argv(ctr, script, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs.setdefault(ctr.name, []).append(proc)
        return proc

    def exec_bg(self, ctr: Container, argv: list[str]) -> subprocess.Popen[str]:
        """Run ``argv`` inside ``ctr`` in the background, its stdout piped."""
        full, env = self.lab.exec_argv(f"{ctr.node}/{ctr.name}", argv)
        proc = subprocess.Popen(
            full, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.procs.setdefault(ctr.name, []).append(proc)
        return proc

    def _stop(self, name: str) -> None:
        for proc in self.procs.pop(name, []):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    def remove(self, ctr: Container) -> None:
        """Remove ``ctr`` (its processes first: they keep its namespace alive)."""
        self._stop(ctr.name)
        self.lab.remove_container(ctr.node, ctr.name)
        self.containers = [c for c in self.containers if c.name != ctr.name]

    def close(self) -> None:
        problems: list[str] = []
        if self.services:
            try:
                self.api.config_delete(list(self.services.values()), "test_services")
            except Exception as e:  # keep cleaning up; report at the end
                problems.append(f"deleting services: {e}")
        for name in list(self.procs):
            self._stop(name)
        for ctr in list(self.containers):
            try:
                self.remove(ctr)
            except LabError as e:
                problems.append(str(e))
        if self.vips and not problems:
            wait_for(
                f"frontends of {sorted(self.vips)} to leave every node's maps",
                lambda: all(
                    not any(f.split(":")[0] in self.vips for f in frontends(self.lab, n))
                    for n in NODES
                ),
            )
        assert not problems, problems
