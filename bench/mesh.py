"""ClusterMesh benchmark: propagation, failover, scaling and a 100,000-endpoint import.

Run as root from the repository: ``.venv/bin/python bench/mesh.py [--quick] [--out DIR]``
(``make bench-mesh``). It prints one JSON document on stdout (progress goes to
stderr), writes ``mesh.json`` and ``mesh.png`` into ``--out`` (default
``bench/results``) and tears down everything it made, also on failure or
Ctrl-C. Method and figures: bench/README.md, "mesh.py".

Two labs, one after the other:

1. ``gliabm``: 2 clusters x 2 nodes with podman containers.
   - propagation at 2 clusters: cluster c2's record of a global Service
     (written as c2's operator writes it) has one backend's readiness
     flipped, 100+ times; each time, how long until the Service's lb4 entry
     on every node of c1 holds the new number of ready backends;
   - failover: a global Service with affinity local and backends in both
     clusters, a client pod in c1 sending a steady stream of short requests
     to its ClusterIP; c1's backend servers are killed, later started again;
   - cross-cluster pod-to-pod TCP throughput against kernel VXLAN, with
     ``bench/_throughput.py`` (shared with ``bench/pods.py``, not copied).
2. ``gliabmx``: 16 clusters x 1 node, agents without containers (``--quick``:
   4). Meshes of 2, 4, 8 and 16 of them (the others' agents idle with no
   remote cluster): propagation from c2 to every other member, the time
   until c1's agent has synced every remote cluster again after its remote
   cluster files were removed and restored, each member agent's memory. Then
   one agent (c1's) imports 100,000 synthetic endpoints of two remote
   clusters (ipcache entries of 400 nodes, with their pod CIDRs and
   identities) from connect until synced and until its ipcache holds them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from ctypes import c_uint32
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


from _common import (
    BenchError,
    host_info,
    interrupt_on_sigterm,
    log,
    median,
    netns_delete,
    netns_names,
    netns_path,
    nsenter,
    run,
    wait_for,
    write_json,
)
from _loadtool import in_cgroup  # bench/ is a folder of scripts
from _meshdata import (
    NAMESPACE,
    WWW,
    backend_command,
    failover_figures,
    latency_summary,
    parse_requests,
    pod_ips,
    return_figures,
    service_manifest,
)
from _meshreport import plot, targets
from glia.agent.client import AgentClient, AgentClientError
from glia.datapath.maps import BPFMap
from glia.datapath.mapspecs import LB_BACKENDS, LB_SERVICES, LB_SLOTS
from glia.datapath.structs import (
    glia_lb4_backend,
    glia_lb4_key,
    glia_lb4_service,
    glia_lb4_slot,
    glia_lb4_slot_key,
)
from glia.kvstore import rbac
from glia.lab import configs, topology
from glia.lab.lab import Lab, LabError
from glia.lab.podman import Container, NodePodman

LAB = "gliabm"  # 2 clusters x 2 nodes, containers
LAB_SCALE = "gliabmx"  # up to 16 clusters x 1 node
CONTAINER = "gliabm-"
REF_PREFIX = "gliabm-ref-"  # the kernel VXLAN reference's namespaces (bench/_throughput.py)
TOOL = Path(__file__).resolve().parent / "_meshtool.py"
RESULTS = Path(__file__).resolve().parent / "results"
APP_WEB = {"app": "glia-bench-web"}
APP_NONE = {"app": "glia-bench-none"}  # selects nothing: the propagation Service's own side
WEB, PROP = "web", "prop"
PORT = 80
TOOLS = ("ip", "nsenter", "podman", "etcd", "iperf3")


@dataclass(frozen=True)
class Params:
    prop_changes: int = 300  # readiness changes at 2 clusters (lab gliabm)
    scale_changes: int = 200  # per mesh size
    scale_clusters: tuple[int, ...] = (2, 4, 8, 16)
    prop_backends: int = 3
    gap_s: tuple[float, float] = (0.02, 0.06)  # pause between two changes (random)
    change_timeout: float = 15.0
    health_interval: float = 0.2  # the failover Service's probes
    health_failures: int = 2
    load_rate: int = 200  # requests per second
    load_seconds: float = 60.0
    stop_at: float = 20.0  # seconds into the load: c1's backend servers killed
    restart_at: float = 40.0  # ... and started again
    iperf_seconds: int = 5
    iperf_reps: int = 5
    import_endpoints: int = 100_000  # over two remote clusters
    import_pods_per_node: int = 250
    import_identities: int = 1000  # per remote cluster
    import_timeout: float = 300.0

    @classmethod
    def quick(cls) -> Params:
        return cls(
            prop_changes=100,
            scale_changes=100,
            scale_clusters=(2, 4),
            load_seconds=20.0,
            stop_at=6.0,
            restart_at=13.0,
            iperf_seconds=2,
            iperf_reps=1,
            import_endpoints=10_000,
            import_identities=100,
            import_timeout=120.0,
        )

    @property
    def detection_s(self) -> float:
        return self.health_interval * self.health_failures


# --- small helpers -------------------------------------------------------------------


class Reporter:
    def step(self, text: str) -> None:
        log(text)

    def note(self, text: str) -> None:
        pass


def tool(netns: str, command: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``_meshtool.py COMMAND`` inside lab namespace ``netns``, spec on stdin; its JSON."""
    argv = nsenter(netns_path(netns), [sys.executable, str(TOOL), command])
    proc = run(argv, input=json.dumps(spec).encode(), timeout=timeout, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise BenchError(f"_meshtool {command} failed: {err[-2000:]}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def etcd_spec(lab: Lab, cluster: str, user: str = rbac.RW_USER) -> dict[str, Any]:
    cfg = lab.etcd_config(cluster, user)
    return {
        "endpoints": list(cfg.endpoints),
        "ca_file": cfg.ca_file,
        "cert_file": cfg.cert_file,
        "key_file": cfg.key_file,
    }


def vip(cluster_id: int, offset: int) -> str:
    return str(topology.service_cidr(cluster_id).network_address + offset)


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used so far (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(lab: Lab, process: str) -> int:
    st = lab.state()
    rec = st.processes.get(process) if st else None
    if rec is None:
        raise BenchError(f"lab {lab.name}: no process {process} recorded")
    return rec.pid


def apply(lab: Lab, node: str, manifest: dict[str, Any]) -> None:
    try:
        lab.agent(node).config_apply([manifest], "bench/mesh.py")
    except AgentClientError as e:
        raise BenchError(f"glia apply through {node}: {e}") from None


def mesh_status(lab: Lab, node: str) -> dict[str, dict[str, Any]]:
    """The node's remote clusters by name (its ``clustermesh status``), {} if unanswered."""
    try:
        doc = AgentClient(str(lab.node(node).socket), timeout=10).clustermesh()
    except AgentClientError:
        return {}
    return {c["name"]: c for c in doc.get("clusters", [])}


class FrontendReader:
    """The backends holding a slot of one frontend (``VIP:80/TCP``) on one node, read
    entry by entry from its pinned maps (``LBMaps.read`` also reads every Maglev table,
    which takes far longer than a poll may)."""

    def __init__(self, pin_dir: Path, vip_: str) -> None:
        self._maps: list[BPFMap[Any, Any]] = []
        self.services = self._open(pin_dir, LB_SERVICES, glia_lb4_key, glia_lb4_service)
        self.slots = self._open(pin_dir, LB_SLOTS, glia_lb4_slot_key, glia_lb4_slot)
        self.backends = self._open(pin_dir, LB_BACKENDS, c_uint32, glia_lb4_backend)
        (raw,) = struct.unpack("=I", socket.inet_aton(vip_))
        self.key = glia_lb4_key(vip=raw, port=socket.htons(PORT), proto=6)

    def _open(self, pin_dir: Path, spec: Any, key: Any, value: Any) -> BPFMap[Any, Any]:
        m: BPFMap[Any, Any] = BPFMap.open_pinned(pin_dir, spec, key, value)
        self._maps.append(m)
        return m

    def slotted(self) -> set[str] | None:
        """IPs holding a slot; None when the frontend is absent."""
        entry = self.services.lookup(self.key)
        if entry is None:
            return None
        out = set()
        for slot in range(entry.count):
            got = self.slots.lookup(glia_lb4_slot_key(svc_id=entry.svc_id, slot=slot))
            be = self.backends.lookup(c_uint32(got.backend_id)) if got is not None else None
            if be is not None:
                out.add(socket.inet_ntoa(struct.pack("=I", be.ip)))
        return out

    def close(self) -> None:
        for m in self._maps:
            m.close()


# --- lab gliabm: propagation, failover, throughput -------------------------------------------


def start_backends(lab: Lab) -> dict[str, Container]:
    out = {}
    for node, short in (
        ("c1/n1", "web1a"),
        ("c1/n2", "web1b"),
        ("c2/n1", "web2a"),
        ("c2/n2", "web2b"),
    ):
        name = CONTAINER + short
        out[name] = lab.run_container(node, name, labels=APP_WEB, command=backend_command(name))
    client = lab.run_container("c1/n1", CONTAINER + "client", command=["sleep", "3600"])
    out[client.name] = client
    for c in out.values():
        if not c.ip or not c.netns_path:
            raise BenchError(f"container {c.name} has no IP or namespace: {c}")
    return out


def propagation(
    lab: Lab, params: Params, observers: Sequence[tuple[str, str]], changes: int, runner: str
) -> dict[str, Any]:
    """Readiness changes of c2's record until the maps of ``observers`` (node, VIP) follow."""
    spec = {
        "etcd": etcd_spec(lab, "c2"),
        "cluster": "c2",
        "cluster_id": 2,
        "node": "n1",
        "namespace": NAMESPACE,
        "name": PROP,
        "vip": vip(2, 11),
        "backends": params.prop_backends,
        "changes": changes,
        "gap_s": list(params.gap_s),
        "change_timeout": params.change_timeout,
        "settle_timeout": 60.0,
        "observers": [
            {"name": n, "pin_dir": str(lab.node(n).bpf_pin_dir), "vip": v, "port": PORT}
            for n, v in observers
        ],
    }
    timeout = 120 + changes * (params.change_timeout / 4 + params.gap_s[1])
    doc = tool(lab.node(runner).netns, "propagate", spec, timeout)
    names = [n for n, _ in observers]
    samples = doc["samples"]
    # A change not seen everywhere within the timeout counts as the timeout (a lower
    # bound of its latency), so it weighs on the percentiles instead of vanishing.
    limit = params.change_timeout * 1000

    def worst(s: dict[str, Any], prefix: str = "") -> float:
        if any(n.startswith(prefix) for n in s["timed_out"]):
            return limit
        return float(max(v for k, v in s["ms"].items() if k.startswith(prefix)))

    every = [worst(s) for s in samples]
    c1 = [worst(s, "c1/") for s in samples]
    return {
        "observers": names,
        "changes": len(samples),
        "timed_out": sum(1 for s in samples if s["timed_out"]),
        "every_observer_ms": latency_summary(every),
        "cluster_c1_ms": latency_summary(c1),
        "put_ms": latency_summary([s["put_ms"] for s in samples]),
        "samples_ms": [round(v, 2) for v in every],
    }


def httpd_pid(lab: Lab, node: str, name: str) -> int:
    """Host PID of the container's httpd (a child of its PID 1, after daemonizing)."""
    pm = NodePodman(lab.node(node))
    got = run(pm.argv(["inspect", "--format", "{{.State.Pid}}", name]), env=pm.env, timeout=30)
    init = int(got.stdout.decode().strip())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "httpd" and ppid == init:
            return int(proc.name)
    raise BenchError(f"{name}: no httpd under its init (pid {init})")


class MapWatch:
    """Records when each of ``nodes``' slot set of ``vip_`` changes (a thread, 5 ms polls)."""

    def __init__(self, lab: Lab, nodes: Sequence[str], vip_: str) -> None:
        self._maps = {n: FrontendReader(lab.node(n).bpf_pin_dir, vip_) for n in nodes}
        self.changes: list[tuple[float, str, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glia-bench-mapwatch")

    def __enter__(self) -> MapWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for m in self._maps.values():
            m.close()

    def _run(self) -> None:
        last: dict[str, set[str] | None] = {}
        while not self._stop.is_set():
            for node, m in self._maps.items():
                slots = m.slotted()
                if node not in last or slots != last[node]:
                    last[node] = slots
                    self.changes.append((time.monotonic(), node, sorted(slots or ())))
            time.sleep(0.005)

    def all_in(self, ips: set[str], since: float) -> float | None:
        """When every node first held only ``ips`` (non-empty), from ``since`` on
        (``since`` itself when they already did then)."""

        def done(state: dict[str, set[str]]) -> bool:
            full = len(state) == len(self._maps)
            return full and all(bool(s) and s <= ips for s in state.values())

        state: dict[str, set[str]] = {}
        for t, node, slots in self.changes:
            if t >= since and done(state):
                return since
            state[node] = set(slots)
            if t >= since and done(state):
                return t
        return since if done(state) else None


def failover(lab: Lab, params: Params, ctrs: dict[str, Container]) -> dict[str, Any]:
    local = [CONTAINER + "web1a", CONTAINER + "web1b"]
    remote = [CONTAINER + "web2a", CONTAINER + "web2b"]
    node_of = {CONTAINER + "web1a": "c1/n1", CONTAINER + "web1b": "c1/n2"}
    web_vip = vip(1, 10)
    client = ctrs[CONTAINER + "client"]
    cgroup = lab.node_cgroup("c1/n1")
    argv = [sys.executable, str(TOOL), "http-load"]
    if cgroup is not None:  # as a process of the client container: socket LB applies
        argv = in_cgroup(cgroup, argv)
    spec = {
        "host": web_vip,
        "port": PORT,
        "rate": params.load_rate,
        "seconds": params.load_seconds,
        "timeout": 1.0,
    }
    local_ips = {ctrs[n].ip or "" for n in local}
    remote_ips = {ctrs[n].ip or "" for n in remote}
    with MapWatch(lab, ["c1/n1", "c1/n2"], web_vip) as watch:
        proc = subprocess.Popen(
            nsenter(client.netns_path or "", argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec).encode())
            proc.stdin.close()
            proc.stdin = None  # communicate() must not flush it
            began = time.monotonic()
            pids = {n: httpd_pid(lab, node_of[n], n) for n in local}
            time.sleep(max(0.0, began + params.stop_at - time.monotonic()))
            stopped = time.monotonic()
            for pid in pids.values():  # our own containers' servers, by PID
                os.kill(pid, signal.SIGKILL)
            log(f"failover: killed the httpd of {', '.join(local)}")
            time.sleep(max(0.0, began + params.restart_at - time.monotonic()))
            # From the first exec on: each server listens somewhere within its exec.
            restarted = time.monotonic()
            for n in local:
                lab.exec(f"{node_of[n]}/{n}", ["httpd", "-p", str(PORT), "-h", WWW], check=True)
            restart_exec = time.monotonic() - restarted
            log("failover: their httpd started again")
            out, err = proc.communicate(timeout=params.load_seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()  # ours, by its PID
                proc.wait()
        switched = watch.all_in(remote_ips, stopped)
        back = watch.all_in(local_ips, restarted)
        timeline = [(round(t - began, 4), n, s) for t, n, s in watch.changes]
    if proc.returncode != 0:
        raise BenchError(f"http-load failed: {err.decode(errors='replace').strip()[-2000:]}")
    requests = parse_requests(json.loads(out))
    figures = failover_figures(requests, stopped, set(local), set(remote))
    return {
        "detection_s": round(params.detection_s, 3),
        "health": {
            "interval_s": params.health_interval,
            "failure_threshold": params.health_failures,
        },
        "load": {
            "rate_per_s": params.load_rate,
            "seconds": params.load_seconds,
            "stop_at_s": params.stop_at,
            "restart_at_s": params.restart_at,
        },
        **figures,
        "maps_switched_s": round(switched - stopped, 3) if switched else None,
        "returned": {
            **return_figures(requests, restarted, set(local)),
            "maps_back_s": round(back - restarted, 3) if back else None,
            "restart_exec_s": round(restart_exec, 3),
        },
        "timeline": {
            "began": began,
            "stopped_s": round(stopped - began, 4),
            "restarted_s": round(restarted - began, 4),
            "requests": [
                [
                    round(r.start - began, 4),
                    0 if r.backend is None else (1 if r.backend in local else 2),
                ]
                for r in requests
                # The minute's other requests all went one way: kept out of the file.
                if any(-1 <= r.start - t <= 3 for t in (stopped, restarted))
            ],
            "map_changes": timeline,
        },
    }


def remove_reference() -> None:
    """The kernel reference's namespaces (a crashed run's, too)."""
    for name in netns_names(REF_PREFIX):
        netns_delete(name)


def throughput(params: Params, ctrs: dict[str, Container]) -> dict[str, Any]:
    """Cross-cluster pod-to-pod TCP (iperf3) against kernel VXLAN, by bench/_throughput.py
    (which bench/pods.py uses too): c1/n1's client pod to c2/n1's pod, the reference
    under ``gliabm-ref-*``, interleaved rounds."""
    import _throughput  # imported here: the rest of the run stands if it cannot be

    client, server = ctrs[CONTAINER + "client"], ctrs[CONTAINER + "web2a"]
    assert client.netns_path and server.netns_path and server.ip
    out: dict[str, Any] = _throughput.compare_with_kernel_vxlan(
        client.netns_path,
        server.netns_path,
        server.ip,
        ref_prefix=REF_PREFIX,
        mtu=_throughput.MTU,
        reps=params.iperf_reps,
        seconds=params.iperf_seconds,
        progress=log,
    )
    out["paths"] = {
        "glia": "pod gliabm-client on c1/n1 -> pod gliabm-web2a on c2/n1 (across clusters)",
        "kernel_vxlan": "reference pod p1 on n1 -> p3 on n2 through a kernel VXLAN device",
    }
    return out


def two_cluster_lab(params: Params) -> dict[str, Any]:
    lab = Lab.open(LAB, _lab_dir(LAB), clusters=2, nodes=2, reporter=Reporter())
    try:
        lab.up(recreate=True)
        log("containers: two web backends per cluster, a client on c1/n1")
        ctrs = start_backends(lab)
        apply(
            lab,
            "c1/n1",
            service_manifest(
                WEB,
                vip(1, 10),
                selector=APP_WEB,
                affinity="local",
                interval=params.health_interval,
                failures=params.health_failures,
            ),
        )
        apply(
            lab,
            "c2/n1",
            service_manifest(
                WEB,
                vip(2, 10),
                selector=APP_WEB,
                affinity="local",
                interval=params.health_interval,
                failures=params.health_failures,
            ),
        )
        apply(lab, "c1/n1", service_manifest(PROP, vip(1, 11), selector=APP_NONE))
        local_ips = {ctrs[CONTAINER + s].ip or "" for s in ("web1a", "web1b")}
        maps = {n: FrontendReader(lab.node(n).bpf_pin_dir, vip(1, 10)) for n in ("c1/n1", "c1/n2")}
        try:
            wait_for(
                "c1's maps to hold the web Service's local backends",
                lambda: all(m.slotted() == local_ips for m in maps.values()),
                60,
                every=0.1,
            )
        finally:
            for m in maps.values():
                m.close()
        remote_ips = {ctrs[CONTAINER + s].ip or "" for s in ("web2a", "web2b")}
        for n in ("c1/n1", "c1/n2"):

            def standby(node: str = n) -> bool:
                return _remote_backends(lab, node, vip(1, 10), remote_ips) == 2

            wait_for(f"{n} to hold c2's web backends (standby)", standby, 60)
        log(f"propagation at 2 clusters: {params.prop_changes} readiness changes in c2")
        observers = [("c1/n1", vip(1, 11)), ("c1/n2", vip(1, 11))]
        prop = propagation(lab, params, observers, params.prop_changes, "c1/n1")
        got = prop["every_observer_ms"]
        log(f"  p50 {got['p50']} ms, p99 {got['p99']} ms")
        log(f"failover under load: {params.load_rate}/s for {params.load_seconds:g} s")
        fo = failover(lab, params, ctrs)
        log(f"  {fo['failed']} of {fo['requests']} failed; recovered after {fo['recovered_s']} s")
        log("cross-cluster throughput against kernel VXLAN (bench/_throughput.py)")
        try:
            tput = throughput(params, ctrs)
        except (ImportError, AttributeError, TypeError) as e:
            # bench/_throughput.py no longer offers what this was written against; the
            # other figures of the run still count.
            tput = {"error": f"bench/_throughput.py could not be used: {e!r}"}
            log(f"throughput: {tput['error']}")
        except BenchError as e:
            tput = {"error": str(e)}
            log(f"throughput failed (the other figures stand): {e}")
        finally:
            remove_reference()
        return {"propagation": prop, "failover": fo, "throughput_gbps": tput}
    finally:
        _down(lab)


def _remote_backends(lab: Lab, node: str, vip_: str, ips: set[str]) -> int:
    """How many of ``ips`` (c2's backends) the node's plan for ``vip_`` holds (standby)."""
    try:
        rows = lab.agent(node).bpf_lb()
    except AgentClientError:
        return 0
    for row in rows:
        if row.get("vip") == vip_ and row.get("port") == PORT:
            return sum(1 for b in row.get("backends", []) if b.get("ip") in ips)
    return 0


# --- lab gliabmx: scaling and the 100,000-endpoint import --------------------------------------


def set_mesh(lab: Lab, members: Sequence[str], only: Sequence[str] | None = None) -> None:
    """Every member node reads every other member; the others read nobody.

    ``only``: rewrite just these nodes' directories."""
    ro = {c.name: (c, lab.etcd_config(c.name, rbac.RO_USER)) for c in lab.topo.clusters}
    for n in lab.topo.nodes:
        if only is not None and n.ref not in only:
            continue
        remotes = [ro[m] for m in members] if n.cluster in members else []
        files = configs.clustermesh_files(n, remotes)
        configs.write_clustermesh_dir(n.clustermesh_dir, files)
        for old in n.clustermesh_dir.glob("*.yaml"):
            if old.name not in files:
                old.unlink()


def mesh_ready(lab: Lab, members: Sequence[str]) -> Callable[[], bool]:
    """Every member agent has synced every other member, and only them; the rest nobody."""

    def probe() -> bool:
        for n in lab.topo.nodes:
            want = {m for m in members if m != n.cluster} if n.cluster in members else set()
            got = mesh_status(lab, n.ref)
            if set(got) != want or any(got[c]["state"] != "synced" for c in want):
                return False
        return True

    return probe


def restart_agents(lab: Lab) -> None:
    nodes = [n.ref for n in lab.topo.nodes]
    for n in nodes:
        lab.stop_agent(n)
    for n in nodes:
        lab.start_agent(n, wait=False)
    lab.wait_agents(nodes, timeout=240)


def reconnect(lab: Lab, node: str, remotes: int) -> dict[str, Any]:
    """Remove the node's remote cluster files, wait until all is withdrawn, put them back:
    how long until every remote cluster is synced again."""
    d = lab.node(node).clustermesh_dir
    saved = {p.name: p.read_text() for p in d.glob("*.yaml")}
    for name in saved:
        (d / name).unlink()
    wait_for(f"{node} to drop its remote clusters", lambda: not mesh_status(lab, node), 60)
    t0 = time.monotonic()
    for name, text in saved.items():
        tmp = d / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(d / name)

    def synced() -> dict[str, dict[str, Any]] | None:
        got = mesh_status(lab, node)
        ok = len(got) == remotes and all(c["state"] == "synced" for c in got.values())
        return got if ok else None

    got = wait_for(f"{node} to sync {remotes} remote clusters again", synced, 120, every=0.02)
    wall = time.monotonic() - t0
    agent = [c["last_sync_seconds"] for c in got.values() if c["last_sync_seconds"] is not None]
    return {
        "remotes": remotes,
        "wall_s": round(wall, 3),
        "agent_last_sync_max_s": max(agent) if agent else None,
        "agent_last_sync_median_s": round(median(agent), 3) if agent else None,
    }


def memory(lab: Lab, members: Sequence[str]) -> dict[str, Any]:
    per = {}
    for n in lab.topo.nodes:
        if n.cluster in members:
            kib = rss_kib(daemon_pid(lab, n.agent_process))
            if kib is not None:
                per[n.ref] = round(kib / 1024, 1)
    values = list(per.values())
    etcd = rss_kib(daemon_pid(lab, lab.topo.cluster("c2").etcd_process))
    return {
        "agents_rss_mib": per,
        "max_mib": max(values),
        "mean_mib": round(sum(values) / len(values), 1),
        "c2_etcd_rss_mib": round(etcd / 1024, 1) if etcd else None,
    }


def scaling(lab: Lab, params: Params) -> dict[str, Any]:
    names = [c.name for c in lab.topo.clusters]
    out: dict[str, Any] = {}
    first = names[: params.scale_clusters[0]]
    log(f"mesh of {len(first)}: the other agents read nobody; every agent restarted")
    set_mesh(lab, first)
    restart_agents(lab)
    applied: set[str] = set()
    for k in params.scale_clusters:
        members = names[:k]
        log(f"mesh of {k} clusters")
        set_mesh(lab, members)
        for c in members:
            if c != "c2" and c not in applied:
                cid = lab.topo.cluster(c).id
                apply(lab, f"{c}/n1", service_manifest(PROP, vip(cid, 11), selector=APP_NONE))
                applied.add(c)
        wait_for(f"the mesh of {k} to sync", mesh_ready(lab, members), 120 + 10 * k, every=0.2)
        observers = [(f"{c}/n1", vip(lab.topo.cluster(c).id, 11)) for c in members if c != "c2"]
        prop = propagation(lab, params, observers, params.scale_changes, "c1/n1")
        log(
            f"  propagation to {len(observers)} nodes: p50 {prop['every_observer_ms']['p50']} ms, "
            f"p99 {prop['every_observer_ms']['p99']} ms"
        )
        rec = reconnect(lab, "c1/n1", k - 1)
        log(f"  c1/n1 synced {k - 1} remote clusters {rec['wall_s']} s after its files came back")
        mem = memory(lab, members)
        log(f"  agents' RSS: max {mem['max_mib']} MiB")
        out[str(k)] = {"propagation": prop, "reconnect": rec, "memory": mem}
    return out


def import_endpoints(lab: Lab, params: Params) -> dict[str, Any]:
    """c1/n1 imports ``import_endpoints`` synthetic endpoints of c2 and c3."""
    remotes = ["c2", "c3"]
    per = params.import_endpoints // len(remotes)
    nodes = -(-per // params.import_pods_per_node)
    pods_per_node = per // nodes
    log(f"import: c1/n1 alone reads c2 and c3, each with {per} synthetic endpoints")
    set_mesh(lab, ["c1"])
    wait_for("every agent to drop its remote clusters", mesh_ready(lab, ["c1"]), 120, every=0.2)
    for c in remotes:  # their own agents would import it all too, on the same two CPUs
        lab.stop_agent(f"{c}/n1")
    written = {}
    for c in remotes:
        cid = lab.topo.cluster(c).id
        spec = {
            "etcd": etcd_spec(lab, c),
            "max_ops": 5000,
            "max_bytes": 4 << 20,
            "clusters": [
                {
                    "cluster": c,
                    "cluster_id": cid,
                    "pool": str(topology.pod_pool(cid)),
                    "prefixlen": 24,
                    "nodes": nodes,
                    "pods_per_node": pods_per_node,
                    "identities": params.import_identities,
                    "node_ip_base": f"198.19.{cid}.1",
                }
            ],
        }
        written[c] = tool(lab.node("c1/n1").netns, "write", spec, 600)["clusters"][c]
        log(f"  wrote {written[c]['records']} records into {c}'s etcd in {written[c]['seconds']} s")
    pid = daemon_pid(lab, lab.node("c1/n1").agent_process)
    rss_before = rss_kib(pid)
    cpu_before = cpu_seconds(pid)
    # A sample of every remote's entries, spread over all its nodes: the agent writes
    # a first list in one batch, in no particular order, so the last of the sample to
    # appear marks the end of that batch within a chunk of the map writes.
    sample = []
    for c in remotes:
        for block in written[c]["spec"]["blocks"][:nodes]:
            sample += pod_ips(block, pods_per_node)[:: max(1, pods_per_node // 5)]
    watcher = subprocess.Popen(
        nsenter(netns_path(lab.node("c1/n1").netns), [sys.executable, str(TOOL), "ipcache-wait"]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ipspec = {
            "pin_dir": str(lab.node("c1/n1").bpf_pin_dir),
            "ips": sample,
            "timeout": params.import_timeout,
            "every": 0.005,
            "count": True,
        }
        assert watcher.stdin is not None
        watcher.stdin.write(json.dumps(ipspec).encode())
        watcher.stdin.close()
        watcher.stdin = None  # communicate() must not flush it
        time.sleep(0.2)  # the watcher has opened the map
        t0 = time.monotonic()
        set_mesh(lab, ["c1", *remotes], only=["c1/n1"])

        def synced() -> dict[str, dict[str, Any]] | None:
            got = mesh_status(lab, "c1/n1")
            ok = set(got) == set(remotes) and all(
                got[c]["state"] == "synced" and got[c]["endpoints"] >= per for c in remotes
            )
            return got if ok else None

        got = wait_for(
            "c1/n1 to import the synthetic endpoints", synced, params.import_timeout, every=0.1
        )
        t_synced = time.monotonic()
        out, err = watcher.communicate(timeout=params.import_timeout + 30)
    finally:
        if watcher.poll() is None:
            watcher.kill()  # ours, by its PID
            watcher.wait()
    if watcher.returncode != 0:
        raise BenchError(f"ipcache-wait failed: {err.decode(errors='replace').strip()}")
    seen = json.loads(out)
    if len(seen["seen"]) != len(sample):
        missing = sorted(set(sample) - set(seen["seen"]))
        raise BenchError(
            f"c1/n1's ipcache never held {len(missing)} of {len(sample)} sampled "
            f"endpoints, e.g. {missing[:5]}"
        )
    rss_after = rss_kib(pid)
    cpu_after = cpu_seconds(pid)
    return {
        "endpoints": per * len(remotes),
        "remote_clusters": {
            c: {
                "endpoints": per,
                "nodes": nodes,
                "identities": params.import_identities,
                "records": written[c]["records"],
                "write_s": written[c]["seconds"],
            }
            for c in remotes
        },
        "synced_s": round(t_synced - t0, 3),
        "maps_programmed_s": round(max(seen["seen"].values()) - t0, 3),
        "agent_last_sync_s": {c: got[c]["last_sync_seconds"] for c in remotes},
        "ipcache_entries_after": seen["entries"],
        # The agent's own CPU time over the import: what the wall times would be on a
        # machine with a CPU free for it (a loaded 2-vCPU machine stretches them).
        "agent_cpu_s": (
            round(cpu_after - cpu_before, 2)
            if cpu_after is not None and cpu_before is not None
            else None
        ),
        "agent_rss_mib": {
            "before": round((rss_before or 0) / 1024, 1),
            "after": round((rss_after or 0) / 1024, 1),
        },
        "note": "t0 is the moment c1/n1's remote cluster files were written; the agent "
        "polls its directory every second, so up to 1 s of each figure is that poll",
    }


def scaling_lab(params: Params) -> dict[str, Any]:
    clusters = max(params.scale_clusters)
    lab = Lab.open(LAB_SCALE, _lab_dir(LAB_SCALE), clusters=clusters, nodes=1, reporter=Reporter())
    try:
        lab.up(recreate=True, timeout=300)
        scale = scaling(lab, params)
        imported = import_endpoints(lab, params)
        return {"scaling": scale, "import": imported}
    finally:
        _down(lab)


# --- the run -------------------------------------------------------------------------------


def _lab_dir(name: str) -> Path:
    return topology.DEFAULT_LAB_DIR.with_name(f"lab-{name}")


def _down(lab: Lab) -> None:
    # A second Ctrl-C must not leave half a lab behind: teardown runs to its end.
    with _signals_ignored():
        log(f"tearing down lab {lab.name}")
        report = lab.down()
        for problem in report.problems:
            log(f"teardown: {problem}")


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    old = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


def check_host() -> None:
    import shutil

    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark builds labs, namespaces and containers")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter runs; up to 4 clusters"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results folder ({RESULTS})")
    parser.add_argument(
        "--only", choices=("two", "scale"), help="one of the two labs (for development)"
    )
    parser.add_argument(
        "--import-endpoints", type=int, help="endpoints of the import run (for development)"
    )
    args = parser.parse_args(argv)
    params = Params.quick() if args.quick else Params()
    if args.import_endpoints:
        params = replace(params, import_endpoints=args.import_endpoints)
    interrupt_on_sigterm()
    started = time.monotonic()
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    figures: dict[str, Any] = {}
    host: dict[str, Any] = {}
    try:
        check_host()
        host = host_info()
        remove_reference()  # leftovers of a crashed run
        if args.only != "scale":
            figures.update(two_cluster_lab(params))
        if args.only != "two":
            figures.update(scaling_lab(params))
    except (BenchError, LabError) as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        with _signals_ignored():
            remove_reference()
    doc: dict[str, Any] = {
        "benchmark": "mesh",
        "schema": 1,
        "date": date,
        "quick": args.quick,
        "duration_s": round(time.monotonic() - started, 1),
        "host": {**host, "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "params": asdict(params),
        "method": {
            "propagation_start": "bench/_meshtool.py puts c2's ClusterService record of the "
            "global Service 'prop' into c2's etcd (as c2's operator would, with the admin "
            "user); t0 is taken just before the put",
            "propagation_end": "the Service's lb4 entry (its ClusterIP in that cluster) on a "
            "node holds the new number of ready backends, read from the pinned map every 1 ms",
        },
        **figures,
    }
    doc["targets"] = targets(doc)
    text = write_json(args.out / "mesh.json", doc)
    if not args.only:
        plot(doc, args.out / "mesh.png")
    sys.stdout.write(text)
    log(f"done in {doc['duration_s']:.0f} s: {args.out / 'mesh.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
