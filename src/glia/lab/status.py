"""What ``glia lab status`` reports: per cluster and node, namespaces, daemons, containers.

Called by :meth:`glia.lab.lab.Lab.status`. Reads only: ``state.json`` (given),
``/proc`` for the recorded PIDs, each agent's ``GET /v1/status`` (1 s timeout)
and each node's podman storage. The result is plain data, printed as tables
or JSON by :mod:`glia.cli.lab`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from glia.agent.client import AgentClient, AgentClientError
from glia.lab import netns, processes
from glia.lab.podman import NodePodman, PodmanError
from glia.lab.state import LabState
from glia.lab.topology import ClusterSpec, NodeSpec, Topology

ProcInfo = Callable[[str], dict[str, Any]]


def collect(topo: Topology, st: LabState | None, up: bool) -> dict[str, Any]:
    recs = st.processes if st else {}

    def proc(name: str) -> dict[str, Any]:
        rec = recs.get(name)
        if rec is None:
            return {"pid": None, "alive": False, "log": None}
        return {"pid": rec.pid, "alive": processes.alive(rec), "log": rec.log}

    return {
        "lab": topo.name,
        "dir": str(topo.dir),
        "exists": st is not None,
        "up": up,
        "complete": bool(st and st.complete),
        "agents": bool(st and st.agents),
        "underlay_netns": topo.underlay_netns,
        "clusters": [_cluster(c, proc) for c in topo.clusters],
    }


def _cluster(c: ClusterSpec, proc: ProcInfo) -> dict[str, Any]:
    return {
        "name": c.name,
        "id": c.id,
        "pod_pool": str(c.pod_pool),
        "service_cidr": str(c.service_cidr),
        "etcd": {**proc(c.etcd_process), "endpoint": c.etcd_endpoint, "netns": c.etcd_netns},
        "operator": proc(c.operator_process),
        "nodes": [_node(n, proc) for n in c.nodes],
    }


def _node(n: NodeSpec, proc: ProcInfo) -> dict[str, Any]:
    agent = proc(n.agent_process)
    agent["healthy"] = agent_healthy(n) if agent["alive"] else False
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
        "agent": agent,
        "containers": containers,
    }


def agent_healthy(node: NodeSpec) -> bool:
    try:
        return AgentClient(str(node.socket), timeout=1.0).status().get("healthy") is True
    except AgentClientError:
        return False
