"""The Service part of ``glia lab demo``: load balancing over backends on both nodes.

Called by :mod:`glia.lab.demo` once its lab is up and its client container
runs. It starts three backends (one on each node, a third on the client's
node), applies a Service over them with ``glia apply -f -`` (fast health
checks), shows ``glia service list`` and ``glia bpf lb list``, sends requests
from the client to the ClusterIP and counts the answers per backend; then
stops one backend's server (inside its container, which keeps running), shows
it withdrawn from both nodes' maps and the traffic avoiding it, and deletes
the Service. :func:`show_cli` runs and prints a ``glia`` command (the demo's
other tables use it too). Every function returns the failures it saw.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from glia.agent.client import AgentClientError
from glia.datapath.drop import Reason
from glia.lab.lab import Lab, bin_dir
from glia.lab.podman import Container

SERVICE = "shop"
APP = {"app": "shop"}
NODES = ("c1/n1", "c1/n2")
REQUESTS = 90
INTERVAL, FAILURES = 0.5, 2  # health checks: withdrawn after about a second
WAIT = 20.0  # seconds for the maps to follow a change
FAILED = "(no answer)"


def manifest() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE,
            "annotations": {
                "service.glia.io/health-check-interval": str(INTERVAL),
                "service.glia.io/health-check-failure-threshold": str(FAILURES),
            },
        },
        "spec": {"selector": APP, "ports": [{"name": "http", "port": 80}]},
    }


def backend_command(name: str) -> list[str]:
    """httpd answering ``name``, not as PID 1: its server can stop while the container runs."""
    script = (
        f"mkdir -p /www && echo {name} > /www/index.html && httpd -p 80 -h /www"
        " && while true; do sleep 1; done"
    )
    return ["sh", "-c", script]


def run(lab: Lab, console: Console, client: Container) -> list[str]:
    step = _Steps(console)
    step("a Service over three backends on both nodes")
    backends = [
        lab.run_container(
            node, f"glia-shop{i}", labels=APP, command=backend_command(f"glia-shop{i}")
        )
        for i, node in enumerate((NODES[0], NODES[1], NODES[1]), 1)
    ]
    text = yaml.safe_dump(manifest(), sort_keys=False)
    console.print(Text(text.rstrip(), style="dim"))
    failures = show_cli(lab, console, ["apply", "-f", "-", "--node", NODES[0]], stdin=text)
    if failures:
        return failures
    vip = str(lab.agent(NODES[0]).config_services(name=SERVICE)[0]["spec"]["clusterIP"])
    ips = {str(b.ip) for b in backends}
    if not _wait_slotted(lab, vip, ips):
        return [f"the maps of both nodes did not get the backends {sorted(ips)} in {WAIT:.0f} s"]
    failures += show_cli(lab, console, ["service", "list", "--node", NODES[1]])
    for node in NODES:
        failures += show_cli(lab, console, ["bpf", "lb", "list", "--node", node])

    step(f"{REQUESTS} requests from {client.name} ({client.node}) to http://{vip}/")
    xlated = _socket_xlated(lab, client.node)
    counts = _requests(lab, client, vip)
    _show_counts(console, backends, counts)
    if counts[FAILED] or any(counts[b.name] == 0 for b in backends):
        failures.append(f"requests did not reach every backend: {dict(counts)}")
    xlated = _socket_xlated(lab, client.node) - xlated
    console.print(
        Text(
            f"    {xlated} of them balanced at connect() (socket LB: each socket pointed at "
            "its backend, no per-packet NAT; `glia bpf metrics`, sock-xlate)",
            style="dim",
        )
    )
    if xlated < REQUESTS:
        failures.append(f"socket LB translated {xlated} of {REQUESTS} connections")

    sick = backends[0]
    step(f"stopping the server inside {sick.name} ({sick.node}); the container keeps running")
    stopped = time.monotonic()
    lab.exec(f"{sick.node}/{sick.name}", ["killall", "httpd"], check=True)
    if not _wait_slotted(lab, vip, ips - {str(sick.ip)}):
        return [*failures, f"{sick.name} was not withdrawn from both nodes in {WAIT:.0f} s"]
    console.print(
        Text(
            f"    withdrawn from both nodes' maps {time.monotonic() - stopped:.1f} s after "
            f"`killall httpd` (health checks every {INTERVAL} s, {FAILURES} failures)",
            style="dim",
        )
    )
    failures += show_cli(lab, console, ["service", "list", "--node", NODES[1]])
    step(f"{REQUESTS} requests again: none goes to {sick.name}")
    counts = _requests(lab, client, vip)
    _show_counts(console, backends, counts)
    healthy = [b for b in backends if b is not sick]
    if counts[FAILED] or counts[sick.name] or any(counts[b.name] == 0 for b in healthy):
        failures.append(f"traffic did not avoid {sick.name}: {dict(counts)}")

    step("deleting the Service: its map entries go on both nodes")
    failures += show_cli(lab, console, ["delete", "-f", "-", "--node", NODES[0]], stdin=text)
    if not _wait_slotted(lab, vip, None):
        failures.append(f"{vip} stayed in the maps after the delete")
    failures += show_cli(lab, console, ["bpf", "lb", "list", "--node", NODES[1]])
    return failures


class _Steps:
    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, text: str) -> None:
        self.console.print(Text.assemble(("==> ", "bold cyan"), text))


def _slotted(lab: Lab, node: str, vip: str) -> set[str] | None:
    """IPs holding a slot of ``vip:80`` on ``node``; None when the frontend is absent."""
    for row in lab.agent(node).bpf_lb():
        if row["vip"] == vip and row["port"] == 80:
            return {b["ip"] for b in row["backends"] if b["slot"] is not None}
    return None


def _wait_slotted(lab: Lab, vip: str, ips: set[str] | None) -> bool:
    """Until both nodes give exactly ``ips`` slots (``None``: no such frontend)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            if all(_slotted(lab, node, vip) == ips for node in NODES):
                return True
        except AgentClientError:
            pass  # an agent busy restarting: ask again
        time.sleep(0.05)
    return False


def _requests(lab: Lab, client: Container, vip: str) -> Counter[str]:
    # One exec for all requests; `timeout`, not wget's -T (it segfaults in Debian's busybox).
    loop = (
        f"for i in $(seq {REQUESTS}); do"
        f" timeout 3 wget -q -O - http://{vip}/ || echo '{FAILED}'; done"
    )
    r = lab.exec(f"{client.node}/{client.name}", ["sh", "-c", loop], timeout=REQUESTS * 3 + 30)
    return Counter(line.strip() for line in r.stdout.splitlines() if line.strip())


def _socket_xlated(lab: Lab, node: str) -> int:
    """connect()/sendmsg() calls the node's socket LB pointed at a backend so far."""
    return sum(
        int(m["packets"])
        for m in lab.agent(node).bpf_metrics()
        if m["reason"] == Reason.SOCK_XLATE.name
    )


def _show_counts(console: Console, backends: list[Container], counts: Counter[str]) -> None:
    table = Table("backend", "node", "IP", "requests")
    for b in backends:
        table.add_row(b.name, b.node, b.ip or "-", str(counts[b.name]))
    if counts[FAILED]:
        table.add_row(FAILED, "", "", str(counts[FAILED]))
    console.print(table)


def show_cli(lab: Lab, console: Console, args: list[str], stdin: str | None = None) -> list[str]:
    """Run ``glia ARGS`` against the lab and print its output; failures as a list."""
    console.print(Text(f"$ glia {' '.join(args)}", style="bold"))
    try:
        proc = subprocess.run(
            [str(bin_dir() / "glia"), *args],
            env=lab.cli_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [f"glia {' '.join(args)}: no answer in 30 s"]
    # Tables as the command drew them: wrapped again at a narrower console they garble.
    console.print(Text(proc.stdout.rstrip()), soft_wrap=True)
    if proc.returncode != 0:
        console.print(Text(proc.stderr.rstrip(), style="red"))
        return [f"glia {' '.join(args)} exited with {proc.returncode}: {proc.stderr.strip()}"]
    return []
