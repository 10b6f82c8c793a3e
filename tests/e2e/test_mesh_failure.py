"""ClusterMesh under failure: a remote etcd lost, cluster files changed at run time, forged state.

Uses the session's mesh lab (conftest ``mesh``: two clusters of two nodes,
each cluster its own etcd), shared with the other ClusterMesh modules, so
every test puts the lab back as it found it (etcd and operators running,
cluster files as the lab wrote them, forged keys deleted), also on failure.
Observed from c1/n1 (a client pod runs there) with real traffic and the
agent's real state (``glia clustermesh status``, ``glia status``, ``glia bpf
ipcache|lb list``, identities):

- cluster 2's etcd stopped: cluster-1 pod-to-pod traffic, a cluster-1
  Service, a container started (CNI ADD) and a Service applied see no
  error; c2 is shown stale, ``glia status`` stays healthy with the mesh
  degraded; a global Service's c2 backends (stale) take new connections only
  while no c1 backend is ready; after ``stale_after`` (shortened in the file
  meanwhile: taken without a reconnect) c2's state leaves the maps; etcd
  back, it returns exactly as before (no duplicates, no leftovers);
- c2's file moved out of the directory and back: withdrawn at once, then
  imported again, by the same agent process; a changed file (``stale_after``,
  then other certificate paths: a new connection) opens no gap in the traffic
  to c2's pods or in the imported entries; stopping c1/n1's agent withdraws
  nothing (the pinned maps keep carrying traffic to c2's pods);
- entries forged in c2's etcd with its admin credentials (an IP outside its
  pools, one of c1's pod IPs, an identity outside its range, a malformed
  value, a node claiming a c1 node's address, a ClusterService whose backend
  is a c1 pod) are rejected, reported per key, and reach no map; a cluster
  record claiming c1's id, or a file expecting another id, is refused and
  nothing of c2 stays imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import (
    FAILED,
    LineReader,
    all_of,
    backend_command,
    endpoint_named,
    etcd_delete,
    etcd_keys,
    etcd_put,
    http,
    http_names,
    lb_frontend,
    service_manifest,
    slotted,
    wait_for,
)

from glia.datapath.nodemaps import IPCacheMap
from glia.kvstore import keys, rbac
from glia.lab import configs
from glia.lab.lab import Lab, LabError
from glia.lab.podman import Container
from glia.model import codec
from glia.model.identity import Identity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node
from glia.model.service import Backend, ClusterService, Protocol, ServicePort

pytestmark = [pytest.mark.e2e, pytest.mark.root]

GLIA = Path(sys.executable).parent / "glia"
C1, C2 = "c1", "c2"
N11, N12, N21, N22 = "c1/n1", "c1/n2", "c2/n1", "c2/n2"
SOURCE = "test_mesh_failure"
SYNC = 60.0  # a remote cluster connects, lists and syncs
STALE = 45.0  # the 15 s heartbeat timeout, on a loaded machine
MAPS = 20.0  # a health or merge change reaches the maps
AT_ONCE = 10.0  # "at once": the cluster directory is read every second
MIN_REQUESTS = 10  # a traffic probe that saw no error saw at least this many answers
WEB, LOCAL, FORGED = "glia-mf-web", "glia-mf-local", "glia-mf-forged"
FAST_PROBES = {
    "service.glia.io/health-check-interval": "0.5",
    "service.glia.io/health-check-failure-threshold": "2",
}


@dataclass
class World:
    client: Container  # on c1/n1: where the traffic comes from
    local: Container  # on c1/n2: a cluster-1 pod behind the cluster-1 Service LOCAL
    backends: dict[str, Container]  # by node: the global Service WEB's backends
    vip: str  # WEB's ClusterIP in c1
    local_vip: str

    def names(self, cluster: str) -> set[str]:
        return {c.name for n, c in self.backends.items() if n.startswith(cluster + "/")}

    def ips(self, cluster: str) -> set[str]:
        return {_ip(c) for n, c in self.backends.items() if n.startswith(cluster + "/")}


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


def _service(name: str, app: str, *, global_: bool) -> dict[str, Any]:
    ann = dict(FAST_PROBES)
    if global_:
        ann["service.cilium.io/global"] = "true"
    return service_manifest(name, {"app": app}, [{"port": 80}], annotations=ann)


def _apply(lab: Lab, node: str, doc: dict[str, Any]) -> str:
    (result,) = lab.agent(node).config_apply([doc], SOURCE)["results"]
    return str(result["cluster_ip"])


@pytest.fixture(scope="module")
def world(mesh: Lab) -> Iterator[World]:
    started: list[Container] = []
    applied: list[tuple[str, dict[str, Any]]] = []
    try:
        runs: dict[str, Callable[[], Container]] = {
            "client": lambda: mesh.run_container(N11, "glia-mf-client", labels={"app": "mf-cli"}),
            "local": lambda: mesh.run_container(N12, "glia-mf-local", labels={"app": LOCAL}),
        }
        for n in (N11, N12, N21, N22):
            name = f"glia-mf-web-{n.replace('/', '')}"
            runs[n] = lambda n=n, name=name: mesh.run_container(
                n, name, labels={"app": WEB}, command=backend_command(name)
            )
        ctrs = all_of(runs)
        started += ctrs.values()
        for node, doc in (
            (N11, _service(WEB, WEB, global_=True)),
            (N21, _service(WEB, WEB, global_=True)),
            (N11, _service(LOCAL, LOCAL, global_=False)),
        ):
            applied.append((node, doc))
        ips = {node: _apply(mesh, node, doc) for node, doc in applied[:2]}
        w = World(
            client=ctrs["client"],
            local=ctrs["local"],
            backends={n: ctrs[n] for n in (N11, N12, N21, N22)},
            vip=ips[N11],
            local_vip=_apply(mesh, N11, applied[2][1]),
        )
        every = w.ips(C1) | w.ips(C2)
        wait_for(
            f"c1/n1's maps to give {WEB} the backends of both clusters",
            lambda: slotted(lb_frontend(mesh, N11, w.vip, 80)) == every,
            timeout=SYNC,
        )
        yield w
    finally:
        problems: list[str] = []
        for node, doc in applied:
            try:
                mesh.agent(node).config_delete([doc], SOURCE)
            except Exception as e:  # clean up the rest; report at the end
                problems.append(f"{node}: deleting {doc['metadata']['name']}: {e}")
        for ctr in started:
            try:
                mesh.remove_container(ctr.node, ctr.name)
            except LabError as e:
                problems.append(str(e))
        assert not problems, problems


# --- what c1/n1 holds of c2 ------------------------------------------------------------


def _c2_status(lab: Lab, node: str = N11) -> dict[str, Any] | None:
    """c2's entry of the agent's clustermesh status (what the CLI prints)."""
    clusters = lab.agent(node).clustermesh()["clusters"]
    return next((c for c in clusters if c["name"] == C2), None)


def _cli(lab: Lab, *args: str) -> tuple[int, Any]:
    """``glia ARGS -o json``: exit code and the parsed answer."""
    r = subprocess.run(
        [str(GLIA), *args, "-o", "json"],
        env=lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def _cli_c2(lab: Lab, node: str = N11) -> dict[str, Any] | None:
    rc, answer = _cli(lab, "clustermesh", "status", "--node", node)
    assert rc == 0, answer
    return next((c for c in answer["clusters"] if c["name"] == C2), None)


def _c2_ipcache(lab: Lab, node: str = N11) -> dict[str, tuple[int, Any, int]]:
    return {
        str(e["prefix"]): (int(e["identity"]), e["tunnel_endpoint"], int(e["cluster_id"]))
        for e in lab.agent(node).bpf_ipcache()
        if e["cluster_id"] == lab.topo.cluster(C2).id
    }


def _backends(row: Any) -> list[tuple[str, str, str]]:
    return sorted((b["ip"], b["cluster"], b["node"]) for b in (row or {}).get("backends", []))


def _c2_identities(lab: Lab, node: str = N11) -> dict[int, dict[str, str]]:
    c2 = lab.topo.cluster(C2).id
    return {int(i["id"]): i["labels"] for i in lab.agent(node).identities() if i["id"] >> 16 == c2}


def _snapshot(lab: Lab, w: World, node: str = N11) -> dict[str, Any]:
    st = _c2_status(lab, node) or {}
    return {
        "state": st.get("state"),
        "last_error": st.get("last_error"),
        "counts": {k: st.get(k) for k in ("nodes", "endpoints", "identities", "services")},
        "ipcache": _c2_ipcache(lab, node),
        "lb": _backends(lb_frontend(lab, node, w.vip, 80)),
        "identities": _c2_identities(lab, node),
    }


def _nothing_of_c2(snap: dict[str, Any]) -> bool:
    return (
        not snap["ipcache"]
        and not snap["identities"]
        and all(cluster == C1 for _, cluster, _ in snap["lb"])
    )


def _settled(lab: Lab, w: World) -> dict[str, Any]:
    """c1/n1's view of c2 once it holds every pod c2's agents run, and WEB all 4 backends."""
    pods = {f"{e['ip']}/32" for n in (N21, N22) for e in lab.agent(n).endpoints() if e.get("ip")}

    def probe() -> dict[str, Any] | None:
        snap = _snapshot(lab, w)
        ok = (
            snap["state"] == "synced"
            and snap["last_error"] is None
            and pods <= set(snap["ipcache"])
            and slotted(lb_frontend(lab, N11, w.vip, 80)) == w.ips(C1) | w.ips(C2)
        )
        return snap if ok else None

    snap = wait_for("c1/n1 to hold all of c2", probe, timeout=SYNC)
    assert len(snap["lb"]) == len(set(snap["lb"])) == 4, snap["lb"]
    return snap


def _back_as(lab: Lab, w: World, before: dict[str, Any], what: str) -> None:
    """Until c1/n1 holds of c2 exactly what it held before: no duplicates, no leftovers."""
    got: dict[str, Any] = {}

    def same() -> bool:
        got.update(_snapshot(lab, w))
        return got == before

    try:
        wait_for(what, same, timeout=SYNC)
    except pytest.fail.Exception:
        assert got == before  # shows the difference
        raise
    assert len(got["lb"]) == len(set(got["lb"])), got["lb"]


def _agent_pid(lab: Lab, node: str) -> int:
    st = lab.state()
    assert st is not None
    return st.processes[lab.node(node).agent_process].pid


# --- the lab, changed and put back -----------------------------------------------------


def _remote_file(lab: Lab, node: str) -> Path:
    return lab.node(node).clustermesh_dir / f"{C2}.yaml"


def _edit_remote_file(lab: Lab, node: str, **changes: Any) -> None:
    """Rewrite ``node``'s file for c2 (atomically) with ``changes``; None removes a field."""
    path = _remote_file(lab, node)
    content = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            content.pop(key, None)
        else:
            content[key] = value
    configs.write_clustermesh_dir(path.parent, {path.name: content})


def _restore_remote_files(lab: Lab, *nodes: str) -> None:
    for node in nodes:
        lab.write_clustermesh_dir(node)  # the lab's own files, as `lab up` wrote them


class Probe:
    """A loop of HTTP GETs from ``src`` to ``url`` (a new connection each, every 0.2 s)
    until :meth:`stop`; each prints ok or fail."""

    def __init__(self, lab: Lab, src: Container, url: str, tag: str) -> None:
        self.lab, self.src, self.stop_file = lab, src, f"/tmp/glia-mf-stop-{tag}"
        script = (
            f"rm -f {self.stop_file}; while [ ! -e {self.stop_file} ]; do"
            f" if timeout 2 wget -q -O /dev/null {url}; then echo ok; else echo fail; fi;"
            " sleep 0.2; done"
        )
        argv, env = lab.exec_argv(f"{src.node}/{src.name}", ["sh", "-c", script])
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.reader = LineReader(self.proc)
        self.reader.wait_more(0, 1)  # running

    def stop(self, at_least: int = MIN_REQUESTS) -> list[str]:
        """End the loop once it made ``at_least`` requests; every line it printed."""
        if self.proc.poll() is None:
            with contextlib.suppress(pytest.fail.Exception):  # judged by the caller
                self.reader.wait_more(0, at_least, timeout=30)
            self.lab.exec(f"{self.src.node}/{self.src.name}", ["touch", self.stop_file])
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.reader.all()


def _no_errors(lines: list[str], what: str) -> None:
    assert lines.count("ok") >= MIN_REQUESTS and "fail" not in lines, f"{what}: {lines}"


# --- 1. cluster 2's etcd lost ----------------------------------------------------------


def test_losing_cluster_2s_etcd_disturbs_nothing_in_cluster_1(mesh: Lab, world: World) -> None:
    w = world
    before = _settled(mesh, w)
    pods = Probe(mesh, w.client, f"http://{_ip(w.local)}/", "pods")
    local_svc = Probe(mesh, w.client, f"http://{w.local_vip}/", "svc")
    new: Container | None = None
    during = _service("glia-mf-during", "mf-new", global_=False)
    try:
        mesh.stop_etcd(C2, stay_down=True)

        # The control plane of cluster 1: a container started (CNI ADD), a Service applied.
        new = mesh.run_container(N11, "glia-mf-new", labels={"app": "mf-new"})
        wait_for(f"{new.name}'s endpoint with its identity", lambda: endpoint_named(mesh, new))
        vip = _apply(mesh, N11, during)
        wait_for(
            f"{vip} on c1/n1 with {new.name} behind it",
            lambda: slotted(lb_frontend(mesh, N11, vip, 80)) == {_ip(new)},
            timeout=MAPS,
        )
        assert http(mesh, w.client, vip) == new.name
        assert http(mesh, w.client, _ip(new)) == new.name

        # c2 is stale; the agent is healthy, its mesh subsystem says so.
        wait_for("c2 stale on c1/n1", lambda: (_c2_status(mesh) or {}).get("state") == "stale",
                 timeout=STALE)  # fmt: skip
        c2 = _cli_c2(mesh)
        assert c2 is not None and c2["state"] == "stale" and c2["stale_since"] >= 0, c2
        assert c2["endpoints"] == before["counts"]["endpoints"], c2  # kept, marked stale
        rc, st = _cli(mesh, "status", "--node", N11)
        assert rc == 0 and st["healthy"] is True, st
        mesh_sub = st["subsystems"]["clustermesh"]
        assert mesh_sub["state"] == "degraded" and "c2 stale" in mesh_sub["msg"], mesh_sub
        assert "clustermesh" in st["degraded"]

        # WEB: c2's backends are stale and take no new connection while c1's are ready.
        row = lb_frontend(mesh, N11, w.vip, 80)
        assert slotted(row) == w.ips(C1), row
        theirs = [b for b in row["backends"] if b["cluster"] == C2]
        assert {b["ip"] for b in theirs} == w.ips(C2), row
        for b in theirs:
            assert "stale" in b["flags"] and b["slot"] is None, b
        got = http_names(mesh, w.client, w.vip, 12)
        assert set(got) <= w.names(C1) and not got[FAILED], got
        # Every c1 backend down: then the stale ones serve (better than nothing).
        c1_backends = [w.backends[N11], w.backends[N12]]
        for b in c1_backends:
            mesh.exec(f"{b.node}/{b.name}", ["killall", "httpd"], check=True)
        wait_for(
            "c2's stale backends to take over on c1/n1",
            lambda: slotted(lb_frontend(mesh, N11, w.vip, 80)) == w.ips(C2),
            timeout=MAPS,
        )
        got = http_names(mesh, w.client, w.vip, 12)
        assert set(got) <= w.names(C2) and not got[FAILED], got
        for b in c1_backends:
            mesh.exec(f"{b.node}/{b.name}", ["httpd", "-p", "80", "-h", "/www"], check=True)
        wait_for(
            "c1's backends back on c1/n1",
            lambda: slotted(lb_frontend(mesh, N11, w.vip, 80)) == w.ips(C1),
            timeout=MAPS,
        )
        got = http_names(mesh, w.client, w.vip, 12)
        assert set(got) <= w.names(C1) and not got[FAILED], got

        # The stale limit, shortened in the files meanwhile (no reconnect needed):
        # c2's state leaves the maps of both c1 nodes.
        for node in (N11, N12):
            _edit_remote_file(mesh, node, stale_after=1)
        for node in (N11, N12):
            wait_for(
                f"c2 withdrawn from {node}",
                lambda node=node: (
                    (_c2_status(mesh, node) or {}).get("state") == "withdrawn"
                    and _nothing_of_c2(_snapshot(mesh, w, node))
                ),
                timeout=MAPS,
            )
        c2 = _cli_c2(mesh)
        assert c2 is not None and (c2["endpoints"], c2["identities"], c2["nodes"]) == (0, 0, 0)
        assert slotted(lb_frontend(mesh, N11, w.vip, 80)) == w.ips(C1)
        rc, st = _cli(mesh, "status", "--node", N11)
        assert rc == 0 and st["healthy"] is True, st

        # Throughout: not one error in cluster 1.
        _no_errors(pods.stop(), f"pod to pod {N11} -> {N12}")
        _no_errors(local_svc.stop(), f"Service {LOCAL}")
    finally:
        pods.stop()
        local_svc.stop()
        for b in (w.backends[N11], w.backends[N12]):  # serving again, whatever happened
            mesh.exec(f"{b.node}/{b.name}", ["sh", "-c", "pidof httpd || httpd -p 80 -h /www"])
        _restore_remote_files(mesh, N11, N12)
        mesh.start_etcd(C2)
        mesh.agent(N11).config_delete([during], SOURCE)
        if new is not None:
            mesh.remove_container(new.node, new.name)
    # Back: the same entries, backends and identities as before, each once.
    _back_as(mesh, w, before, "c2's state back on c1/n1 as before")


# --- 2. cluster files at run time -------------------------------------------------------


def test_a_remote_cluster_file_removed_and_added_at_run_time(mesh: Lab, world: World) -> None:
    w = world
    before = _settled(mesh, w)
    pid = _agent_pid(mesh, N11)
    path = _remote_file(mesh, N11)
    aside = mesh.dir / "glia-mf-c2.yaml.aside"  # outside the directory
    try:
        os.replace(path, aside)
        removed = time.monotonic()
        wait_for(
            "c2 withdrawn from c1/n1",
            lambda: _c2_status(mesh) is None and _nothing_of_c2(_snapshot(mesh, w)),
            timeout=AT_ONCE,
        )
        took = time.monotonic() - removed
        assert _cli_c2(mesh) is None  # clustermesh status lists it no more
        assert http(mesh, w.client, _ip(w.backends[N21]), timeout=2) == ""  # nor routes to it
        os.replace(aside, path)
        _back_as(mesh, w, before, "c2 imported again on c1/n1")
        c2 = _cli_c2(mesh)
        assert c2 is not None and c2["state"] == "synced", c2
        assert http(mesh, w.client, _ip(w.backends[N21])) == w.backends[N21].name
    finally:
        if aside.exists():
            os.replace(aside, path)
    assert _agent_pid(mesh, N11) == pid, "the agent was restarted"
    assert took < AT_ONCE


def test_a_changed_remote_cluster_file_opens_no_gap(mesh: Lab, world: World) -> None:
    w = world
    before = _settled(mesh, w)
    pid = _agent_pid(mesh, N11)
    first = _c2_status(mesh)
    assert first is not None
    tls = mesh.node(N11).clustermesh_dir / "glia-mf-tls"  # not a .yaml: no cluster file
    watching = threading.Event()
    lowest: dict[str, int] = {}

    def watch() -> None:
        # What c1/n1 holds of c2, sampled all along: it must never dip.
        while not watching.is_set():
            snap = _snapshot(mesh, w)
            for what, n in (("ipcache", len(snap["ipcache"])), ("lb", len(snap["lb"]))):
                lowest[what] = min(lowest.get(what, n), n)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    to_c2 = Probe(mesh, w.client, f"http://{_ip(w.backends[N21])}/", "c2pod")
    watcher.start()
    try:
        # stale_after alone: the connection in use takes it.
        _edit_remote_file(mesh, N11, stale_after=120)
        wait_for("the new stale_after", lambda: (_c2_status(mesh) or {}).get("stale_after") == 120)
        # Other certificate files (same content, other paths): a new connection.
        tls.mkdir()
        cfg = yaml.safe_load(_remote_file(mesh, N11).read_text())
        paths = {}
        for field in ("cert_file", "key_file"):
            paths[field] = str(tls / Path(cfg[field]).name)
            shutil.copy(cfg[field], paths[field])
        _edit_remote_file(mesh, N11, **paths)
        wait_for(
            "c2 synced over a new connection",
            lambda: (
                (c := _c2_status(mesh)) is not None
                and c["connections"] == first["connections"] + 1
                and c["state"] == "synced"
            ),
            timeout=SYNC,
        )
        _restore_remote_files(mesh, N11)
        wait_for(
            "c2 synced over the lab's files again",
            lambda: (
                (c := _c2_status(mesh)) is not None
                and c["connections"] == first["connections"] + 2
                and c["stale_after"] == first["stale_after"]
                and c["state"] == "synced"
            ),
            timeout=SYNC,
        )
        time.sleep(1)  # a gap right after the last switch would show in the samples too
    finally:
        watching.set()
        watcher.join(timeout=10)
        lines = to_c2.stop()
        _restore_remote_files(mesh, N11)
        shutil.rmtree(tls, ignore_errors=True)
    _no_errors(lines, f"HTTP {N11} -> {N21}'s pod while c2's file changed")
    assert lowest == {"ipcache": len(before["ipcache"]), "lb": len(before["lb"])}, lowest
    _back_as(mesh, w, before, "c2 on c1/n1 as before")
    assert _agent_pid(mesh, N11) == pid, "the agent was restarted"


def _pinned_c2_ipcache(lab: Lab, node: str) -> dict[str, tuple[int, Any, int]]:
    """c2's entries of the node's ipcache read from its pin (no agent needed)."""
    m = IPCacheMap.open_pinned(lab.node(node).bpf_pin_dir)
    try:
        rows = m.items()
    finally:
        m.close()
    c2 = lab.topo.cluster(C2).id
    return {p: (i.identity, i.tunnel_endpoint, i.cluster_id) for p, i in rows if i.cluster_id == c2}


def test_stopping_the_agent_withdraws_nothing_it_imported(mesh: Lab, world: World) -> None:
    w = world
    before = _settled(mesh, w)
    b21 = w.backends[N21]
    to_c2 = Probe(mesh, w.client, f"http://{_ip(b21)}/", "agentdown")
    try:
        mesh.stop_agent(N11)  # stays down until started again
        down = time.monotonic()
        # While it is down c2's entries stay in the pinned map and carry traffic.
        to_c2.reader.wait_more(down, 10, timeout=30)
        assert _pinned_c2_ipcache(mesh, N11) == before["ipcache"]
    finally:
        mesh.start_agent(N11)
        lines = to_c2.stop()
    _no_errors(lines, f"HTTP {N11} -> {N21}'s pod while c1/n1's agent was down")
    _back_as(mesh, w, before, "c2 on c1/n1 as before, after the agent's restart")


# --- 3. forged remote state -------------------------------------------------------------


def test_forged_remote_entries_are_rejected_and_reach_no_map(mesh: Lab, world: World) -> None:
    w = world
    before = _settled(mesh, w)
    ipcache_before = {str(e["prefix"]): e for e in mesh.agent(N11).bpf_ipcache()}
    c1_pod = _ip(w.local)
    c1_n2 = str(mesh.topo.node(C1, "n2").ip)
    c2_n1 = str(mesh.topo.node(C2, "n1").ip)
    c2_id = mesh.topo.cluster(C2).id
    good_id = min(before["identities"])  # an identity c2 really has
    outside = (mesh.topo.cluster(C1).id << 16) | 4242  # c1's range, not c2's

    def entry(ip: str, **changes: Any) -> bytes:
        fields: dict[str, Any] = {"ip": ip, "identity": good_id, "tunnel_endpoint": c2_n1,
                                  "cluster_id": c2_id, "node": "n1", **changes}  # fmt: skip
        return codec.encode(IPCacheEntry(**fields))

    c2_block_ip = f"{_ip(w.backends[N21]).rsplit('.', 1)[0]}.250"  # in c2/n1's own block
    svc = ClusterService(
        "default", FORGED, C2, c2_id, str(mesh.topo.cluster(C2).service_cidr[10]),
        [ServicePort(80, 80)],
        [Backend(c1_pod, 80, Protocol.TCP, "", 80, "n1", C2, "default/x", True)],
        global_=True,
    )  # fmt: skip
    forged = {
        keys.ipcache(C2, "n1", "192.168.77.7"): (entry("192.168.77.7"), "outside the pod pool"),
        keys.ipcache(C2, "n1", c1_pod): (entry(c1_pod), "outside the pod pool"),
        keys.identity_id(C2, outside): (
            codec.encode(Identity(outside, {"forged": "glia-mf"})),
            f"outside cluster {C2}'s range",
        ),
        keys.ipcache(C2, "n1", c2_block_ip): (b'{"ip": "' + c2_block_ip.encode(), "JSON"),
        keys.node(C2, "n9"): (
            codec.encode(Node("n9", C2, c2_id, c1_n2)),
            f"node_ip {c1_n2} is the address of our node {C1}/n2",
        ),
        keys.service(C2, "default", FORGED): (codec.encode(svc), f"backend {c1_pod}"),
    }
    ours = _service(FORGED, LOCAL, global_=True)  # c1's record of it: c1's pod, global
    try:
        forged_vip = _apply(mesh, N11, ours)
        for key, (value, _) in forged.items():
            ok, msg = etcd_put(mesh, C2, key, value, rbac.RW_USER)
            assert ok, (key, msg)

        def reported() -> dict[str, Any] | None:
            c2 = _c2_status(mesh)
            return c2 if c2 is not None and set(forged) <= set(c2["rejected_keys"]) else None

        wait_for("c1/n1 to reject every forged record", reported, timeout=MAPS)
        c2 = _cli_c2(mesh)
        assert c2 is not None and c2["state"] == "synced" and c2["rejected"] >= len(forged), c2
        for key, (_, why) in forged.items():
            assert why in c2["rejected_keys"][key], (key, c2["rejected_keys"][key])
        assert c2["nodes"] == before["counts"]["nodes"], c2  # n9 is no node of c2
        table = subprocess.run(
            [str(GLIA), "clustermesh", "status", "--node", N11],
            env=mesh.cli_env(), capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert table.returncode == 0 and "Records of c2 rejected (" in table.stdout, table
        assert f"{keys.node(C2, 'n9')}: node_ip {c1_n2} is the address" in table.stdout
        rc, st = _cli(mesh, "status", "--node", N11)
        assert rc == 0 and st["healthy"] is True, st
        assert "records rejected" in st["subsystems"]["clustermesh"]["msg"], st["subsystems"]

        # Nothing of it in c1/n1's maps.
        now = {str(e["prefix"]): e for e in mesh.agent(N11).bpf_ipcache()}
        for ip in ("192.168.77.7", c2_block_ip):
            assert f"{ip}/32" not in now, now.get(f"{ip}/32")
        for ip in (c1_pod, c1_n2):
            assert now[f"{ip}/32"] == ipcache_before[f"{ip}/32"], (ip, now[f"{ip}/32"])
        wait_for(f"{FORGED} on c1/n1", lambda: lb_frontend(mesh, N11, forged_vip, 80))
        assert _backends(lb_frontend(mesh, N11, forged_vip, 80)) == [(c1_pod, C1, "n2")]
        for row in mesh.agent(N11).bpf_lb():
            for b in row["backends"]:
                assert not (b["cluster"] == C2 and b["ip"] == c1_pod), (row["frontend"], b)
        assert all(i["labels"] != {"forged": "glia-mf"} for i in mesh.agent(N11).identities())
        assert http(mesh, w.client, forged_vip) == w.local.name
    finally:
        etcd_delete(mesh, C2, *forged)
        mesh.agent(N11).config_delete([ours], SOURCE)
    wait_for(
        "c1/n1 to drop the rejections with the forged records",
        lambda: not set(forged) & set((_c2_status(mesh) or {}).get("rejected_keys", {})),
    )
    _back_as(mesh, w, before, "c2 on c1/n1 as before")


def test_a_conflicting_cluster_id_is_refused_and_nothing_imported(mesh: Lab, world: World) -> None:
    w = world
    before = _settled(mesh, w)

    def refused(why: str) -> None:
        def probe() -> dict[str, Any] | None:
            c2 = _c2_status(mesh)
            ok = c2 is not None and c2["state"] == "refused" and _nothing_of_c2(_snapshot(mesh, w))
            return c2 if ok else None

        wait_for("c2 refused by c1/n1, nothing of it imported", probe, timeout=MAPS)
        c2 = _cli_c2(mesh)
        assert c2 is not None and c2["state"] == "refused", c2
        assert why in (c2["last_error"] or ""), c2
        assert (c2["nodes"], c2["endpoints"], c2["identities"], c2["services"]) == (0, 0, 0, 0)

    # The file expects another id than c2's record says.
    try:
        _edit_remote_file(mesh, N11, cluster_id=7)
        refused(f"refused: cluster record {keys.cluster_info(C2)}: id 2 is not the "
                "configured cluster_id 7")  # fmt: skip
    finally:
        _restore_remote_files(mesh, N11)
    _back_as(mesh, w, before, "c2 admitted again with the lab's file")

    # c2's record rewritten with c1's id (its operator, the record's only writer,
    # stopped so it does not put it back); the file names no id: the mesh refuses it.
    key = keys.cluster_info(C2)
    (original,) = [v.value for v in etcd_keys(mesh, C2, key).values()]
    record = json.loads(original)
    assert record["id"] == mesh.topo.cluster(C2).id
    connections = (_c2_status(mesh) or {})["connections"]
    try:
        _edit_remote_file(mesh, N11, cluster_id=None)  # taken over a new connection
        wait_for(
            "c2 synced under a file without cluster_id",
            lambda: (
                (c := _c2_status(mesh)) is not None
                and c["connections"] > connections
                and c["state"] == "synced"
            ),
            timeout=SYNC,
        )
        _back_as(mesh, w, before, "c2 synced under a file without cluster_id")
        mesh.stop_operator(C2)
        ok, msg = etcd_put(mesh, C2, key, json.dumps({**record, "id": 1}).encode(), rbac.RW_USER)
        assert ok, msg
        refused("refused: cluster id 1 is also this cluster's")
    finally:
        ok, msg = etcd_put(mesh, C2, key, original, rbac.RW_USER)
        mesh.start_operator(C2)
        _restore_remote_files(mesh, N11)
        assert ok, msg
    _back_as(mesh, w, before, "c2 admitted again once its record is fixed")
