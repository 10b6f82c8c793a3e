"""The lab keeps what the user made: a supervisor restarts crashed daemons, ``lab up``
repairs instead of wiping, ``lab restart`` restarts one daemon, ``lab status`` says
what is down.

Uses a lab of its own ("gliad": one cluster of two nodes, with agents), because
its daemons are killed: the session lab stays healthy for the other tests. One
Workload lives for the whole module: ``a`` on c1/n1, ``b`` on c1/n2 and a
Service selecting ``b``; after every test the fixture checks it is intact
(same container IDs and IPs, ``a`` and ``b`` ping each other, the Service's
VIP answers, its ClusterService key is in etcd) and every daemon runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from labhelpers import (
    Workload,
    etcd_keys,
    http,
    lab_dir,
    leftovers,
    ping,
    service_manifest,
    wait_backends,
    wait_for,
)

from glia.kvstore import keys
from glia.lab import processes
from glia.lab.lab import Lab, LabAlreadyUp, bin_dir
from glia.lab.podman import Container
from glia.lab.processes import ProcessRecord

pytestmark = [pytest.mark.e2e, pytest.mark.root]

LAB = "gliad"
# A crashed daemon runs again within this (the supervisor's poll, 0.25 s, plus
# its first backoff, 0.5 s, plus the spawn, with room for a busy machine).
RESTART_BOUND = 5.0
# Longer than the supervisor takes to restart a crash: what is not restarted
# by then, it left down on purpose.
LEFT_DOWN = 2.0
SERVICE = "glia-sv-web"


@dataclass
class World:
    lab: Lab
    a: Container  # c1/n1
    b: Container  # c1/n2, the Service's backend
    vip: str


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


def _records(lab: Lab) -> dict[str, ProcessRecord]:
    st = lab.state()
    assert st is not None
    return dict(st.processes)


def _cluster_service(lab: Lab) -> bool:
    return keys.service("c1", "default", SERVICE) in etcd_keys(lab, "c1", keys.services("c1"))


def _check_intact(w: World) -> None:
    """Containers, traffic, the Service and its ClusterService key, as made."""
    lab = w.lab
    now = {c.name: (c.id, c.ip, c.state) for n in ("c1/n1", "c1/n2") for c in lab.containers(n)}
    assert now == {
        w.a.name: (w.a.id, w.a.ip, "running"),
        w.b.name: (w.b.id, w.b.ip, "running"),
    }
    for src, dst in [(w.a, w.b), (w.b, w.a)]:
        wait_for(f"ping {src.name} -> {dst.name}", lambda s=src, d=dst: ping(lab, s, _ip(d)))
    wait_for("the Service to answer", lambda: http(lab, w.a, w.vip) == w.b.name)
    assert _cluster_service(lab), "the ClusterService key is gone"


def _all_running(lab: Lab) -> None:
    wait_for("every daemon and the supervisor to run", lab.is_up, timeout=RESTART_BOUND)
    lab.wait_agents()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    lab = Lab.open(LAB, lab_dir(LAB), clusters=1, nodes=2)
    try:
        lab.up(recreate=True)
        work = Workload(lab)
        a = work.container("c1/n1", "glia-sv-a", {"app": "sv-a"})
        b = work.container("c1/n2", "glia-sv-b", {"app": "sv-b"})
        (vip,) = work.apply(service_manifest(SERVICE, {"app": "sv-b"}, [{"port": 80}]))
        wait_backends(lab, vip, 80, {_ip(b)})
        w = World(lab, a, b, vip)
        wait_for("the ClusterService key", lambda: _cluster_service(lab))
        _check_intact(w)
        yield w
        work.close()
    finally:
        report = lab.down()
        left = leftovers(lab)
        assert not left and not report.problems, (left, report.problems)


@pytest.fixture
def intact(world: World) -> Iterator[World]:
    """The world, checked intact and fully running after the test."""
    yield world
    _all_running(world.lab)
    _check_intact(world)


def _glia(lab: Lab, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir() / "glia"), *args, "--lab", LAB],
        env={**lab.cli_env(), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _restarted(lab: Lab, old: dict[str, ProcessRecord], names: list[str]) -> dict[str, int]:
    """Wait until each of ``names`` runs under a new PID; the new PIDs."""

    def probe() -> dict[str, int] | None:
        recs = _records(lab)
        new = {n: recs[n] for n in names}
        if all(r.pid != old[n].pid and processes.alive(r) for n, r in new.items()):
            return {n: r.pid for n, r in new.items()}
        return None

    return wait_for(f"{', '.join(names)} running again", probe, timeout=RESTART_BOUND)


def test_lab_run_twice_with_one_name_keeps_the_first_container(intact: World) -> None:
    lab, a = intact.lab, intact.a
    r = _glia(lab, "lab", "run", "c1/n1", "--name", a.name, "-o", "json")
    assert r.returncode == 1
    assert f"a container named {a.name!r} exists already" in r.stderr, r.stderr
    assert a.id[:12] in r.stderr
    # The first one is untouched: same ID and IP, still answering (checked by `intact`).
    assert http(lab, intact.b, _ip(a)) == a.name


def test_a_killed_agent_and_operator_come_back_and_nothing_is_lost(intact: World) -> None:
    lab = intact.lab
    old = _records(lab)
    os.kill(old["c1-n1-agent"].pid, signal.SIGKILL)  # kill -9 from outside
    lab.stop_operator("c1", kill=True)  # the lab's own crash simulation
    killed = time.monotonic()
    _restarted(lab, old, ["c1-n1-agent", "c1-operator"])
    assert time.monotonic() - killed <= RESTART_BOUND
    lab.wait_agents(["c1/n1"])
    log = lab.topo.supervisor_log.read_text()
    for name in ("c1-n1-agent", "c1-operator"):
        assert f"{name} (pid {old[name].pid}) died" in log, log
        assert f"{name}: restarted, pid {_records(lab)[name].pid}" in log, log
    st = lab.status()
    assert st["clusters"][0]["operator"]["restarts"] >= 1
    assert st["clusters"][0]["nodes"][0]["agent"]["restarts"] >= 1
    assert st["problems"] == []


def test_start_agent_after_the_supervisor_restarted_it_returns_the_live_record(
    intact: World,
) -> None:
    lab = intact.lab
    old = _records(lab)
    lab.stop_agent("c1/n2", kill=True)
    new = _restarted(lab, old, ["c1-n2-agent"])["c1-n2-agent"]
    rec = lab.start_agent("c1/n2", wait=True)
    assert rec.pid == new and processes.alive(rec)
    assert _records(lab)["c1-n2-agent"].pid == new


def test_a_daemon_stopped_on_purpose_stays_down_until_started(intact: World) -> None:
    lab = intact.lab
    old = _records(lab)["c1-n2-agent"]
    lab.stop_agent("c1/n2")
    time.sleep(LEFT_DOWN)
    rec = _records(lab)["c1-n2-agent"]
    assert rec.pid == old.pid and rec.stopped and not processes.alive(rec)
    r = _glia(lab, "lab", "status", "-o", "json")
    assert r.returncode == 1
    assert "c1-n2-agent: stopped on purpose" in " ".join(json.loads(r.stdout)["problems"])
    started = lab.start_agent("c1/n2", wait=True)
    assert started.pid != old.pid and not started.stopped


def test_a_paused_etcd_is_not_restarted(intact: World) -> None:
    lab = intact.lab
    etcd = _records(lab)["c1-etcd"]
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        time.sleep(LEFT_DOWN)
        assert processes.paused(etcd)
        assert lab.status()["clusters"][0]["etcd"]["state"] == "paused"
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
    assert _records(lab)["c1-etcd"].pid == etcd.pid and processes.alive(etcd)


def test_status_names_the_dead_and_up_restarts_exactly_them(intact: World) -> None:
    lab = intact.lab
    lab.stop_supervisor()  # so the crashes below stay until `lab up`
    old = _records(lab)
    lab.stop_agent("c1/n2", kill=True)
    lab.stop_etcd("c1", kill=True)
    assert not lab.is_up()

    table = _glia(lab, "lab", "status")
    assert table.returncode == 1
    assert "c1-n2-agent: dead" in table.stderr, table.stderr
    assert f"`glia lab restart c1/n2 --lab {LAB}` or `glia lab up --lab {LAB}`" in table.stderr
    assert f"`glia lab restart c1 --etcd --lab {LAB}`" in table.stderr
    assert "supervisor: not running" in table.stderr
    for fmt in ("json", "YAML"):
        assert _glia(lab, "lab", "status", "-o", fmt).returncode == 1

    up = _glia(lab, "lab", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "starting c1-n2-agent again" in up.stdout and "starting c1-etcd again" in up.stdout
    new = _records(lab)
    assert new["c1-n2-agent"].pid != old["c1-n2-agent"].pid
    assert new["c1-etcd"].pid != old["c1-etcd"].pid
    # Exactly those: the others kept their processes.
    for name in ("c1-n1-agent", "c1-operator"):
        assert new[name].pid == old[name].pid, name
    st = lab.state()
    assert st is not None and st.supervisor is not None and processes.alive(st.supervisor)
    assert _glia(lab, "lab", "status").returncode == 0


def test_up_in_another_shape_is_refused_and_keeps_the_lab(intact: World) -> None:
    other = Lab.open(LAB, lab_dir(LAB), clusters=1, nodes=3)
    with pytest.raises(LabAlreadyUp, match=r"1 cluster\(s\) of 2 node\(s\) with agents"):
        other.up()
    r = _glia(intact.lab, "lab", "up", "--nodes", "3")
    assert r.returncode == 1 and "--recreate" in r.stderr


def test_lab_restart_one_daemon_at_a_time(intact: World) -> None:
    lab = intact.lab
    for args, name in [
        (["c1/n1"], "c1-n1-agent"),
        (["c1", "--operator"], "c1-operator"),
        (["c1", "--etcd"], "c1-etcd"),
    ]:
        old = _records(lab)
        r = _glia(lab, "lab", "restart", *args)
        assert r.returncode == 0, r.stdout + r.stderr
        new = _records(lab)
        assert new[name].pid != old[name].pid and processes.alive(new[name])
        assert not new[name].stopped
        assert {k: v.pid for k, v in new.items() if k != name} == {
            k: v.pid for k, v in old.items() if k != name
        }
        assert f"{name}: running, pid {new[name].pid}" in r.stdout
    lab.wait_agents()
    assert _cluster_service(lab)  # etcd restarted on its data
