"""Losing etcd for a while loses nothing: the session lab's etcd SIGSTOPped for 30 s.

The agents and the operator hold 15 s leases, so when etcd runs again it
revokes them at once and deletes every key on them; their owners put the keys
back a moment later. Meanwhile, measured:

- a TCP stream from a container on c1/n1 to one on c1/n2 carries data in every
  100 ms interval (timed by a reader in the receiver's network namespace);
- a client on c1/n1 asking a Service (backends on both nodes) in a loop gets
  every answer;
- sampled every 100 ms from the pinned maps, no node's ipcache loses an entry
  it had, nor its lb maps a backend of the Service;
- a container started while etcd is stopped fails (its CNI ADD cannot publish)
  and leaves nothing behind: after convergence etcd holds the same keys as
  before the pause, and the maps the same entries;
- the operator is the same process (it campaigned again instead of exiting),
  and a Service applied afterwards gets its backends.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from labhelpers import (
    NODES,
    LineReader,
    Workload,
    backend_command,
    etcd_keys,
    service_manifest,
    wait_backends,
    wait_for,
)

from glia.datapath.lbmaps import LBMaps
from glia.datapath.lbtypes import BackendAddr, Frontend
from glia.datapath.nodemaps import EndpointMap, IPCacheMap
from glia.kvstore import keys
from glia.kvstore.grace import DEFAULT_GRACE
from glia.lab import processes
from glia.lab.lab import Lab, LabError
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

CLUSTER = "c1"
PAUSE = 30.0
SAMPLE = 0.1  # seconds between map samples, and the stream's interval
IPCACHE_PER_SAMPLE = 5
STREAM_PORT = 7100
IPPROTO_TCP = 6
APP = "glia-ep"

# Counts the bytes received per 100 ms interval (CLOCK_MONOTONIC, as the test's).
RECEIVER = """
import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(1)
print("listening", flush=True)
conn, _ = srv.accept()
slot, count = None, 0
while True:
    data = conn.recv(65536)
    if not data:
        break
    now = int(time.monotonic() * 10)
    if now != slot:
        if slot is not None:
            print(slot, count, flush=True)
        slot, count = now, 0
    count += len(data)
"""

# 1 KiB every 10 ms: light, and ten writes in every 100 ms interval.
SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(None)
while True:
    s.sendall(b"x" * 1024)
    time.sleep(0.01)
"""

# One GET per connection, every 100 ms: "<time> ok <body>" or "<time> fail <error>".
SERVICE_CLIENT = """
import socket, sys, time
while True:
    started = time.monotonic()
    try:
        s = socket.create_connection((sys.argv[1], 80), timeout=2)
        s.settimeout(2)
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        raw = b""
        while chunk := s.recv(4096):
            raw += chunk
        s.close()
        head, _, body = raw.partition(b"\\r\\n\\r\\n")
        ok = b" 200 " in head.split(b"\\r\\n", 1)[0]
        print(f"{started:.3f}", "ok" if ok else "bad", body.decode().strip(), flush=True)
    except OSError as e:
        print(f"{started:.3f}", "fail", repr(e), flush=True)
    time.sleep(0.1)
"""


class MapSampler:
    """Reads every node's pinned lb maps each 100 ms (the ipcache each 20 ms) in a
    thread, and records each sample that lacks an ipcache prefix or a Service
    backend it had at the start."""

    def __init__(self, lab: Lab, vip: str) -> None:
        self.frontend = Frontend(vip, 80, IPPROTO_TCP)
        self.ipcache = {n: IPCacheMap.open_pinned(lab.node(n).bpf_pin_dir) for n in NODES}
        self.lb = {n: LBMaps.open_pinned(lab.node(n).bpf_pin_dir) for n in NODES}
        self.want_prefixes = {n: self._prefixes(n) for n in NODES}
        self.want_backends = {n: self._backends(n) for n in NODES}
        self.samples = 0
        self.missing: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _prefixes(self, node: str) -> set[str]:
        return {prefix for prefix, _ in self.ipcache[node].items()}

    def _backends(self, node: str) -> set[BackendAddr]:
        contents = self.lb[node].read()
        entry = contents.services.get(self.frontend)
        if entry is None:
            return set()
        ids = {contents.slots.get((entry.svc_id, slot)) for slot in range(entry.ready_count)}
        return {contents.backends[i] for i in ids if i is not None and i in contents.backends}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for m in [*self.ipcache.values(), *self.lb.values()]:
            m.close()

    def _run(self) -> None:
        # The ipcache (a few entries) is read 5 times per lb sample: a hole of a
        # few tens of milliseconds between two 100 ms samples would go unseen.
        tick = 0
        while not self._stop.wait(SAMPLE / IPCACHE_PER_SAMPLE):
            at = time.monotonic()
            for n in NODES:
                lost = self.want_prefixes[n] - self._prefixes(n)
                if lost:
                    self.missing.append(f"{at:.2f} {n} ipcache lacks {sorted(lost)}")
            tick += 1
            if tick % IPCACHE_PER_SAMPLE:
                continue
            for n in NODES:
                gone = self.want_backends[n] - self._backends(n)
                if gone:
                    self.missing.append(f"{at:.2f} {n} lb lacks {sorted(map(str, gone))}")
            self.samples += 1


def state_keys(lab: Lab) -> dict[str, bytes]:
    return {k: v.value for k, v in etcd_keys(lab, CLUSTER, keys.STATE).items()}


def endpoint_maps(lab: Lab) -> dict[str, set[str]]:
    out = {}
    for n in NODES:
        m = EndpointMap.open_pinned(lab.node(n).bpf_pin_dir)
        try:
            out[n] = {ip for ip, _ in m.items()}
        finally:
            m.close()
    return out


def ipcache_maps(lab: Lab) -> dict[str, set[str]]:
    out = {}
    for n in NODES:
        m = IPCacheMap.open_pinned(lab.node(n).bpf_pin_dir)
        try:
            out[n] = {prefix for prefix, _ in m.items()}
        finally:
            m.close()
    return out


def etcd_pid(lab: Lab) -> int:
    st = lab.state()
    assert st is not None
    rec = st.processes[lab.topo.cluster(CLUSTER).etcd_process]
    assert processes.alive(rec), f"etcd of {CLUSTER} is not running"
    assert Path(f"/proc/{rec.pid}/comm").read_text().strip() == "etcd"
    return rec.pid


def operator_record(lab: Lab) -> processes.ProcessRecord:
    st = lab.state()
    assert st is not None
    return st.processes[lab.topo.cluster(CLUSTER).operator_process]


def test_etcd_paused_30s_loses_nothing(lab: Lab, work: Workload) -> None:
    # c1/n1: the stream's sender and the Service's client, and one backend;
    # c1/n2: the stream's receiver, also a backend.
    tx = work.container(NODES[0], "glia-ep-tx", {"app": "glia-ep-client"}, backend_command("tx"))
    web = work.container(NODES[0], "glia-ep-web", {"app": APP}, backend_command("web"))
    rx = work.container(NODES[1], "glia-ep-rx", {"app": APP}, backend_command("rx"))
    work.endpoint_ready(tx, web, rx)
    (vip,) = work.apply(service_manifest(APP, {"app": APP}, [{"port": 80}]))
    wait_backends(lab, vip, 80, {str(web.ip), str(rx.ip)})

    receiver = LineReader(work.spawn(rx, RECEIVER, str(STREAM_PORT)))
    wait_for("the stream's receiver", lambda: "listening" in receiver.all())
    work.spawn(tx, SENDER, str(rx.ip), str(STREAM_PORT))
    client = LineReader(work.spawn(tx, SERVICE_CLIENT, vip))
    client.wait_more(time.monotonic(), 5)

    before_keys = state_keys(lab)
    before_endpoints, before_ipcache = endpoint_maps(lab), ipcache_maps(lab)
    operator = operator_record(lab)
    agent_logs = {n: lab.node(n).agent_log.stat().st_size for n in NODES}
    operator_log = Path(operator.log).stat().st_size
    sampler = MapSampler(lab, vip)
    assert sampler.want_backends == {
        n: {BackendAddr(str(c.ip), 80, IPPROTO_TCP) for c in (web, rx)} for n in NODES
    }
    assert all({f"{c.ip}/32" for c in (tx, web, rx)} <= p for p in sampler.want_prefixes.values())
    sampler.start()

    pid = etcd_pid(lab)
    late: list[Container | LabError] = []
    try:
        time.sleep(1.0)
        stopped = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
            # A CNI ADD while etcd is stopped: it cannot publish, so it fails and rolls back.
            adder = threading.Thread(target=lambda: late.append(_try_run(lab)), daemon=True)
            adder.start()
            time.sleep(max(0.0, stopped + PAUSE - time.monotonic()))
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed = time.monotonic()
        adder.join(timeout=60)
        assert len(late) == 1 and isinstance(late[0], LabError), (
            f"a container started while etcd was stopped should fail: {late}"
        )

        # Converged: the same keys as before (re-published, nothing stray), same maps.
        wait_for("etcd to hold the keys it held before", lambda: state_keys(lab) == before_keys)
        assert endpoint_maps(lab) == before_endpoints
        assert ipcache_maps(lab) == before_ipcache
        # Past every held delete: a key etcd dropped for good would leave the maps by now.
        time.sleep(max(0.0, resumed + DEFAULT_GRACE + 2.0 - time.monotonic()))
    finally:
        sampler.stop()
    ended = time.monotonic()

    assert sampler.samples >= (ended - stopped) / SAMPLE / 2, sampler.samples
    assert not sampler.missing, sampler.missing[:20]
    assert ipcache_maps(lab) == before_ipcache
    assert endpoint_maps(lab) == before_endpoints

    receiver.wait_more(time.monotonic(), 3)  # the intervals up to ``ended`` are printed
    slots = _stream_slots(receiver, stopped - 1.0, ended)
    silent = [
        s / 10 for s in range(int((stopped - 1.0) * 10) + 1, int(ended * 10)) if s not in slots
    ]
    assert not silent, f"{len(silent)} intervals without stream data, from {silent[:10]}"

    answers = [line.split(" ", 2) for line in client.all()]
    during = [a for a in answers if stopped - 1.0 <= float(a[0]) <= ended]
    assert len(during) >= PAUSE * 3, len(during)  # a request about every 0.1-0.2 s
    failed = [a for a in during if a[1] != "ok"]
    assert not failed, failed[:10]
    assert {a[2] for a in during} == {"web", "rx"}

    # What happened is what this test is about: etcd revoked every lease on
    # resuming, the agents re-published, the operator (the same process) stepped
    # down and campaigned again.
    for n, since in agent_logs.items():
        assert "re-granting and re-publishing" in _log_since(lab.node(n).agent_log, since), n
    assert operator_record(lab).pid == operator.pid and processes.alive(operator)
    assert "campaigning again" in _log_since(Path(operator.log), operator_log)
    stored = "".join(k + v.decode(errors="replace") for k, v in state_keys(lab).items())
    assert "glia-ep-late" not in stored

    # A Service applied afterwards is resolved and programmed on every node.
    (vip2,) = work.apply(
        service_manifest(f"{APP}-after", {"app": APP}, [{"port": 8080, "targetPort": 80}])
    )
    wait_backends(lab, vip2, 8080, {str(web.ip), str(rx.ip)})


def _try_run(lab: Lab) -> Container | LabError:
    try:
        ctr = lab.run_container(NODES[0], "glia-ep-late", labels={"app": APP})
    except LabError as e:
        return e
    lab.remove_container(ctr.node, ctr.name)  # should not have started: clean up anyway
    return ctr


def _log_since(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _stream_slots(reader: LineReader, start: float, end: float) -> set[int]:
    """The 100 ms intervals between ``start`` and ``end`` in which bytes arrived."""
    out = set()
    for line in reader.all():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and int(parts[1]) > 0:
            slot = int(parts[0])
            if start * 10 <= slot <= end * 10:
                out.add(slot)
    return out
