"""Global Services across two clusters, with real traffic (issue 8, "How it is shown").

Uses the session's mesh lab (conftest ``mesh``: 2 clusters x 2 nodes). One
busybox backend per node of both clusters (``app=gsvc``, its httpd answers the
container's name and can stop while the container runs), a client container in
each cluster (on ``c1/n1`` and ``c2/n1``). Every test applies the same Service
(namespace/name) in both clusters with ``glia apply -f - --node c1/n1`` and
``--node c2/n1`` and deletes it at the end. Cluster 1's record is marked
global with ``service.cilium.io/global``, cluster 2's with the 1.4 spelling
``io.cilium/global-service`` (so both spellings are honoured end to end).

Shown here, from cluster 1's client to cluster 1's ClusterIP unless said:

- affinity none: 200 requests reach the backends of both clusters (socket LB),
  and so do requests through the per-packet LB (a process in the client's
  network namespace but outside the node's cgroup: no socket LB, conntrack
  entries name the remote backends); from cluster 2 the same;
- ``service.cilium.io/affinity: local``: only cluster 1's backends, both LBs;
- ``service.glia.io/affinity-min-ready: 3`` with 2 ready local backends: the
  remote ones share the load; once a third local backend is ready, only local;
- ``service.cilium.io/shared: "false"`` on cluster 1's record: cluster 2's maps
  (read raw from the pins too) lose cluster 1's backends and cluster 2's client
  reaches only its own, while cluster 1 still uses cluster 2's;
- failover under steady load, affinity local, both LBs at once: every cluster-1
  server stops; requests are served by cluster 2 within the health checks'
  detection time + 1 s and fewer than 1% fail; the servers start again and
  the traffic returns to cluster 1;
- ``glia service list -o json`` and ``glia bpf lb list -o json`` show each
  backend's cluster and preferred / stale / standby as the merge decided;
- cluster 1's servers stopped (only cluster 2's backends serve), c1/n1's agent
  restarts under load: no request fails (the new agent's first map writes hold
  the remote clusters' state; it waits for their first lists).

Counted as every connection attempt, fewer than 1% fail (the node of a
stopped server probes it as soon as the datapath sees it refuse a
connection). A request of the load clients is what an HTTP client with
connect retries makes of it: a refused connection attempt (nothing was sent, so it is safe to
retry) is retried every 10 ms for up to detection time + 1 s; the request fails
on any other error or when that time runs out (a request in flight when its
server stops is reset: one of those is within the 1%). The last refused
attempt's time is recorded too: none may start later than detection time + 1 s
after the stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import (
    FAILED,
    backend_command,
    container_pid,
    http_names,
    lb_frontend,
    lb_maps,
    metric_delta,
    metrics,
    netns_python,
    netns_python_argv,
    slotted,
    wait_for,
)
from labhelpers import (
    glia_ok as glia,
)

from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model import service as m

pytestmark = [pytest.mark.e2e, pytest.mark.root]

APP = {"app": "gsvc"}
C1_NODES = ("c1/n1", "c1/n2")
C2_NODES = ("c2/n1", "c2/n2")
INTERVAL, FAILURES = 0.5, 2  # health checks of every Service here
DETECTION = INTERVAL * FAILURES  # a stopped server is noticed within this
FAILOVER_LIMIT = DETECTION + 1.0  # the bound: detection time + 1 s
SYNC_TIMEOUT = 60.0  # the first global Service: remote clusters connect and sync
WAIT = 20.0  # the maps follow a change (health, apply, a new backend)


@dataclass
class World:
    """The module's containers: backends by node ("c1/n1": ...), a client per cluster."""

    backends: dict[str, Container]
    clients: dict[str, Container]  # by cluster
    extra: list[Container] = field(default_factory=list)  # made by one test, removed by it

    def of(self, cluster: str) -> list[Container]:
        return [b for node, b in self.backends.items() if node.startswith(cluster + "/")]

    def names(self, *clusters: str) -> set[str]:
        return {b.name for c in clusters for b in self.of(c)}

    def ips(self, *clusters: str) -> set[str]:
        return {_ip(b) for c in clusters for b in self.of(c)}


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


@pytest.fixture(scope="module")
def world(mesh: Lab) -> Iterator[World]:
    started: list[Container] = []
    specs = [(n.ref, f"glia-gsvc-{n.key}", True) for n in mesh.topo.nodes]
    specs += [("c1/n1", "glia-gsvc-cli1", False), ("c2/n1", "glia-gsvc-cli2", False)]

    def start(node: str, name: str, backend: bool) -> Container:
        if backend:
            return mesh.run_container(node, name, labels=APP, command=backend_command(name))
        return mesh.run_container(node, name, labels={"app": "gsvc-client"})

    try:
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            futures = [pool.submit(start, *spec) for spec in specs]
        errors = [e for f in futures if (e := f.exception()) is not None]
        started += [f.result() for f in futures if f.exception() is None]
        if errors:
            raise errors[0]  # the others are removed below
        backends = {c.node: c for c in started if not c.name.startswith("glia-gsvc-cli")}
        clients = {c.node.split("/")[0]: c for c in started if c.name.startswith("glia-gsvc-cli")}
        yield World(backends, clients)
    finally:
        for ctr in started:
            mesh.remove_container(ctr.node, ctr.name)


# -- the Service in both clusters ----------------------------------------------------


def manifest(
    name: str, global_key: str, global_: str = "true", **annotations: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "annotations": {
                global_key: global_,
                m.ANN_HEALTH_INTERVAL: str(INTERVAL),
                m.ANN_HEALTH_FAILURES: str(FAILURES),
                **annotations,
            },
        },
        "spec": {"selector": APP, "ports": [{"name": "http", "port": 80}]},
    }


class GlobalService:
    """One Service name applied in both clusters; :meth:`delete` removes it from both."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.vips: dict[str, str] = {}  # ClusterIP by cluster

    def apply(self, cluster: str, global_: str = "true", **annotations: str) -> str:
        """Apply (again) in ``cluster``; its ClusterIP. c1 says global the Cilium 1.5+ way,
        c2 the 1.4 way."""
        key = m.ANN_GLOBAL if cluster == "c1" else m.ANN_GLOBAL_14
        text = yaml.safe_dump(manifest(self.name, key, global_, **annotations))
        glia(self.lab, "apply", "-f", "-", "--node", f"{cluster}/n1", stdin=text)
        spec = self.lab.agent(f"{cluster}/n1").config_services(name=self.name)[0]["spec"]
        self.vips[cluster] = str(spec["clusterIP"])
        return self.vips[cluster]

    def delete(self) -> None:
        for cluster in self.vips:
            text = yaml.safe_dump(manifest(self.name, m.ANN_GLOBAL))
            glia(self.lab, "delete", "-f", "-", "--node", f"{cluster}/n1", stdin=text)
        for cluster, vip in self.vips.items():
            for node in C1_NODES if cluster == "c1" else C2_NODES:
                wait_for(
                    f"{vip} to leave {node}'s maps",
                    lambda n=node, v=vip: lb_frontend(self.lab, n, v, 80) is None,
                )


@pytest.fixture
def gsvc(mesh: Lab, world: World, request: pytest.FixtureRequest) -> Iterator[GlobalService]:
    words = request.node.name.removeprefix("test_").split("_")[:3]
    svc = GlobalService(mesh, "gs-" + "-".join(words))
    try:
        yield svc
    finally:
        svc.delete()
        for ctr in world.extra:
            mesh.remove_container(ctr.node, ctr.name)
        world.extra.clear()


def wait_slots(
    lab: Lab,
    nodes: tuple[str, ...],
    vip: str,
    ips: set[str],
    standby: set[str] | None = None,
    timeout: float = WAIT,
) -> None:
    """Until every node of ``nodes`` gives exactly ``ips`` slots of ``vip:80``, in sync,
    and (if given) holds exactly ``standby`` as standby backends: a remote record is
    there, held back by the affinity, not merely not imported yet."""

    def probe() -> bool:
        for node in nodes:
            row = lb_frontend(lab, node, vip, 80)
            if row is None or not row["in_sync"] or slotted(row) != ips:
                return False
            held = {b["ip"] for b in row["backends"] if "standby" in b["flags"]}
            if standby is not None and held != standby:
                return False
        return True

    also = f" and standby {sorted(standby)}" if standby is not None else ""
    wait_for(f"{vip}:80 to have slots for {sorted(ips)}{also} on {nodes}", probe, timeout)


# -- what the CLI shows ------------------------------------------------------------


def listed_backends(
    lab: Lab, node: str, name: str
) -> dict[str, tuple[str, bool, bool, bool, bool]]:
    """``glia service list -o json``: (cluster, ready, preferred, stale, standby) by IP."""
    services = json.loads(glia(lab, "service", "list", "-o", "json", "--node", node))
    (svc,) = [s for s in services if s["name"] == name]
    return {
        b["ip"]: (b["cluster"], b["ready"], b["preferred"], b["stale"], b["standby"])
        for b in svc["backends"]
    }


def lb_backends(lab: Lab, node: str, vip: str) -> dict[str, tuple[str, str, list[str]]]:
    """``glia bpf lb list -o json``: (cluster, state, flags) by IP for ``vip:80``."""
    rows = json.loads(glia(lab, "bpf", "lb", "list", "-o", "json", "--node", node))
    (row,) = [r for r in rows if r["vip"] == vip and r["port"] == 80]
    return {b["ip"]: (b["cluster"], b["state"], sorted(b["flags"])) for b in row["backends"]}


def check_cli(
    lab: Lab,
    world: World,
    node: str,
    svc: GlobalService,
    *,
    active: set[str],
    preferred: Collection[str] = (),
    absent: Collection[str] = (),
    down: Collection[str] = (),
) -> None:
    """Both commands agree with the merge: every backend (but ``absent`` clusters') with its
    cluster; ``active`` clusters' get new connections, the others' stand by unless their
    servers are ``down`` (not ready: neither active nor standby)."""
    cluster = node.split("/")[0]
    want = {}
    for c in ("c1", "c2"):
        if c in absent:
            continue
        for ip in world.ips(c):
            standby = c not in active and c not in down
            want[ip] = (c, c in active, c in preferred, False, standby)
    assert listed_backends(lab, node, svc.name) == want
    lb_want = {
        ip: (c, "ready" if ready else "not-ready", ["preferred"] * pref + ["standby"] * stand)
        for ip, (c, ready, pref, _, stand) in want.items()
    }
    assert lb_backends(lab, node, svc.vips[cluster]) == lb_want


# -- traffic -------------------------------------------------------------------------


# The per-packet LB's clients bind each connection to a source port of their own,
# below the kernel's ephemeral range and never used twice in this module. The client
# container's kernel sees a connection to the VIP where the backend sees one from
# the pod: if a port met the same backend again through another address (another
# VIP, or the socket LB's direct connect()), the backend's TIME_WAIT of the first
# connection would answer the new SYN with a challenge ACK (its sequence numbers are
# unrelated) and the connect would hang. Every DNAT has that limit; tests avoid it.
class SourcePorts:
    """Blocks of source ports for per-packet clients, handed out once per module."""

    def __init__(self, first: int = 10000, last: int = 32000) -> None:
        self.next, self.last = first, last

    def take(self, count: int) -> tuple[int, int]:
        start, self.next = self.next, self.next + count
        assert self.next <= self.last, "out of per-packet source ports"
        return start, self.next


PORTS = SourcePorts()

# Per request a new connection from the next port of argv[3]..argv[4], from the
# caller's cgroup (so, run from the test, the per-packet LB: the socket LB is
# attached to the node's cgroup only).
HTTP_GETS = """
import socket, sys
ip, count, port, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for _ in range(count):
    assert port < last, "out of source ports"
    s = socket.socket()
    s.settimeout(3)
    s.bind(("0.0.0.0", port))
    port += 1
    try:
        s.connect((ip, 80))
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
        print(raw.partition(b"\\r\\n\\r\\n")[2].decode().strip() or "!empty")
    except OSError as e:
        print("!" + type(e).__name__)
    finally:
        s.close()
"""


def per_packet_names(lab: Lab, client: Container, vip: str, count: int) -> Counter[str]:
    """``count`` GETs through the per-packet LB; answers by backend name.

    The conntrack of the client's node must then hold these connections
    (the socket LB makes none): proof that this path balanced them."""
    first, last = PORTS.take(count)
    out = netns_python(
        client, HTTP_GETS, vip, str(count), str(first), str(last), timeout=count * 3 + 30
    )
    return Counter(line.strip() for line in out.splitlines())


def ct_backends(lab: Lab, client: Container, vip: str) -> set[str]:
    """Backend IPs of the per-packet LB's conntrack entries of ``client`` to ``vip:80``."""
    entries = json.loads(glia(lab, "bpf", "ct", "list", "-o", "json", "--node", client.node))
    return {
        e["nat"].split(":")[0]
        for e in entries
        if e["kind"] == "service"
        and e["dst"] == f"{vip}:80"
        and e["src"].split(":")[0] == client.ip
    }


def test_affinity_none_spreads_over_both_clusters(
    mesh: Lab, world: World, gsvc: GlobalService
) -> None:
    vip = gsvc.apply("c1")
    vip2 = gsvc.apply("c2")
    every = world.ips("c1", "c2")
    wait_slots(mesh, C1_NODES, vip, every, timeout=SYNC_TIMEOUT)
    wait_slots(mesh, C2_NODES, vip2, every, timeout=SYNC_TIMEOUT)
    client = world.clients["c1"]

    before = metrics(mesh, client.node)
    counts = http_names(mesh, client, vip, 200)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1", "c2"), counts
    xlated = metric_delta(before, metrics(mesh, client.node), "SOCK_XLATE", "egress")
    assert xlated >= 200, xlated  # each one balanced at connect(), remote ones too

    packets = per_packet_names(mesh, client, vip, 100)
    assert set(packets) == world.names("c1", "c2"), packets
    assert world.ips("c2") <= ct_backends(mesh, client, vip)

    counts = http_names(mesh, world.clients["c2"], vip2, 100)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1", "c2"), counts

    check_cli(mesh, world, "c1/n1", gsvc, active={"c1", "c2"})
    check_cli(mesh, world, "c2/n2", gsvc, active={"c1", "c2"})

    # What made cluster 2's record global was the 1.4 annotation: set to "false", its
    # backends leave cluster 1's maps, and cluster 2 (not global now) uses its own only.
    gsvc.apply("c2", global_="false")
    wait_slots(mesh, C1_NODES, vip, world.ips("c1"), set())
    wait_slots(mesh, C2_NODES, vip2, world.ips("c2"))
    counts = http_names(mesh, client, vip, 50)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1"), counts


def test_affinity_local_uses_only_cluster_1_while_ready(
    mesh: Lab, world: World, gsvc: GlobalService
) -> None:
    vip = gsvc.apply("c1", **{m.ANN_AFFINITY: "local"})
    vip2 = gsvc.apply("c2")
    wait_slots(mesh, C1_NODES, vip, world.ips("c1"), world.ips("c2"), timeout=SYNC_TIMEOUT)
    # Cluster 2's record says nothing of affinity: there, both clusters serve.
    wait_slots(mesh, C2_NODES, vip2, world.ips("c1", "c2"), timeout=SYNC_TIMEOUT)
    client = world.clients["c1"]

    counts = http_names(mesh, client, vip, 200)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1"), counts
    packets = per_packet_names(mesh, client, vip, 100)
    assert set(packets) == world.names("c1"), packets

    check_cli(mesh, world, "c1/n2", gsvc, active={"c1"}, preferred={"c1"})
    check_cli(mesh, world, "c2/n1", gsvc, active={"c1", "c2"})


def test_affinity_min_ready_shares_until_enough_local_are_ready(
    mesh: Lab, world: World, gsvc: GlobalService
) -> None:
    ann = {m.ANN_AFFINITY: "local", m.ANN_AFFINITY_MIN_READY: "3"}
    vip = gsvc.apply("c1", **ann)
    gsvc.apply("c2")
    # 2 ready local backends, fewer than 3: cluster 2's share the load.
    wait_slots(mesh, C1_NODES, vip, world.ips("c1", "c2"), set(), timeout=SYNC_TIMEOUT)
    client = world.clients["c1"]
    counts = http_names(mesh, client, vip, 200)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1", "c2"), counts
    check_cli(mesh, world, "c1/n1", gsvc, active={"c1", "c2"}, preferred={"c1"})

    # A third local backend: once it is ready, only cluster 1's take new connections.
    name = "glia-gsvc-c1n2b"
    third = mesh.run_container("c1/n2", name, labels=APP, command=backend_command(name))
    world.extra.append(third)
    wait_slots(mesh, C1_NODES, vip, world.ips("c1") | {_ip(third)}, world.ips("c2"))
    counts = http_names(mesh, client, vip, 200)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1") | {name}, counts
    shown = listed_backends(mesh, "c1/n1", gsvc.name)
    assert shown[_ip(third)] == ("c1", True, True, False, False), shown
    assert {shown[ip] for ip in world.ips("c2")} == {("c2", False, False, False, True)}, shown


def test_shared_false_keeps_cluster_1s_backends_from_cluster_2(
    mesh: Lab, world: World, gsvc: GlobalService
) -> None:
    vip = gsvc.apply("c1")
    vip2 = gsvc.apply("c2")
    every = world.ips("c1", "c2")
    # Shared first, so cluster 2 is seen to hold cluster 1's backends, then to drop them.
    wait_slots(mesh, C2_NODES, vip2, every, timeout=SYNC_TIMEOUT)
    gsvc.apply("c1", **{m.ANN_SHARED: "false"})
    wait_slots(mesh, C2_NODES, vip2, world.ips("c2"))
    wait_slots(mesh, C1_NODES, vip, every)

    c1_ips = world.ips("c1")
    for node in C2_NODES:
        row = lb_frontend(mesh, node, vip2, 80)
        assert {b["ip"] for b in row["backends"]} == world.ips("c2"), row  # not even standby
        contents, _ = lb_maps(mesh, node)
        held = {a.ip for a in contents.backends.values()}
        assert not held & c1_ips, (node, held)
        check_cli(mesh, world, node, gsvc, active={"c2"}, absent={"c1"})
    check_cli(mesh, world, "c1/n1", gsvc, active={"c1", "c2"})

    counts = http_names(mesh, world.clients["c2"], vip2, 200)
    assert counts[FAILED] == 0 and set(counts) == world.names("c2"), counts
    counts = http_names(mesh, world.clients["c1"], vip, 200)
    assert counts[FAILED] == 0 and set(counts) == world.names("c1", "c2"), counts


# -- failover under steady load ----------------------------------------------------

# Requests until killed, each a new connection: "start end refused last_refused answer".
# A refused attempt is retried (10 ms apart) for up to argv[2] seconds; any other error
# fails the request at once. argv[3]: a cgroup v2 directory to join first (socket LB),
# or "-"; argv[4], argv[5]: source ports to bind in turn ("-": the kernel's choice).
LOAD = """
import os, socket, sys, time
ip, budget, cgroup = sys.argv[1], float(sys.argv[2]), sys.argv[3]
port, port_end = (int(sys.argv[4]), int(sys.argv[5])) if sys.argv[4] != "-" else (0, 0)
if cgroup != "-":
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
def attempt():
    global port
    s = socket.socket()
    s.settimeout(1.0)
    if port:
        if port >= port_end:
            sys.exit("out of source ports")
        s.bind(("0.0.0.0", port))
        port += 1
    try:
        s.connect((ip, 80))
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
    except ConnectionRefusedError:
        return None
    except OSError as e:
        return "!" + type(e).__name__
    finally:
        s.close()
    head, _, body = raw.partition(b"\\r\\n\\r\\n")
    return body.decode().strip() if b" 200 " in head.split(b"\\r\\n")[0] else "!status"
while True:
    start, refused, last = time.monotonic(), 0, 0.0
    while True:
        t = time.monotonic()
        got = attempt()
        if got is not None:
            break
        refused, last = refused + 1, t
        if time.monotonic() - start >= budget:
            got = "!refused"
            break
        time.sleep(0.01)
    print(f"{start:.4f} {time.monotonic():.4f} {refused} {last:.4f} {got}", flush=True)
    time.sleep(0.005)
"""


LOAD_PORTS = 6000  # source ports of one per-packet load (requests and refused attempts)


@dataclass(frozen=True)
class Request:
    start: float
    end: float
    refused: int  # refused attempts before the answer
    last_refused: float  # when the last of them began (0: none)
    answer: str  # a backend's name, or "!<error>"

    @property
    def failed(self) -> bool:
        return self.answer.startswith("!")


class Load:
    """A load client in ``client``'s network namespace; socket LB if in the node's cgroup."""

    def __init__(
        self, lab: Lab, client: Container, vip: str, out: Path, *, socket_lb: bool
    ) -> None:
        cgroup = lab.agent_config(client.node).socket_lb_cgroup if socket_lb else "-"
        assert cgroup, f"{client.node} has no socket LB cgroup"
        self.what = "socket LB" if socket_lb else "per-packet LB"
        self.out = out
        ports = ("-", "-") if socket_lb else tuple(map(str, PORTS.take(LOAD_PORTS)))
        argv = netns_python_argv(client, LOAD, vip, str(FAILOVER_LIMIT), cgroup, *ports)
        with out.open("w") as f:  # a file: a pipe nobody reads meanwhile would fill up
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.PIPE, text=True)

    def stop(self) -> list[Request]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode in (-signal.SIGTERM, 0), f"{self.what}: {err.strip()}"
        lines = self.out.read_text().splitlines()
        rows = [row for line in lines if len(row := line.split(maxsplit=4)) == 5]
        return [Request(float(a), float(b), int(c), float(d), e) for a, b, c, d, e in rows]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def httpd_pids(lab: Lab, ctr: Container) -> list[int]:
    """Host PIDs of the listening httpd in ``ctr``'s PID namespace (not the children it
    forks for each connection, health checks' included: they come and go)."""
    ns = Path(f"/proc/{container_pid(lab, ctr)}/ns/pid").readlink()
    httpds: dict[int, int] = {}  # pid -> parent pid
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and (proc / "comm").read_text().strip() == "httpd"
                and (proc / "ns" / "pid").readlink() == ns
            ):
                stat = (proc / "stat").read_text()
                httpds[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # exited meanwhile
    return sorted(pid for pid, parent in httpds.items() if parent not in httpds)


def start_servers(lab: Lab, backends: list[Container]) -> None:
    """Start the stopped httpd of each of ``backends`` again (at once)."""

    def start(b: Container) -> None:
        lab.exec(f"{b.node}/{b.name}", ["httpd", "-p", "80", "-h", "/www"], check=True)

    with ThreadPoolExecutor(max_workers=len(backends) or 1) as pool:
        list(pool.map(start, backends))


def test_failover_under_steady_load_and_back(
    mesh: Lab, world: World, gsvc: GlobalService, tmp_path: Path
) -> None:
    vip = gsvc.apply("c1", **{m.ANN_AFFINITY: "local"})
    gsvc.apply("c2")
    local, remote = world.ips("c1"), world.ips("c2")
    wait_slots(mesh, C1_NODES, vip, local, remote, timeout=SYNC_TIMEOUT)
    client = world.clients["c1"]
    pids = {b.name: httpd_pids(mesh, b) for b in world.of("c1")}
    assert all(len(p) == 1 for p in pids.values()), pids

    loads = [
        Load(mesh, client, vip, tmp_path / "sock.out", socket_lb=True),
        Load(mesh, client, vip, tmp_path / "tc.out", socket_lb=False),
    ]
    servers_up = True
    try:
        time.sleep(1.5)  # steady load on cluster 1's backends first
        for p in pids.values():
            os.kill(p[0], signal.SIGTERM)  # what `killall httpd` in the container does
        stopped, servers_up = time.monotonic(), False
        wait_slots(mesh, C1_NODES, vip, remote, set())
        moved = time.monotonic() - stopped
        check_cli(mesh, world, "c1/n1", gsvc, active={"c2"}, preferred={"c1"}, down={"c1"})
        time.sleep(max(0.0, stopped + FAILOVER_LIMIT + 1.5 - time.monotonic()))
        ct = ct_backends(mesh, client, vip)  # the per-packet load's connections
        restarted = time.monotonic()  # from now on the first ones may answer again
        start_servers(mesh, world.of("c1"))
        servers_up = True
        wait_slots(mesh, C1_NODES, vip, local, remote)
        back = time.monotonic()
        time.sleep(1.5)  # steady load on cluster 1's backends again
        results = {load.what: load.stop() for load in loads}
    finally:
        for load in loads:
            load.kill()
        if not servers_up:  # the module's other tests need cluster 1's servers
            start_servers(mesh, [b for b in world.of("c1") if not httpd_pids(mesh, b)])
    print(f"maps moved {moved:.2f} s after the stop; back {back - restarted:.2f} s after restart")
    assert remote <= ct, ct

    names1, names2 = world.names("c1"), world.names("c2")
    for what, reqs in results.items():
        failed = [r for r in reqs if r.failed]
        refused = sum(r.refused for r in reqs)
        last_refused = max((r.last_refused for r in reqs if r.refused), default=stopped)
        first_c2 = min((r.end for r in reqs if r.answer in names2), default=float("inf"))
        print(
            f"{what}: {len(reqs)} requests, {len(failed)} failed, {refused} refused attempts, "
            f"the last {last_refused - stopped:.2f} s after the stop; "
            f"first answer from cluster 2 {first_c2 - stopped:.2f} s after it; failed: "
            + ", ".join(f"{r.answer} at {r.start - stopped:+.2f} s" for r in failed)
        )
        assert len(reqs) >= 200, (what, len(reqs))
        assert len(failed) < 0.01 * len(reqs), (what, Counter(r.answer for r in failed))
        # Also without the retries: with the datapath's refusal signal, fewer than 1% of
        # every connection attempt (answered, refused or failed) went unanswered.
        attempts = len(reqs) + refused
        assert refused + len(failed) < 0.01 * attempts, (what, refused, len(failed), attempts)
        before = [r for r in reqs if r.end < stopped]
        during = [r for r in reqs if stopped + FAILOVER_LIMIT <= r.start and r.end < restarted]
        after = [r for r in reqs if r.start > back]
        assert before and during and after, (what, len(before), len(during), len(after))
        assert {r.answer for r in before} == names1, (what, Counter(r.answer for r in before))
        # Served by cluster 2 within detection + 1 s: from then on, cluster 2 answers
        # every request at the first attempt (and every cluster-2 backend gets some).
        assert {r.answer for r in during} == names2, (what, Counter(r.answer for r in during))
        late = [(r.start - stopped, r.refused, r.answer) for r in during if r.refused]
        assert not late, (what, late)
        assert first_c2 - stopped <= FAILOVER_LIMIT, (what, first_c2 - stopped)
        assert last_refused - stopped <= FAILOVER_LIMIT, (what, last_refused - stopped)
        # Back: cluster 1's servers answer again, cluster 2's stand by.
        assert {r.answer for r in after} == names1, (what, Counter(r.answer for r in after))
    check_cli(mesh, world, "c1/n2", gsvc, active={"c1"}, preferred={"c1"})


def test_an_agent_restart_keeps_the_remote_backends(
    mesh: Lab, world: World, gsvc: GlobalService, tmp_path: Path
) -> None:
    # Cluster 1's servers stopped, so c1/n1 reaches the Service only through cluster
    # 2's backends (the case where losing them for a moment refuses everything);
    # its agent restarts under load. The maps outlive the agent, and the new one's
    # first writes hold cluster 2's state too: not one request may fail or be refused.
    vip = gsvc.apply("c1", **{m.ANN_AFFINITY: "local"})
    gsvc.apply("c2")
    local, remote = world.ips("c1"), world.ips("c2")
    wait_slots(mesh, C1_NODES, vip, local, remote, timeout=SYNC_TIMEOUT)
    client = world.clients["c1"]
    pids = [p for b in world.of("c1") for p in httpd_pids(mesh, b)]
    assert len(pids) == 2, pids
    for p in pids:
        os.kill(p, signal.SIGTERM)
    try:
        wait_slots(mesh, C1_NODES, vip, remote, set())
        loads = [
            Load(mesh, client, vip, tmp_path / "sock.out", socket_lb=True),
            Load(mesh, client, vip, tmp_path / "tc.out", socket_lb=False),
        ]
        try:
            time.sleep(1.0)
            restarted = time.monotonic()
            mesh.restart_agent(client.node)
            took = time.monotonic() - restarted
            time.sleep(1.0)
            results = {load.what: load.stop() for load in loads}
        finally:
            for load in loads:
                load.kill()
        wait_slots(mesh, C1_NODES, vip, remote, set())
    finally:
        start_servers(mesh, world.of("c1"))
    print(f"agent restart took {took:.1f} s")
    for what, reqs in results.items():
        during = [r for r in reqs if restarted <= r.start <= restarted + took]
        bad = [(r.start - restarted, r.refused, r.answer) for r in reqs if r.failed or r.refused]
        print(f"{what}: {len(reqs)} requests, {len(during)} during the restart, bad: {bad}")
        assert len(during) >= 20, (what, len(during))
        assert not bad, (what, bad)
        answers = Counter(r.answer for r in reqs)
        assert set(answers) == world.names("c2"), (what, answers)
