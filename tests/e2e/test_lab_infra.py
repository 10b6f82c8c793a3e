"""The lab without glia's daemons (``up --no-agents``): wires, etcd, podman, supervision, down.

Needs root. Uses its own labs ("gliai": 2 clusters of 2 nodes; "gliad": one
node, built and removed by each teardown test), so it runs next to the
session lab of conftest.py without sharing anything with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from labhelpers import lab_dir, leftovers, wait_for

from glia.lab import netns, processes
from glia.lab.lab import Lab, LabAlreadyUp, LabError, bin_dir

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def root_netns_snapshot() -> dict[str, set[str]]:
    """What the root namespace holds: links, addresses, routes, rules (read only)."""

    def lines(*args: str) -> set[str]:
        out = subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout
        return set(out.splitlines())

    links = {ln.split(":")[1].strip() for ln in lines("-o", "link", "show")}
    addrs = {" ".join(ln.split()[1:4]) for ln in lines("-o", "addr", "show")}
    return {"links": links, "addrs": addrs, "routes": lines("route"), "rules": lines("rule")}


@dataclass
class Infra:
    lab: Lab
    root_before: dict[str, set[str]]


@pytest.fixture(scope="module")
def infra() -> Iterator[Infra]:
    before = root_netns_snapshot()
    lab = Lab.open("gliai", lab_dir("gliai"), clusters=2, nodes=2)
    try:
        lab.up(agents=False, recreate=True)
        yield Infra(lab, before)
    finally:
        report = lab.down()
        assert not leftovers(lab) and not report.problems, (leftovers(lab), report.problems)


def test_up_again_is_a_no_op(infra: Infra) -> None:
    assert infra.lab.is_up()
    assert infra.lab.up(agents=False) is False


def test_up_in_another_shape_is_refused(infra: Infra) -> None:
    other = Lab.open("gliai", lab_dir("gliai"), clusters=1, nodes=3)
    with pytest.raises(LabAlreadyUp, match=r"2 cluster\(s\) of 2 node\(s\) without agents"):
        other.up(agents=False)
    assert infra.lab.is_up()


def test_root_namespace_is_untouched(infra: Infra) -> None:
    assert root_netns_snapshot() == infra.root_before


def test_nodes_reach_each_other_across_clusters(infra: Infra) -> None:
    topo = infra.lab.topo
    for src, dst in [("c1/n1", "c1/n2"), ("c1/n1", "c2/n2"), ("c2/n1", "c1/n2")]:
        ip = str(infra.lab.node(dst).ip)
        r = infra.lab.node_exec(src, ["busybox", "ping", "-c", "1", "-W", "2", ip])
        assert r.returncode == 0, f"{src} -> {dst} ({ip}): {r.stdout}{r.stderr}"
    addr = infra.lab.node_exec("c2/n2", ["ip", "-o", "-4", "addr", "show", "eth0"], check=True)
    assert "198.18.2.2/15" in addr.stdout
    assert len(topo.nodes) == 4


def _etcdctl(
    lab: Lab, node: str, cluster: str, user: str, *args: str
) -> subprocess.CompletedProcess[str]:
    cfg = lab.etcd_config(cluster, user)
    assert cfg.ca_file and cfg.cert_file and cfg.key_file
    argv = [
        "etcdctl",
        f"--endpoints={lab.topo.cluster(cluster).etcd_endpoint}",
        f"--cacert={cfg.ca_file}",
        f"--cert={cfg.cert_file}",
        f"--key={cfg.key_file}",
        "--dial-timeout=3s",
        *args,
    ]
    return lab.node_exec(node, argv, timeout=20)


def test_every_node_reaches_every_etcd_over_tls_with_its_user(infra: Infra) -> None:
    lab = infra.lab
    key = f"glia/state/lab-test/{uuid.uuid4().hex}"
    w = _etcdctl(lab, "c1/n2", "c1", "glia", "put", key, "hello")
    assert w.returncode == 0, w.stderr
    # The other cluster reads c1 read-only over the underlay, as ClusterMesh does.
    r = _etcdctl(lab, "c2/n1", "c1", "glia-remote", "get", "--print-value-only", key)
    assert r.returncode == 0 and r.stdout.strip() == "hello", r.stderr
    denied = _etcdctl(lab, "c2/n1", "c1", "glia-remote", "put", key, "evil")
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    assert _etcdctl(lab, "c1/n1", "c1", "glia", "del", key).returncode == 0


def test_etcd_outage_and_return_keep_its_data(infra: Infra) -> None:
    lab = infra.lab
    key = f"glia/state/lab-test/{uuid.uuid4().hex}"
    assert _etcdctl(lab, "c2/n1", "c2", "glia", "put", key, "kept").returncode == 0
    lab.stop_etcd("c2", kill=True, stay_down=True)  # a crash the supervisor leaves alone
    assert not lab.is_up()
    down = _etcdctl(lab, "c2/n1", "c2", "glia", "--command-timeout=1s", "get", key)
    assert down.returncode != 0
    lab.start_etcd("c2")
    assert lab.is_up()
    back = _etcdctl(lab, "c2/n2", "c2", "glia", "get", "--print-value-only", key)
    assert back.returncode == 0 and back.stdout.strip() == "kept", back.stderr
    assert _etcdctl(lab, "c2/n1", "c2", "glia", "del", key).returncode == 0


def test_etcd_is_not_reachable_without_a_client_certificate(infra: Infra) -> None:
    lab = infra.lab
    cfg = lab.etcd_config("c1")
    r = lab.node_exec(
        "c1/n1",
        ["etcdctl", f"--endpoints={lab.topo.cluster('c1').etcd_endpoint}",
         f"--cacert={cfg.ca_file}", "--dial-timeout=1s", "--command-timeout=1s", "get", "glia/"],
        timeout=20,
    )  # fmt: skip
    assert r.returncode != 0


def test_podman_per_node(infra: Infra) -> None:
    lab = infra.lab
    name = f"glia-t-{uuid.uuid4().hex[:6]}"
    c = lab.run_container("c1/n1", name, labels={"app": "web"}, network="none")
    try:
        assert c.state == "running" and c.labels == {"app": "web"} and c.node == "c1/n1"
        body = wait_for(
            "httpd in the container",
            lambda: lab.exec(f"c1/n1/{name}", ["wget", "-qO-", "http://127.0.0.1/"]).stdout,
        )
        assert body.strip() == name
        limits = lab.exec(f"c1/n1/{name}", ["sh", "-c", "ulimit -n"], check=True)
        assert limits.stdout.strip() == "20000"
        # Each node is its own host: the other node's podman does not see it.
        assert [x.name for x in lab.containers("c1/n1")] == [name]
        assert lab.containers("c1/n2") == []
    finally:
        lab.remove_container("c1/n1", name)
    assert lab.containers("c1/n1") == []


def _stand_in(lab: Lab, node: str) -> processes.ProcessRecord:
    token = f"3000.{uuid.uuid4().int % 10**9}"
    ns = lab.node(node).netns
    rec = processes.spawn(
        "glia-standin", ["sleep", token], log=lab.dir / "standin.log", token=token, netns_name=ns
    )
    wait_for("the stand-in in its namespace", lambda: rec.pid in netns.pids(ns))
    return rec


def test_process_supervision_with_a_stand_in(infra: Infra) -> None:
    rec = _stand_in(infra.lab, "c1/n2")
    try:
        assert processes.alive(rec)
        assert os.getsid(rec.pid) == rec.pid  # detached: its own session
        # A record whose token does not match the PID is never signalled.
        impostor = processes.ProcessRecord("x", rec.pid, [], rec.log, token="not-this-one")
        assert processes.stop([impostor]) == []
        assert processes.alive(rec)
        assert processes.stop([rec]) == ["glia-standin"]
        assert not processes.alive(rec)
    finally:
        processes.stop([rec], timeout=1)


def test_cli_exec_status_and_exit_code(infra: Infra) -> None:
    env = infra.lab.cli_env()
    glia = str(bin_dir() / "glia")
    r = subprocess.run(
        [glia, "lab", "exec", "c2/n1", "--", "sh", "-c", "ip -o -4 addr show eth0; exit 7"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 7 and "198.18.2.1/15" in r.stdout, r.stderr
    # A container the node does not have: glia's one-line error, not podman's.
    missing = subprocess.run(
        [glia, "lab", "exec", "c2/n1/glia-nosuch", "--", "true"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert missing.returncode == 1, missing.stderr
    assert "c2/n1: no container 'glia-nosuch'" in missing.stderr, missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    s = subprocess.run(
        [glia, "lab", "status", "-o", "json"], env=env, capture_output=True, text=True, timeout=30
    )
    assert s.returncode == 0, s.stderr
    data = json.loads(s.stdout)
    assert data["up"] is True and data["supervisor"]["alive"] is True and data["problems"] == []
    assert [c["etcd"]["state"] for c in data["clusters"]] == ["running", "running"]
    assert all(c["operator"]["pid"] is None for c in data["clusters"])  # --no-agents


def test_down_removes_everything_and_twice_is_fine() -> None:
    lab = Lab.open("gliad", lab_dir("gliad"), clusters=1, nodes=1)
    try:
        lab.up(agents=False, recreate=True)
        lab.run_container("c1/n1", "glia-t-down", network="none")
        stray = _stand_in(lab, "c1/n1")  # not in state.json: found by its namespace
        report = lab.down()
        assert not report.problems
        assert report.containers == ["c1/n1/glia-t-down"]
        assert "c1-etcd" in report.processes and f"pid {stray.pid}" in report.processes
        assert not processes.alive(stray)
        assert leftovers(lab) == []
        again = lab.down()
        assert again.empty and not again.problems
    finally:
        lab.down()


def test_down_and_up_after_a_crash() -> None:
    lab = Lab.open("gliad", lab_dir("gliad"), clusters=1, nodes=1)
    try:
        lab.up(agents=False, recreate=True)
        lab.run_container("c1/n1", "glia-t-crash", network="none")
        # A crash of the process that held the record: state.json gone.
        lab.topo.state_file.unlink()
        assert not lab.is_up() and lab.leftovers()
        lab.up(agents=False)  # rebuilds over the leftovers
        assert lab.is_up() and lab.containers("c1/n1") == []
        lab.topo.state_file.write_text("{garbage")
        fresh = Lab.open("gliad", lab_dir("gliad"))  # another process, as the CLI would be
        report = fresh.down()
        assert report.problems and "not a lab state file" in report.problems[0]
        assert "c1-etcd" not in report.processes and report.processes  # found by namespace
        assert leftovers(lab) == []
    finally:
        lab.down()


def test_a_directory_without_the_marker_is_left_alone() -> None:
    foreign = Path("/run/glia-notalab-" + uuid.uuid4().hex[:6])
    foreign.mkdir()
    try:
        (foreign / "precious").write_text("keep me")
        report = Lab.open("gliad", foreign, clusters=1, nodes=1).down()
        assert (foreign / "precious").exists()
        assert any("marker" in p for p in report.problems)
    finally:
        (foreign / "precious").unlink()
        foreign.rmdir()


def test_an_agent_that_exits_fails_fast_with_its_log() -> None:
    lab = Lab.open("gliad", lab_dir("gliad"), clusters=1, nodes=1)
    try:
        lab.up(agents=False, recreate=True)
        node = lab.node("c1/n1")
        node.dir.mkdir(parents=True, exist_ok=True)
        node.agent_config.write_text("cluster: [not, a, name]\n")
        started = time.monotonic()
        with pytest.raises(LabError, match=r"c1-n1-agent \(pid \d+\) exited") as err:
            lab.start_agent("c1/n1", wait=True)
        assert time.monotonic() - started < 30
        assert "invalid configuration" in str(err.value)  # the tail of its log
        assert not lab.is_up()  # a dead recorded daemon: not fully up
    finally:
        lab.down()
