"""What ``glia lab status`` reports: per cluster and node, namespaces, daemons, containers.

Called by :meth:`glia.lab.lab.Lab.status`. Reads only: ``state.json`` (given),
``/proc`` for the recorded PIDs, each agent's ``GET /v1/status`` (1 s timeout)
and each node's podman storage. The result is plain data, printed as tables,
JSON or YAML by :mod:`glia.cli.lab`.

Each daemon has a ``state`` (running, paused, stopped, dead, missing), the
supervisor's counts (restarts, when it was last found dead) and, when it is
not running, a line in ``problems`` saying what to run:
``c1-n2-agent: dead (exited 3 s ago); run `glia lab restart c1/n2` or
`glia lab up```. :func:`daemon_state` and :func:`problem` are pure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from glia.agent.client import AgentClient, AgentClientError
from glia.lab import netns, processes, supervision
from glia.lab.podman import NodePodman, PodmanError, podman_env
from glia.lab.state import LabState
from glia.lab.supervision import Daemon, Watch
from glia.lab.topology import (
    DEFAULT_LAB,
    WORLD_IP,
    WORLD_PROCESS,
    WORLD_UNDERLAY_IP,
    ClusterSpec,
    NodeSpec,
    Topology,
)

ProcInfo = Callable[[str], dict[str, Any]]

RUNNING, PAUSED, STOPPED, DEAD, MISSING = "running", "paused", "stopped", "dead", "missing"


def collect(
    topo: Topology, st: LabState | None, up: bool, now: float | None = None
) -> dict[str, Any]:
    now = time.time() if now is None else now
    recs = st.processes if st else {}
    watches = st.watch if st else {}
    sup = st.supervisor if st else None
    sup_alive = sup is not None and processes.alive(sup)
    expected = {d.process for d in supervision.daemons(topo, agents=bool(st and st.agents))}
    every = {d.process: d for d in supervision.daemons(topo)}
    problems: list[str] = []

    def proc(name: str) -> dict[str, Any]:
        rec = recs.get(name)
        info = _proc(rec, watches.get(name), name in expected)
        if st is not None and (name in expected or rec is not None):
            line = problem(every[name], info, topo.name, supervised=sup_alive, now=now)
            if line:
                problems.append(line)
        return info

    clusters = [_cluster(c, proc, topo.host_setup_node) for c in topo.clusters]
    if st is not None:
        problems += [
            f"namespace {ns} is missing; `glia lab up --recreate` rebuilds the lab "
            "(removing its containers)"
            for ns in topo.netns_names
            if not netns.exists(ns)
        ]
        if st.complete and not sup_alive:
            problems.append(
                "supervisor: not running, so a daemon that dies stays dead; "
                f"run `{_up_command(topo.name)}`"
            )
        elif not st.complete:
            problems.append(f"the lab was not built completely; run `{_up_command(topo.name)}`")
    else:
        problems.append(f"lab {topo.name!r} is not up; `{_up_command(topo.name)}` builds it")
    world = _world(topo, recs.get(WORLD_PROCESS))
    if st is not None and st.complete and world["state"] != RUNNING:
        problems.append(
            f"{WORLD_PROCESS}: {world['state']} (the world's HTTP server, not supervised); "
            f"run `{_up_command(topo.name)}`"
        )
    return {
        "lab": topo.name,
        "dir": str(topo.dir),
        "exists": st is not None,
        "up": up,
        "complete": bool(st and st.complete),
        "agents": bool(st and st.agents),
        "underlay_netns": topo.underlay_netns,
        "world": world,
        "supervisor": {
            "pid": sup.pid if sup else None,
            "alive": sup_alive,
            "log": sup.log if sup else None,
        },
        "clusters": clusters,
        "problems": problems,
    }


def _proc(
    rec: processes.ProcessRecord | None, watch: Watch | None, expected: bool
) -> dict[str, Any]:
    w = watch or Watch()
    info: dict[str, Any] = {
        "pid": rec.pid if rec else None,
        "alive": False,
        "state": MISSING if expected else None,
        "log": rec.log if rec else None,
        "started": rec.started if rec else None,
        "restarts": w.restarts,
        "last_restart": w.last_restart,
        "last_exit": w.last_exit,
        "down_since": w.down_since,
        "retry_at": w.retry_at,
        "last_error": w.last_error,
    }
    if rec is not None:
        alive = processes.alive(rec)
        info["alive"] = alive
        info["state"] = daemon_state(
            alive=alive, paused=alive and processes.paused(rec), stopped=rec.stopped
        )
        if not alive:
            # Without a supervisor to note the death, its log's last write is the
            # best sign of when it stopped.
            with contextlib.suppress(OSError):
                info["log_written"] = os.stat(rec.log).st_mtime
    return info


def daemon_state(*, alive: bool, paused: bool, stopped: bool) -> str:
    if alive:
        return PAUSED if paused else RUNNING
    return STOPPED if stopped else DEAD


def problem(
    d: Daemon, info: dict[str, Any], lab: str, *, supervised: bool, now: float
) -> str | None:
    """The line ``glia lab status`` shows for a daemon that is not running (None if it is)."""
    state = info.get("state")
    if state in (RUNNING, PAUSED, None):
        return None
    fix = f"run `{d.restart_command(lab, DEFAULT_LAB)}` or `{_up_command(lab)}`"
    if state == MISSING:
        return f"{d.process}: never started; {fix}"
    if state == STOPPED:
        return f"{d.process}: stopped on purpose; {fix} to start it"
    down, logged = info.get("down_since"), info.get("log_written")
    if isinstance(down, int | float):
        when = f" (exited {_ago(now - down)} ago)"
    elif isinstance(logged, int | float):
        when = f" (last log line {_ago(now - logged)} ago)"
    else:
        when = ""
    retry = info.get("retry_at")
    if supervised and isinstance(retry, int | float):
        due = f"in {_ago(retry - now)}" if retry > now else "now"
        err = f" (last try: {info['last_error']})" if info.get("last_error") else ""
        return f"{d.process}: dead{when}; the supervisor restarts it {due}{err}, or {fix}"
    return f"{d.process}: dead{when}; {fix}"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _up_command(lab: str) -> str:
    return "glia lab up" if lab == DEFAULT_LAB else f"glia lab up --lab {lab}"


def _world(topo: Topology, rec: processes.ProcessRecord | None) -> dict[str, Any]:
    """The world namespace and its HTTP server (not supervised: `glia lab up` restarts it)."""
    alive = rec is not None and processes.alive(rec)
    return {
        "netns": topo.world_netns,
        "netns_exists": netns.exists(topo.world_netns),
        "ip": str(WORLD_IP),
        "underlay_ip": str(WORLD_UNDERLAY_IP),
        "url": topo.world_url,
        "pid": rec.pid if rec else None,
        "state": RUNNING if alive else (DEAD if rec is not None else MISSING),
        "log": rec.log if rec else None,
    }


def _cluster(c: ClusterSpec, proc: ProcInfo, by_docs: NodeSpec) -> dict[str, Any]:
    return {
        "name": c.name,
        "id": c.id,
        "pod_pool": str(c.pod_pool),
        "service_cidr": str(c.service_cidr),
        "etcd": {**proc(c.etcd_process), "endpoint": c.etcd_endpoint, "netns": c.etcd_netns},
        "operator": proc(c.operator_process),
        "nodes": [_node(n, proc, n == by_docs) for n in c.nodes],
    }


def _node(n: NodeSpec, proc: ProcInfo, by_docs: bool) -> dict[str, Any]:
    agent = proc(n.agent_process)
    agent["healthy"] = agent_healthy(n) if agent["state"] == RUNNING else False
    try:
        containers = [dataclasses.asdict(x) for x in NodePodman(n).containers()]
    except PodmanError as e:
        containers = [{"error": str(e)}]
    return {
        "name": n.name,
        "ref": n.ref,
        "netns": n.netns,
        "netns_exists": netns.exists(n.netns),
        "ip": str(n.ip),
        "socket": str(n.socket),
        "bpf_pin_dir": str(n.bpf_pin_dir),
        # What podman run by hand on this node needs (README: the lab), beside nsenter --net
        "podman_env": podman_env(n),
        # "host": set up as README's host section tells (glia.lab.hostsetup); "lab": by the lab
        "setup": "host" if by_docs else "lab",
        "agent": agent,
        "containers": containers,
    }


def agent_healthy(node: NodeSpec) -> bool:
    try:
        return AgentClient(str(node.socket), timeout=1.0).status().get("healthy") is True
    except AgentClientError:
        return False
