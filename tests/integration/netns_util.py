"""Namespaces, pins and processes for the datapath integration tests.

Everything is named ``glia-t<pid>-*`` (namespaces) or ``glia-test-<pid>*``
(bpffs pins), so leftovers of a crashed run are recognised by their dead pid
and removed, and nothing else on the machine is touched. Node namespaces are
entered with setns (glia.datapath.netns) or ``nsenter --net``, never
``ip netns exec``, which would hide /sys/fs/bpf; pods, which need no bpffs,
may use ``ip netns exec``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from glia.agent.ipcache import plan_ipcache
from glia.datapath import netlink
from glia.datapath.events import DropEvent, EventReader
from glia.datapath.loader import default_obj_dir, unpin
from glia.datapath.netns import current_netns_id, netns_id, run_in_netns
from glia.datapath.nodemaps import IPCacheInfo
from glia.kvstore import keys
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node
from glia.validate.bounds import ClusterBounds
from glia.validate.ipcache import KeyedEntry
from glia.validate.nodes import Allocation, NodeEntry

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
BPFFS = Path("/sys/fs/bpf")
REPO = Path(__file__).resolve().parents[2]
_NETNS_RE = re.compile(r"^glia-t(\d+)-")
_PIN_RE = re.compile(r"^glia-test-(\d+)")


def prefix() -> str:
    return f"glia-t{os.getpid()}"


def require_bpffs() -> None:
    mounted = any(
        line.split()[1] == str(BPFFS) and line.split()[2] == "bpf"
        for line in Path("/proc/self/mounts").read_text().splitlines()
    )
    if not mounted:
        pytest.fail(
            f"bpffs is not mounted at {BPFFS}: run scripts/setup.sh "
            f"(or `mount -t bpf bpf {BPFFS}`)",
            pytrace=False,
        )


def bpf_objects() -> Path:
    """Build the BPF objects if needed (make tracks the headers) and return their dir."""
    done = subprocess.run(["make", "-s", "bpf"], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`make bpf` failed:\n{done.stdout}{done.stderr}", pytrace=False)
    return default_obj_dir()


def run(
    cmd: list[str], *, check: bool = True, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def ns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def in_node(name: str, *cmd: str) -> list[str]:
    """A command line running in namespace ``name`` with the host's bpffs in view."""
    return ["nsenter", f"--net={ns_path(name)}", *cmd]


def in_pod(name: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", name, *cmd]


def add_netns(name: str) -> str:
    assert name.startswith("glia-"), name
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    return ns_path(name)


def del_netns(name: str) -> None:
    assert name.startswith("glia-"), name
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "del", name], check=False)


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def cleanup_stale() -> None:
    """Remove namespaces and pins left by earlier test runs whose process is gone."""
    if NETNS_DIR.is_dir():
        for entry in NETNS_DIR.iterdir():
            m = _NETNS_RE.match(entry.name)
            if m and not _pid_alive(int(m.group(1))):
                del_netns(entry.name)
    if BPFFS.is_dir():
        for entry in BPFFS.iterdir():
            m = _PIN_RE.match(entry.name)
            if m and not _pid_alive(int(m.group(1))):
                unpin(entry)


def pin_dir(tag: str) -> Path:
    return BPFFS / f"glia-test-{os.getpid()}-{tag}"


# The namespace this test process started in: the host's. Helpers refuse to act there.
_HOST_NETNS = netns_id("/proc/self/ns/net")


def call_in(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in namespace ``name`` (a fresh thread; the caller's stays put)."""

    def guarded() -> T:
        # The safety net for every test helper: never act on the root namespace.
        assert current_netns_id() != _HOST_NETNS, "refusing the host's network namespace"
        return fn(*args, **kwargs)

    return run_in_netns(ns_path(name), guarded)


def add_underlay(name: str) -> None:
    """The underlay: a namespace with the bridge ``br0`` that node namespaces attach to."""
    add_netns(name)
    run(["ip", "-n", name, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", name, "link", "set", "br0", "up"])


def plumb_host(underlay: str, ns: str, link: str, ip: str) -> None:
    """Create ``ns`` on the underlay's bridge (port ``link``) with ``ip``/15 on its eth0."""
    add_netns(ns)
    run(["ip", "-n", underlay, "link", "add", link, "type", "veth", "peer", "name", "eth0",
         "netns", ns])  # fmt: skip
    run(["ip", "-n", underlay, "link", "set", link, "master", "br0", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{ip}/15", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def plumb_node(underlay: str, node_ns: str, link: str, ip: str) -> int:
    """A host on the underlay (:func:`plumb_host`) with glia_vxlan in it as the agent
    makes it; the VXLAN ifindex."""
    plumb_host(underlay, node_ns, link, ip)
    return call_in(node_ns, netlink.ensure_vxlan)


def plumb_pod(node_ns: str, pod_ns: str, ip: str, gateway: str, mtu: int) -> netlink.VethInfo:
    """Create ``pod_ns`` and plumb it into ``node_ns`` the way the agent does for a container."""
    add_netns(pod_ns)
    return call_in(
        node_ns,
        netlink.create_endpoint_veth,
        netns_path=ns_path(pod_ns),
        ifname="eth0",
        host_ifname=netlink.host_ifname_for(pod_ns, "eth0"),
        ip=ip,
        gateway=gateway,
        mtu=mtu,
    )


def agent_ipcache(
    cluster_id: int,
    nodes: dict[str, str],
    pods: list[tuple[str, int, str]],
    self_node: str,
) -> dict[str, IPCacheInfo]:
    """The ipcache the agent of ``self_node`` writes (glia.agent.ipcache) for
    ``nodes`` (name -> node IP) and ``pods`` (IP, identity, node name); each
    node's pod CIDR is the smallest block holding its pods."""
    cluster = f"c{cluster_id}"
    node_records = {
        name: NodeEntry(Node(name, cluster, cluster_id, ip), 1) for name, ip in nodes.items()
    }
    entries = {
        keys.ipcache(cluster, node, ip): KeyedEntry(
            node, IPCacheEntry(ip, identity, nodes[node], cluster_id, node)
        )
        for ip, identity, node in pods
    }
    allocs: dict[str, Allocation] = {}
    for name in nodes:
        ips = [ipaddress.IPv4Address(ip) for ip, _, node in pods if node == name]
        if ips:
            block = ipaddress.IPv4Network(f"{min(ips)}/32")
            while max(ips) not in block:
                block = block.supernet()
            allocs[name] = Allocation(block.supernet() if block.prefixlen > 24 else block, 1)
    plan = plan_ipcache(
        entries,
        node_records,
        allocs,
        ClusterBounds(cluster, cluster_id),
        self_node,
        nodes[self_node],
    )
    assert not plan.rejected, plan.rejected
    return {
        prefix.removesuffix("/32"): IPCacheInfo(d.identity, d.tunnel_endpoint or None, d.cluster_id)
        for prefix, d in plan.desired.items()
    }


def collect_events(
    reader: EventReader, until: Callable[[list[DropEvent]], bool], timeout: float = 5
) -> list[DropEvent]:
    """Poll ``reader`` until ``until(events so far)`` holds; all events seen."""
    deadline = time.monotonic() + timeout
    seen: list[DropEvent] = []
    while not until(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for drop events; saw {seen}")
        seen += reader.poll(timeout=min(left, 0.2))
    return seen


def ping(pod: str, dst: str, *, src: str | None = None, count: int = 1) -> bool:
    """True when all ``count`` echo requests from ``pod`` were answered (1 s grace).

    busybox's ping (busybox-static is in scripts/setup.sh; iputils may be absent).
    """
    cmd = ["busybox", "ping", "-q", "-A", "-c", str(count), "-W", "1", "-w", str(count + 1)]
    if src:
        cmd += ["-I", src]
    done = run(in_pod(pod, *cmd, dst), check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) packets received", done.stdout)
    if m is None:
        raise AssertionError(f"ping in {pod} gave no summary: {done.stdout} {done.stderr}")
    return int(m.group(2)) == count


_ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(10)
print("ready", flush=True)
c, _ = s.accept()
data = b""
while not data.endswith(b"\\n"):
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
c.sendall(data.upper())
c.close()
"""

_ECHO_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(sys.argv[3].encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"""


@contextmanager
def echo_server(pod: str, ip: str, port: int) -> Iterator[subprocess.Popen[str]]:
    """A one-shot TCP upper-casing echo server in ``pod``, ready when yielded."""
    proc = subprocess.Popen(
        in_pod(pod, sys.executable, "-c", _ECHO_SERVER, ip, str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise AssertionError(f"echo server in {pod} did not start: {proc.stderr.read()}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def tcp_exchange(pod: str, ip: str, port: int, message: str) -> str:
    done = run(in_pod(pod, sys.executable, "-c", _ECHO_CLIENT, ip, str(port), message), check=False)
    if done.returncode != 0:
        raise AssertionError(f"TCP client in {pod} -> {ip}:{port} failed: {done.stderr.strip()}")
    return done.stdout.strip()


_UDP_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    print(peer[0], data.decode(errors="replace"), flush=True)
"""

_UDP_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[4]:
    s.bind((sys.argv[4], 0))
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
"""


class UDPListener:
    """Datagrams received by a UDP socket in a namespace, as "source-ip payload"
    lines (a thread collects them)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.strip())

    def received(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_for(self, line: str, timeout: float = 5) -> list[str]:
        """Everything received once ``line`` has been; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while line not in self.received():
            if time.monotonic() >= deadline:
                raise AssertionError(f"{line!r} never arrived; got {self.received()}")
            time.sleep(0.05)
        return self.received()


@contextmanager
def udp_listener(ns: str, ip: str, port: int) -> Iterator[UDPListener]:
    """A UDP socket on ``ip:port`` in namespace ``ns``, ready when yielded."""
    proc = subprocess.Popen(
        in_node(ns, sys.executable, "-c", _UDP_LISTENER, ip, str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        if proc.stdout.readline().strip() != "ready":
            raise AssertionError(f"UDP listener in {ns} did not start: {proc.stderr.read()}")
        yield UDPListener(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def udp_send(ns: str, ip: str, port: int, data: bytes, *, src: str = "") -> None:
    """One datagram from an ordinary UDP socket in namespace ``ns`` (bound to ``src``)."""
    run(in_node(ns, sys.executable, "-c", _UDP_SENDER, ip, str(port), data.hex(), src))


def netstat_counter(node: str, section: str, field: str) -> int:
    """A counter of /proc/net/snmp (e.g. Ip ForwDatagrams) inside namespace ``node``."""
    text = run(in_node(node, "cat", "/proc/net/snmp")).stdout.splitlines()
    for header, values in zip(text[::2], text[1::2], strict=False):
        if header.startswith(f"{section}:"):
            names = header.split()[1:]
            return int(values.split()[1:][names.index(field)])
    raise AssertionError(f"{section} {field} not in /proc/net/snmp")


def link_stats(node: str, ifname: str) -> dict[str, dict[str, int]]:
    """``ip -s -j link`` statistics of ``ifname`` in ``node`` ({"rx": {...}, "tx": {...}})."""
    out = run(in_node(node, "ip", "-s", "-j", "link", "show", ifname)).stdout
    stats: dict[str, dict[str, int]] = json.loads(out)[0]["stats64"]
    return stats
