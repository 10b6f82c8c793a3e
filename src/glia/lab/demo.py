"""``glia lab demo`` (and ``make demo``): two clusters in a mesh, pods and a global Service.

Called by :mod:`glia.cli.lab`. It uses its own lab name (``gliademo``), so it
never disturbs a lab someone already has up: bring up two clusters of two
nodes, each with its own etcd, wired into a ClusterMesh (every agent reads the
other cluster's etcd read-only); start a container on three nodes and show
ping and HTTP between them, within cluster 1 and across the clusters both ways
(``c2/n1`` to ``c1/n1``: the same node name in both clusters); print what
cluster 1's agent sees (``glia clustermesh status``, ``status``, ``node list``,
``bpf ipcache list`` with the other cluster's pods and nodes); then a global
Service with backends in both clusters, affinity local, failover to the other
cluster and back (:mod:`glia.lab.demo_mesh`); a network policy by identity
across the clusters, traced, enforced, seen in ``glia monitor`` and removed
(:mod:`glia.lab.demo_policy`); tear down. Exit code 0 only if every step
worked.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from glia.lab import demo_mesh, demo_policy
from glia.lab.demo_steps import Steps, show_cli, wait_until
from glia.lab.lab import Lab, LabError
from glia.lab.podman import Container

DEMO_LAB = "gliademo"
REACH_TIMEOUT = 20.0  # seconds for a new endpoint to become reachable from another node
MESH_TIMEOUT = 30.0  # seconds for every agent to sync the other cluster
CLI_TABLES: tuple[tuple[str, ...], ...] = (
    ("clustermesh", "status"),
    ("status",),
    ("node", "list"),
    ("bpf", "ipcache", "list"),
)


def run(console: Console, *, name: str = DEMO_LAB, keep: bool = False) -> int:
    started = time.monotonic()
    step = Steps(console)
    failures: list[str] = []
    lab = Lab.open(name, clusters=2, nodes=2, reporter=step)
    try:
        lab.up(recreate=True)
        step("the mesh: every agent connected to the other cluster's etcd (read-only)")
        if wait_until(lambda: _meshed(lab), MESH_TIMEOUT) is None:
            failures.append(f"the agents did not sync the other cluster in {MESH_TIMEOUT:.0f} s")
        step("containers on both clusters")
        web1 = lab.run_container("c1/n1", "glia-web1", labels={"app": "web"})
        web2 = lab.run_container("c2/n1", "glia-web2", labels={"app": "web"})
        client = lab.run_container("c1/n2", "glia-client", labels={"app": "client"})
        _show_containers(console, [web1, web2, client])
        step("traffic: ping and HTTP from inside containers, within and across clusters")
        for src, dst in ((client, web1), (client, web2), (web2, web1)):
            failures += _talk(lab, console, src, dst)
        for args in CLI_TABLES:
            failures += show_cli(lab, console, [*args, "--node", "c1/n1"])
        failures += demo_mesh.run(lab, console, client)
        failures += demo_policy.run(lab, console, web1, web2, client)
    except LabError as e:
        failures.append(str(e))
        console.print(Text.assemble(("error: ", "bold red"), str(e)))
    finally:
        if keep:
            console.print(f"the demo lab stays up: GLIA_LAB_NAME={name} glia lab status")
        else:
            step(f"tearing down lab {name!r}")
            lab.down()
    took = time.monotonic() - started
    if failures:
        console.print(Text(f"demo FAILED after {took:.0f} s:", style="bold red"))
        for f in failures:
            console.print(Text("  - " + f.splitlines()[0]))
        return 1
    console.print(Text(f"demo passed in {took:.0f} s", style="bold green"))
    return 0


def _meshed(lab: Lab) -> bool:
    """Whether every agent has every other cluster synced."""
    for n in lab.topo.nodes:
        clusters = lab.agent(n.ref).clustermesh()["clusters"]
        if len(clusters) != len(lab.topo.clusters) - 1:
            return False
        if any(c.get("state") != "synced" for c in clusters):
            return False
    return True


def _show_containers(console: Console, containers: list[Container]) -> None:
    table = Table("container", "node", "IP", "labels")
    for c in containers:
        labels = ",".join(f"{k}={v}" for k, v in sorted(c.labels.items()))
        table.add_row(c.name, c.node, c.ip or "-", labels)
    console.print(table)


def _talk(lab: Lab, console: Console, src: Container, dst: Container) -> list[str]:
    where = f"{src.name} ({src.node}) -> {dst.name} ({dst.node}, {dst.ip})"
    if not dst.ip:
        return [f"{where}: {dst.name} has no IP"]
    target = f"{src.node}/{src.name}"
    deadline = time.monotonic() + REACH_TIMEOUT
    # A new endpoint needs its identity and the other node's ipcache entry first.
    while lab.exec(target, ["ping", "-c", "1", "-W", "1", dst.ip]).returncode != 0:
        if time.monotonic() >= deadline:
            return [f"{where}: ping gets no answer after {REACH_TIMEOUT:.0f} s"]
    ping = lab.exec(target, ["ping", "-c", "3", "-i", "0.2", "-W", "1", dst.ip])
    summary = [ln for ln in ping.stdout.splitlines() if "packets transmitted" in ln or "min/" in ln]
    # `timeout`, not wget's -T: Debian's static busybox 1.35 wget segfaults with -T.
    http = lab.exec(target, ["timeout", "3", "wget", "-q", "-O", "-", f"http://{dst.ip}/"])
    body = http.stdout.strip()
    ok = ping.returncode == 0 and http.returncode == 0 and body == dst.name
    mark = ("ok  ", "bold green") if ok else ("FAIL", "bold red")
    console.print(Text.assemble(mark, f" {where}"))
    for line in summary:
        console.print(Text(f"       ping: {line}", style="dim"))
    console.print(Text(f"       http: GET / -> {body or http.stderr.strip()!r}", style="dim"))
    return [] if ok else [f"{where}: ping rc={ping.returncode}, http {body or http.stderr!r}"]
