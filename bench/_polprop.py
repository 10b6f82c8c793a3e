"""Policy propagation (issue 9): how long one policy change takes to be programmed on every node.

Called by bench/policy.py (``--only propagation``, and in its full run); the lab
handling (open, recreate, apply through an agent, tear down) is bench/mesh.py's,
imported. The lab ``gliabpp`` is one cluster of four nodes: a policy governs the
endpoints of the cluster whose etcd holds it (docs/policy.md), so one write
reaches every node of one cluster and no other; four nodes of one cluster is
the largest set of nodes a single change must reach in a lab this machine's two
CPUs carry well (two clusters of two nodes would give two).

Each node runs one container of each role (``web``, ``api``, ``db``; busybox
httpd), so every node has the three subjects the changed policy selects. A
background of policies (100 by default; half select the bench roles, the others
apps no container has) is stored first. Then the policy ``polprop`` (every
bench container's ingress from ``app=pp-api`` on one TCP port) is stored again
and again, each time with a new port. Per change:

- t0: the moment ``POST /v1/config/apply`` (what ``glia apply -f`` calls)
  returned (the write is in etcd);
- per node, the end of the agent's flush that programmed it: its own
  ``policy.last_flush.at`` (``glia status -o json``; wall clock, the same
  machine's), taken once that flush ended after the write began and the node's
  policy map (``GET /v1/bpf/policy``, read from the kernel) holds the new port
  for a web container and no longer the old one, so the figure is never that of
  a flush that programmed something else.

The pure parts (manifests, the choice of a flush, the figures) are separate
from the lab's and tested in tests/unit/test_bench_polprop.py.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mesh  # bench/mesh.py: its lab handling, imported, not copied
from _common import BenchError, log, percentile, wait_for
from glia.agent.client import AgentClient, AgentClientError
from glia.lab.lab import Lab
from glia.model.identity import MIN_LOCAL

LAB = "gliabpp"  # bench/mesh.py's convention: gliab + what it measures
CONTAINER = "gliabpp-"
CLUSTERS, NODES = 1, 4
ROLES = ("web", "api", "db")
NAMESPACE = "default"
BENCH_LABEL = ("bench", "polprop")  # every bench container carries it
PROP_NAME = "polprop"
PEER_ROLE = "api"  # the changed policy's allowed peer
PORT_BASE = 20000  # the changed policy's ports: PORT_BASE + change; the background's are below
BG_PORTS = (80, 443, 5432, 6379, 8080, 8443, 9090)
APPLY_NODE = "c1/n1"  # where the writes go through (as `glia apply --node`)
APPLY_CHUNK = 50  # policies per write: at most 128 fit one etcd transaction (docs/policy.md)
FIGURES = ("latency_ms", "compute_ms", "program_ms")  # the agents' own, per flush


# --- manifests (pure) ------------------------------------------------------------------


def role_labels(role: str) -> dict[str, str]:
    return {"app": f"pp-{role}", BENCH_LABEL[0]: BENCH_LABEL[1]}


def _cnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def _ports(ports: Sequence[int]) -> list[dict[str, Any]]:
    return [{"ports": [{"port": str(p), "protocol": "TCP"} for p in ports]}]


def prop_manifest(port: int) -> dict[str, Any]:
    """The changed policy: every bench container's ingress from app=pp-api on ``port``."""
    return _cnp(
        PROP_NAME,
        {
            "endpointSelector": {"matchLabels": dict([BENCH_LABEL])},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": f"pp-{PEER_ROLE}"}}],
                    "toPorts": _ports([port]),
                }
            ],
        },
    )


def background_manifests(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """``n`` policies: even ones select a bench role (ingress from another role, or
    from the cluster, on one or two ports below :data:`PORT_BASE`; some egress too),
    odd ones apps no container has (other teams' policies the engine still holds)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            subject = {"app": f"pp-{ROLES[(i // 2) % len(ROLES)]}"}
            peer: dict[str, Any] = {"matchLabels": {"app": f"pp-{rnd.choice(ROLES)}"}}
        else:
            subject = {"app": f"other-{i}"}
            peer = {"matchLabels": {"app": f"other-{rnd.randrange(n)}"}}
        ports = sorted(set(rnd.sample(BG_PORTS, rnd.choice((1, 2)))))
        rule: dict[str, Any] = {"toPorts": _ports(ports)}
        if rnd.random() < 0.1:
            rule["fromEntities"] = ["cluster"]
        else:
            rule["fromEndpoints"] = [peer]
        spec: dict[str, Any] = {"endpointSelector": {"matchLabels": subject}, "ingress": [rule]}
        if rnd.random() < 0.2:
            spec["egress"] = [{"toEndpoints": [peer], "toPorts": _ports([rnd.choice(BG_PORTS)])}]
        out.append(_cnp(f"bg-{i:03d}", spec))
    return out


# --- one change's figures (pure) ------------------------------------------------------------


def flush_after(last_flush: Mapping[str, Any], since: float) -> bool:
    """Whether the agent's last flush (``policy.last_flush`` of its status) ended after
    ``since`` (wall clock) and wrote something: a candidate for the change made then."""
    return float(last_flush.get("at", 0.0)) > since and int(last_flush.get("written", 0)) > 0


def rows_hold_port(rows: Sequence[Mapping[str, Any]], port: int, peer_label: str) -> bool:
    """Whether ``GET /v1/bpf/policy`` rows allow ingress TCP ``port`` from a peer with
    ``peer_label`` (``k=v``), the change's entry as the kernel's map holds it."""
    return any(
        r.get("direction") == "ingress"
        and r.get("proto") == "TCP"
        and list(r.get("ports", ())) == [port, port]
        and r.get("action") == "allow"
        and peer_label in r.get("peer_labels", ())
        for r in rows
    )


@dataclass(frozen=True)
class Change:
    """One change: when the write began and returned (wall clock), and per node the
    flush that programmed it (``policy.last_flush``), None if it timed out."""

    port: int
    write_start: float
    write_end: float
    flushes: Mapping[str, Mapping[str, Any] | None]


def change_ms(c: Change, timeout_s: float) -> dict[str, float]:
    """Per node: ms from the write's return to the end of its flush (the timeout for
    a node that never showed it: a lower bound that weighs on the percentiles)."""
    return {
        node: timeout_s * 1000 if f is None else (float(f["at"]) - c.write_end) * 1000
        for node, f in c.flushes.items()
    }


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    stats = {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }
    return {"n": len(values), **{k: round(v, 2) for k, v in stats.items()}}


def figures(changes: Sequence[Change], timeout_s: float) -> dict[str, Any]:
    """The changes' figures: every node (the slowest node of each change), each node
    alone, from the write's start, the write itself, and the agents' own flush
    figures over every (change, node)."""
    if not changes:
        raise ValueError("no changes")
    per = [change_ms(c, timeout_s) for c in changes]
    every = [max(p.values()) for p in per]
    from_start = [
        m + (c.write_end - c.write_start) * 1000 for c, m in zip(changes, every, strict=True)
    ]
    nodes = sorted({n for c in changes for n in c.flushes})
    agent: dict[str, Any] = {}
    flushes = [f for c in changes for f in c.flushes.values() if f is not None]
    for key in FIGURES:
        values = [float(f[key]) for f in flushes]
        agent[key] = _stats(values) if values else None
    # From the write's return to the start of the agent's handling of the change (its
    # flush's latency counts from the first event seen): the etcd watch, the
    # reflector. Negative when the agent saw the change before the applying agent's
    # answer arrived.
    notice = [
        (float(f["at"]) - c.write_end) * 1000 - float(f["latency_ms"])
        for c in changes
        for f in c.flushes.values()
        if f is not None
    ]
    return {
        "changes": len(changes),
        "nodes": nodes,
        "timed_out": sum(1 for c in changes if any(f is None for f in c.flushes.values())),
        "every_node_ms": _stats(every),
        "per_node_ms": {n: _stats([p[n] for p in per if n in p]) for n in nodes},
        "from_write_start_ms": _stats(from_start),
        "write_ms": _stats([(c.write_end - c.write_start) * 1000 for c in changes]),
        "agent_flush_ms": agent,
        "agent_saw_change_ms": _stats(notice) if notice else None,
        "subjects_per_flush": sorted({int(f["subjects"]) for f in flushes}),
        "samples_ms": [round(v, 2) for v in every],
    }


# --- the lab -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PropParams:
    changes: int = 100
    background: int = 100
    warmup: int = 3  # changes made and checked, not counted
    gap_s: tuple[float, float] = (0.05, 0.15)  # pause after a change is everywhere (random)
    change_timeout: float = 10.0
    poll_s: float = 0.01  # status polls of the nodes still waiting


def _apply(lab: Lab, docs: list[dict[str, Any]]) -> None:
    """Store ``docs`` in one transaction through the agent of :data:`APPLY_NODE`, as
    ``glia apply -f`` does (``POST /v1/config/apply``); returns once etcd has them."""
    for i in range(0, len(docs), APPLY_CHUNK):
        try:
            lab.agent(APPLY_NODE).config_apply(docs[i : i + APPLY_CHUNK], "bench/policy.py")
        except AgentClientError as e:
            raise BenchError(f"glia apply through {APPLY_NODE}: {e}") from None


def _status_flush(client: AgentClient) -> dict[str, Any]:
    flush: dict[str, Any] = client.status()["policy"]["last_flush"]
    return flush


def _wait_one(
    clients: Mapping[str, AgentClient], web_ip: Mapping[str, str], port: int, old: int,
    since: float, deadline: float, poll_s: float,
) -> dict[str, Mapping[str, Any] | None]:  # fmt: skip
    """Per node, the flush that programmed ``port`` (in place of ``old``), or None."""
    peer = f"app=pp-{PEER_ROLE}"
    pending = set(clients)
    got: dict[str, Mapping[str, Any] | None] = {n: None for n in clients}
    while pending and time.time() < deadline:
        for node in sorted(pending):
            flush = _status_flush(clients[node])
            if not flush_after(flush, since):
                continue
            rows = clients[node].bpf_policy(web_ip[node])["rows"]
            if not rows_hold_port(rows, port, peer) or rows_hold_port(rows, old, peer):
                continue  # a flush of something else, or ours not yet in the map
            # The map write happens inside the flush, before its figures are set.
            again = _status_flush(clients[node])
            got[node] = again if float(again["at"]) >= float(flush["at"]) else flush
            pending.discard(node)
        if pending:
            time.sleep(poll_s)
    return got


def start_containers(lab: Lab) -> dict[str, dict[str, str]]:
    """One container per role on every node; per node, role -> IP."""
    out: dict[str, dict[str, str]] = {}
    for n in lab.topo.nodes:
        out[n.ref] = {}
        for role in ROLES:
            name = f"{CONTAINER}{role}-{n.cluster}{n.name}"
            c = lab.run_container(n.ref, name, labels=role_labels(role))
            if not c.ip:
                raise BenchError(f"container {name} has no IP")
            out[n.ref][role] = c.ip
    return out


def endpoints_ready(lab: Lab, ips: Mapping[str, Mapping[str, str]]) -> Callable[[], bool]:
    """Every container's endpoint has its labels' identity on its node."""

    def probe() -> bool:
        for node, by_role in ips.items():
            eps = {e.get("ip"): e for e in lab.agent(node).endpoints()}
            for ip in by_role.values():
                ep = eps.get(ip)
                labels = (ep or {}).get("labels") or {}
                if ep is None or int(ep.get("identity", 0)) < MIN_LOCAL:
                    return False
                if labels.get(BENCH_LABEL[0]) != BENCH_LABEL[1]:
                    return False
        return True

    return probe


def run(pp: PropParams) -> dict[str, Any]:
    """Bring up lab ``gliabpp``, make the changes, tear it down (also on failure)."""
    lab = Lab.open(
        LAB, mesh._lab_dir(LAB), clusters=CLUSTERS, nodes=NODES, reporter=mesh.Reporter()
    )
    try:
        lab.up(recreate=True)
        log(f"propagation: {len(ROLES)} containers on each of {NODES} nodes")
        ips = start_containers(lab)
        wait_for("every bench endpoint with its labels", endpoints_ready(lab, ips), 120, every=0.5)
        clients = {n: lab.agent(n, timeout=10) for n in ips}
        web_ip = {n: by_role["web"] for n, by_role in ips.items()}
        log(f"propagation: {pp.background} background policies")
        bg = background_manifests(pp.background)
        _apply(lab, bg)
        start = time.time()
        _apply(lab, [prop_manifest(PORT_BASE)])
        first = _wait_one(clients, web_ip, PORT_BASE, -1, start, start + 60, 0.05)
        if any(f is None for f in first.values()):
            raise BenchError(f"the first policy was not programmed everywhere: {first}")
        for node, client in clients.items():
            st = client.status()["policy"]
            if st["policies"] != pp.background + 1 or st["map_errors"]:
                raise BenchError(f"{node}: policy status {st}")
        subjects = {n: c.status()["policy"]["subjects"] for n, c in clients.items()}
        entries = {n: c.status()["policy"]["entries"] for n, c in clients.items()}
        log(f"propagation: {pp.changes} changes (+{pp.warmup} warm-up), one at a time")
        rnd = random.Random(2)
        changes: list[Change] = []
        old = PORT_BASE
        for i in range(pp.warmup + pp.changes):
            port = PORT_BASE + 1 + i
            t0 = time.time()
            _apply(lab, [prop_manifest(port)])
            t1 = time.time()
            flushes = _wait_one(clients, web_ip, port, old, t0, t1 + pp.change_timeout, pp.poll_s)
            if i >= pp.warmup:
                changes.append(Change(port, t0, t1, flushes))
            old = port
            time.sleep(rnd.uniform(*pp.gap_s))
        out = figures(changes, pp.change_timeout)
        got = out["every_node_ms"]
        log(f"propagation: every node p50 {got['p50']} ms, p99 {got['p99']} ms, max {got['max']}")
        return {
            "lab": {"name": LAB, "clusters": CLUSTERS, "nodes": NODES},
            "containers_per_node": len(ROLES),
            "background_policies": pp.background,
            "subjects": subjects,
            "entries": entries,
            "params": {
                "changes": pp.changes,
                "warmup": pp.warmup,
                "gap_s": list(pp.gap_s),
                "change_timeout_s": pp.change_timeout,
                "poll_s": pp.poll_s,
            },
            **out,
        }
    finally:
        mesh._down(lab)
