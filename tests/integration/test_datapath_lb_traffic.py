"""Services with real traffic: a VIP load-balanced in eBPF across two nodes.

Harness: an underlay namespace with a bridge; two node namespaces, each with
a loaded Datapath, glia_vxlan and a ServiceMapSync (the agent's reconciler,
driven directly); pods as namespaces plumbed with create_endpoint_veth. Three
backend pods (one on n1, two on n2) run a Python server that answers every
TCP line and UDP datagram with its name; the client pod is on n1, so replies
come back both by local delivery and through the tunnel, and both get their
reverse NAT on the client's node.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import netns_util as nu
import pytest

from glia.datapath import cgroup, netlink
from glia.datapath.ct import CTRow, ct_entries, ct_gc
from glia.datapath.drop import Direction, Reason
from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo
from glia.model import make_cluster_identity
from glia.model.service import Backend, ClusterService, Protocol, ServicePort
from glia.service.lbsync import ServiceMapSync

T = TypeVar("T")
CLUSTER_ID = 1
POD_MTU = 1450
VIP = "10.96.0.10"
TCP_PORT, UDP_PORT = 80, 53
TCP_TARGET, UDP_TARGET = 8080, 5353

_SERVER = """
import socket, sys, threading
name = sys.argv[1].encode()
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", int(sys.argv[2])))
tcp.listen(512)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", int(sys.argv[3])))

def serve(conn):
    with conn, conn.makefile("rb") as lines:
        for _ in lines:
            conn.sendall(name + b"\\n")

def tcp_loop():
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

def udp_loop():
    while True:
        _, peer = udp.recvfrom(2048)
        udp.sendto(name, peer)

threading.Thread(target=tcp_loop, daemon=True).start()
threading.Thread(target=udp_loop, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""

_CLIENT = """
import errno, json, socket, sys, time
mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 1
out = {}
if mode == "tcp":
    for _ in range(n):
        with socket.create_connection((vip, port), timeout=3) as c:
            c.sendall(b"hi\\n")
            name = c.makefile("rb").readline().decode().strip()
        out[name] = out.get(name, 0) + 1
elif mode == "tcp-peer":
    # What the application sees as its peer: the VIP, never the backend.
    with socket.create_connection((vip, port), timeout=3) as c:
        c.sendall(b"hi\\n")
        out["name"] = c.makefile("rb").readline().decode().strip()
        out["peer"] = list(c.getpeername())
elif mode == "udp-unconnected":
    # sendto() the VIP, recvfrom() names the VIP as the source of the answer.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for _ in range(n):
            s.sendto(b"hi", (vip, port))
            data, source = s.recvfrom(2048)
            key = data.decode() + "@" + source[0] + ":" + str(source[1])
            out[key] = out.get(key, 0) + 1
elif mode == "udp":
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.connect((vip, port))  # replies from any other source are discarded
            s.send(b"hi")
            name = s.recv(2048).decode()
        out[name] = out.get(name, 0) + 1
elif mode == "tcp-refused":
    start = time.monotonic()
    try:
        socket.create_connection((vip, port), timeout=5).close()
        out["error"] = "connected"
    except OSError as e:
        out["error"] = errno.errorcode.get(e.errno, str(e))
    out["seconds"] = time.monotonic() - start
elif mode == "udp-refused":
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect((vip, port))
        s.send(b"hi")
        try:
            s.recv(2048)
            out["error"] = "answered"
        except OSError as e:
            out["error"] = errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__
    out["seconds"] = time.monotonic() - start
elif mode == "hold":
    with socket.create_connection((vip, port), timeout=3) as c:
        lines = c.makefile("rb")
        print("connected", flush=True)
        for cmd in sys.stdin:
            c.sendall(b"again\\n")
            print(lines.readline().decode().strip(), flush=True)
print(json.dumps(out), flush=True)
"""


def lb_ct(dp: Datapath) -> list[CTRow]:
    """The service conntrack entries (not the policy ones every connection has)."""
    return [r for r in ct_entries(dp) if r.kind in ("service", "reply")]


@dataclass
class Node:
    name: str
    ns: str
    ip: str
    gateway: str
    dp: Datapath
    sync: ServiceMapSync | None = None


@dataclass
class Pod:
    name: str
    ns: str
    node: Node
    ip: str
    identity: int


@dataclass
class Lab:
    obj_dir: Path
    loop: asyncio.AbstractEventLoop
    namespaces: list[str] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def program(self, services: list[ClusterService]) -> None:
        """What every agent does with the cluster's ClusterServices."""
        for node in self.nodes.values():
            assert node.sync is not None
            self.run(node.sync.set_services(services))
            assert node.sync.last_error == ""

    def upsert(self, svc: ClusterService) -> None:
        for node in self.nodes.values():
            assert node.sync is not None
            self.run(node.sync.upsert(svc))


def _add_node(lab: Lab, underlay: str, name: str, index: int) -> Node:
    ns = f"{nu.prefix()}-{name}"
    lab.namespaces.append(ns)
    ip = f"198.18.0.{index}"
    vxlan = nu.plumb_node(underlay, ns, name, ip)
    dp = Datapath(nu.pin_dir(f"lb-{name}"), lab.obj_dir)
    node = Node(name, ns, ip, f"10.{CLUSTER_ID}.{index}.1", dp)
    lab.nodes[name] = node
    dp.load()
    dp.configure(
        node_ip=ip, vxlan_ifindex=vxlan, cluster_id=CLUSTER_ID, vxlan_port=netlink.VXLAN_PORT
    )
    nu.call_in(ns, dp.attach_overlay, vxlan)

    async def run_dp(fn: Callable[[], T]) -> T:
        return fn()

    node.sync = ServiceMapSync(dp, run_dp)
    return node


def _add_pod(lab: Lab, name: str, node: Node, ip: str, n: int) -> Pod:
    ns = f"{nu.prefix()}-{name}"
    lab.namespaces.append(ns)
    veth = nu.plumb_pod(node.ns, ns, ip, node.gateway, POD_MTU)
    pod = Pod(name, ns, node, ip, make_cluster_identity(CLUSTER_ID, n))
    lab.pods[name] = pod
    node.dp.endpoints.upsert(
        ip, EndpointInfo(veth.host_ifindex, pod.identity, veth.container_mac, veth.host_mac)
    )
    nu.call_in(node.ns, node.dp.attach_endpoint, veth.host_ifindex)
    return pod


def _start_server(lab: Lab, pod: Pod) -> None:
    proc = subprocess.Popen(
        nu.in_pod(
            pod.ns, sys.executable, "-c", _SERVER, pod.name, str(TCP_TARGET), str(UDP_TARGET)
        ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lab.servers.append(proc)
    assert proc.stdout is not None and proc.stderr is not None
    if proc.stdout.readline().strip() != "ready":
        raise AssertionError(f"server in {pod.name} did not start: {proc.stderr.read()}")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    nu.require_bpffs()
    nu.cleanup_stale()
    lab = Lab(nu.bpf_objects(), asyncio.new_event_loop())
    underlay = f"{nu.prefix()}-lbu"
    lab.namespaces.append(underlay)
    try:
        nu.add_underlay(underlay)
        n1 = _add_node(lab, underlay, "lbn1", 1)
        n2 = _add_node(lab, underlay, "lbn2", 2)
        _add_pod(lab, "client", n1, "10.1.1.5", 400)
        _add_pod(lab, "b1", n1, "10.1.1.6", 401)
        _add_pod(lab, "b2", n2, "10.1.2.5", 402)
        _add_pod(lab, "b3", n2, "10.1.2.6", 403)
        node_ips = {node.name: node.ip for node in lab.nodes.values()}
        pods = [(p.ip, p.identity, p.node.name) for p in lab.pods.values()]
        for node in lab.nodes.values():
            node.dp.ipcache.upsert_many(nu.agent_ipcache(CLUSTER_ID, node_ips, pods, node.name))
        for name in ("b1", "b2", "b3"):
            _start_server(lab, lab.pods[name])
        yield lab
    finally:
        for proc in lab.servers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        for node in lab.nodes.values():
            if node.sync is not None:
                lab.run(node.sync.stop())
            node.dp.close()
        for name in reversed(lab.namespaces):
            nu.del_netns(name)
        for node in lab.nodes.values():
            unpin(node.dp.pin_dir)
        lab.loop.close()


def backends(
    lab: Lab, *, not_ready: tuple[str, ...] = (), proto: Protocol = Protocol.TCP
) -> list[Backend]:
    port, fport = (TCP_TARGET, TCP_PORT) if proto == Protocol.TCP else (UDP_TARGET, UDP_PORT)
    return [
        Backend(
            p.ip,
            port,
            proto,
            "",
            fport,
            p.node.name,
            "c1",
            f"default/{p.name}",
            p.name not in not_ready,
        )
        for p in (lab.pods[n] for n in ("b1", "b2", "b3"))
    ]


def web(lab: Lab, **kw: Any) -> ClusterService:
    not_ready = kw.pop("not_ready", ())
    ports = [ServicePort(TCP_PORT, TCP_TARGET), ServicePort(UDP_PORT, UDP_TARGET, Protocol.UDP)]
    bes = backends(lab, not_ready=not_ready) + backends(
        lab, not_ready=not_ready, proto=Protocol.UDP
    )
    return ClusterService("default", "web", "c1", CLUSTER_ID, VIP, ports, bes, **kw)


def client(
    lab: Lab,
    mode: str,
    port: int,
    n: int = 1,
    *,
    pod: str = "client",
    vip: str = VIP,
    cgroup: Path | None = None,
) -> dict[str, Any]:
    argv = nu.in_pod(lab.pods[pod].ns, sys.executable, "-c", _CLIENT, mode, vip, str(port), str(n))
    if cgroup is not None:  # what the OCI hook does for a container: join the cgroup, then run
        argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]
    done = nu.run(argv, check=False, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"client {mode} failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture
def clean(lab: Lab) -> Iterator[Lab]:
    yield lab
    lab.program([])
    for node in lab.nodes.values():
        node.dp.ct.flush()


def test_connections_spread_over_backends_on_both_nodes(clean: Lab) -> None:
    lab = clean
    lab.program([web(lab)])
    counts = client(lab, "tcp", TCP_PORT, 300)
    assert set(counts) == {"b1", "b2", "b3"}
    assert min(counts.values()) >= 0.15 * 300, counts
    # Conntrack lives on the client's node only.
    n1, n2 = lab.nodes["lbn1"], lab.nodes["lbn2"]
    services = [r for r in ct_entries(n1.dp) if r.kind == "service"]
    assert len(services) == 300 and {r.dst for r in services} == {VIP}
    assert lb_ct(n2.dp) == []


def test_udp_service_answers_from_the_vip(clean: Lab) -> None:
    lab = clean
    lab.program([web(lab)])
    counts = client(lab, "udp", UDP_PORT, 60)  # a connected socket takes only VIP:53's answers
    assert set(counts) == {"b1", "b2", "b3"}, counts


def test_long_lived_connection_keeps_its_backend(clean: Lab) -> None:
    lab = clean
    lab.program([web(lab)])
    hold = subprocess.Popen(
        nu.in_pod(lab.pods["client"].ns, sys.executable, "-c", _CLIENT, "hold", VIP, str(TCP_PORT)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert hold.stdin is not None and hold.stdout is not None

    def ask() -> str:
        assert hold.stdin is not None and hold.stdout is not None
        hold.stdin.write("x\n")
        hold.stdin.flush()
        return hold.stdout.readline().strip()

    try:
        assert hold.stdout.readline().strip() == "connected"
        first = ask()
        assert first in {"b1", "b2", "b3"}
        # Its backend is withdrawn (not ready): gone from the slots and the backends map.
        lab.upsert(web(lab, not_ready=(first,)))
        for node in lab.nodes.values():
            held = node.dp.lb.read()
            assert lab.pods[first].ip not in {b.ip for b in held.backends.values()}
        for _ in range(5):
            assert ask() == first
        later = client(lab, "tcp", TCP_PORT, 40)
        assert first not in later and sum(later.values()) == 40
        # It comes back and is used again; the held connection never moved.
        lab.upsert(web(lab))
        assert first in client(lab, "tcp", TCP_PORT, 60)
        assert ask() == first
    finally:
        if hold.poll() is None:
            hold.kill()
        hold.wait(timeout=5)


def test_client_ip_affinity_keeps_a_client_on_one_backend(clean: Lab) -> None:
    lab = clean
    lab.program([web(lab, session_affinity=True, affinity_timeout=600)])
    counts = client(lab, "tcp", TCP_PORT, 40)
    assert len(counts) == 1, counts
    udp_counts = client(lab, "udp", UDP_PORT, 20)
    assert len(udp_counts) == 1, udp_counts


def test_service_without_backends_refuses_at_once(clean: Lab) -> None:
    lab = clean
    n1 = lab.nodes["lbn1"]
    lab.program([web(lab, not_ready=("b1", "b2", "b3"))])
    refused = n1.dp.metrics.get(Reason.DROP_NO_SERVICE, Direction.EGRESS)[0]
    tcp = client(lab, "tcp-refused", TCP_PORT)
    assert tcp["error"] == "ECONNREFUSED" and tcp["seconds"] < 0.5, tcp
    udp = client(lab, "udp-refused", UDP_PORT)
    assert udp["error"] == "ECONNREFUSED" and udp["seconds"] < 0.5, udp
    assert n1.dp.metrics.get(Reason.DROP_NO_SERVICE, Direction.EGRESS)[0] >= refused + 2
    # Back to life as soon as one backend is ready.
    lab.upsert(web(lab, not_ready=("b1", "b3")))
    assert client(lab, "tcp", TCP_PORT, 5) == {"b2": 5}


def test_deleting_the_service_removes_every_entry(clean: Lab) -> None:
    lab = clean
    maglev = replace(web(lab), name="web2", cluster_ip="10.96.0.11", lb_algorithm="maglev")  # type: ignore[arg-type]
    lab.program([web(lab, session_affinity=True), maglev])
    client(lab, "tcp", TCP_PORT, 3)
    n1 = lab.nodes["lbn1"]
    assert n1.dp.lb.read().entry_count() > 0 and n1.dp.lb.affinity_entries()
    for node in lab.nodes.values():
        assert node.sync is not None
        lab.run(node.sync.delete("default", "web"))
        lab.run(node.sync.delete("default", "web2"))
        assert node.dp.lb.read().entry_count() == 0
        assert node.dp.lb.affinity_entries() == []


def test_conntrack_gc_removes_expired_entries(clean: Lab) -> None:
    lab = clean
    lab.program([web(lab)])
    client(lab, "tcp", TCP_PORT, 10)
    client(lab, "udp", UDP_PORT, 10)
    n1 = lab.nodes["lbn1"]
    rows = ct_entries(n1.dp)
    assert len(lb_ct(n1.dp)) == 40  # a service and a reply entry per connection
    # and policy entries: egress of each client, ingress of the local backends
    assert {r.kind for r in rows} == {"service", "reply", "egress", "ingress"}
    tcp = sum(r.proto == 6 for r in rows)
    now = time.monotonic_ns()
    assert ct_gc(n1.dp, now) == 0
    # Closed TCP connections expire within 10 s, UDP flows after 60 s idle.
    assert ct_gc(n1.dp, now + 11 * 10**9) == tcp
    assert {r.proto for r in ct_entries(n1.dp)} == {17}
    assert ct_gc(n1.dp, now + 61 * 10**9) == len(rows) - tcp
    assert ct_entries(n1.dp) == []


def test_a_backend_reaching_its_own_service_is_answered_by_itself(clean: Lab) -> None:
    lab = clean
    only_b1 = [b for b in web(lab).backends if b.endpoint == "default/b1"]
    mine = replace(web(lab), name="mine", cluster_ip="10.96.0.12", backends=only_b1)
    lab.program([mine])
    assert client(lab, "tcp", TCP_PORT, 5, pod="b1", vip="10.96.0.12") == {"b1": 5}
    assert client(lab, "udp", UDP_PORT, 3, pod="b1", vip="10.96.0.12") == {"b1": 3}


# --- socket-level load-balancing (bpf/sock.bpf.c) ---------------------------


@pytest.fixture
def sock_lb(clean: Lab) -> Iterator[tuple[Lab, Path]]:
    """The client's node balances at connect()/sendmsg() for processes in a cgroup."""
    lab = clean
    root = cgroup.ensure_cgroup2_root()
    cg = root / f"{nu.prefix()}-socklb"
    cgroup.remove_cgroup(cg)  # a crashed earlier run
    cgroup.create_cgroup(cg)
    n1 = lab.nodes["lbn1"]
    try:
        n1.dp.attach_socket_lb(cg)
        yield lab, cg
    finally:
        n1.dp.detach_socket_lb()
        cgroup.remove_cgroup(cg)


def _xlated(node: Node) -> int:
    return node.dp.metrics.get(Reason.SOCK_XLATE, Direction.EGRESS)[0]


def test_socket_lb_sends_connections_straight_to_backends(sock_lb: tuple[Lab, Path]) -> None:
    lab, cg = sock_lb
    n1 = lab.nodes["lbn1"]
    lab.program([web(lab)])
    before = _xlated(n1)
    counts = client(lab, "tcp", TCP_PORT, 300, cgroup=cg)
    assert set(counts) == {"b1", "b2", "b3"}
    assert min(counts.values()) >= 0.15 * 300, counts
    # Picked at connect(): the packets went to the pod IPs, no conntrack, no NAT.
    assert _xlated(n1) == before + 300
    assert lb_ct(n1.dp) == []
    seen = client(lab, "tcp-peer", TCP_PORT, cgroup=cg)
    assert seen["peer"] == [VIP, TCP_PORT] and seen["name"] in {"b1", "b2", "b3"}
    # The same client outside the cgroup goes through from_endpoint's DNAT.
    assert sum(client(lab, "tcp", TCP_PORT, 5).values()) == 5
    assert len([r for r in ct_entries(n1.dp) if r.kind == "service"]) == 5


def test_socket_lb_udp_answers_come_from_the_vip(sock_lb: tuple[Lab, Path]) -> None:
    lab, cg = sock_lb
    n1 = lab.nodes["lbn1"]
    lab.program([web(lab)])
    connected = client(lab, "udp", UDP_PORT, 30, cgroup=cg)
    assert set(connected) == {"b1", "b2", "b3"}, connected
    unconnected = client(lab, "udp-unconnected", UDP_PORT, 30, cgroup=cg)
    assert {k.split("@")[1] for k in unconnected} == {f"{VIP}:{UDP_PORT}"}, unconnected
    assert sum(unconnected.values()) == 30
    assert lb_ct(n1.dp) == []


def test_socket_lb_leaves_maglev_affinity_and_refusals_to_the_datapath(
    sock_lb: tuple[Lab, Path],
) -> None:
    lab, cg = sock_lb
    n1 = lab.nodes["lbn1"]
    maglev = replace(web(lab), name="web2", cluster_ip="10.96.0.11", lb_algorithm="maglev")  # type: ignore[arg-type]
    lab.program([web(lab, session_affinity=True, affinity_timeout=600), maglev])
    before = _xlated(n1)
    assert len(client(lab, "tcp", TCP_PORT, 20, cgroup=cg)) == 1  # affinity holds
    assert sum(client(lab, "tcp", TCP_PORT, 10, vip="10.96.0.11", cgroup=cg).values()) == 10
    assert _xlated(n1) == before
    assert len([r for r in ct_entries(n1.dp) if r.kind == "service"]) == 30
    # No ready backend: the socket is left alone and from_endpoint refuses it.
    lab.program([web(lab, not_ready=("b1", "b2", "b3"))])
    refused = client(lab, "tcp-refused", TCP_PORT, cgroup=cg)
    assert refused["error"] == "ECONNREFUSED" and refused["seconds"] < 0.5, refused


def test_socket_lb_reattach_keeps_the_links_and_detach_falls_back(
    sock_lb: tuple[Lab, Path],
) -> None:
    lab, cg = sock_lb
    n1 = lab.nodes["lbn1"]
    lab.program([web(lab)])
    links = n1.dp.socket_lb_links()
    assert len(links) == 4
    n1.dp.attach_socket_lb(cg)  # an agent restart: same links, program swapped in place
    assert n1.dp.socket_lb_links() == links
    before = _xlated(n1)
    assert sum(client(lab, "tcp", TCP_PORT, 10, cgroup=cg).values()) == 10
    assert _xlated(n1) == before + 10
    assert n1.dp.detach_socket_lb()
    assert n1.dp.socket_lb_links() == []
    assert sum(client(lab, "tcp", TCP_PORT, 10, cgroup=cg).values()) == 10
    assert _xlated(n1) == before + 10
    assert len([r for r in ct_entries(n1.dp) if r.kind == "service"]) == 10
