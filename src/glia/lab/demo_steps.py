"""Small pieces the demo's steps share: printing, ``glia`` commands, requests, map reads.

Called by :mod:`glia.lab.demo` and :mod:`glia.lab.demo_mesh`. Every function
that can fail returns the failures it saw as a list of one-line strings (the
demo goes on and reports them all at the end) or None/empty when all went well.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable

from rich.console import Console
from rich.text import Text

from glia.agent.client import AgentClientError
from glia.datapath.drop import Reason
from glia.lab.lab import Lab, bin_dir
from glia.lab.podman import Container

FAILED = "(no answer)"
WAIT = 20.0  # seconds for the maps to follow a change


class Steps:
    """Prints a step's title (``==> ...``) and dim notes under it; also the lab's reporter."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, text: str) -> None:
        self.step(text)

    def step(self, text: str) -> None:
        self.console.print(Text.assemble(("==> ", "bold cyan"), text))

    def note(self, text: str) -> None:
        self.console.print(Text("    " + text, style="dim"))


def backend_command(name: str) -> list[str]:
    """httpd answering ``name``, not as PID 1: its server can stop while the container runs."""
    script = (
        f"mkdir -p /www && echo {name} > /www/index.html && httpd -p 80 -h /www"
        " && while true; do sleep 1; done"
    )
    return ["sh", "-c", script]


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


def requests(lab: Lab, client: Container, url: str, count: int) -> Counter[str]:
    """``count`` GETs of ``url`` from ``client``, each a new connection: answers by body."""
    # One exec for all; `timeout`, not wget's -T (it segfaults in Debian's busybox).
    loop = f"for i in $(seq {count}); do timeout 3 wget -q -O - {url} || echo '{FAILED}'; done"
    r = lab.exec(f"{client.node}/{client.name}", ["sh", "-c", loop], timeout=count * 3 + 30)
    return Counter(line.strip() for line in r.stdout.splitlines() if line.strip())


def requests_for(lab: Lab, client: Container, url: str, seconds: int) -> Counter[str]:
    """GETs of ``url`` from ``client``, one after another for ``seconds``: answers by body."""
    loop = (
        f"end=$(( $(date +%s) + {seconds} )); while [ $(date +%s) -lt $end ]; do"
        f" timeout 3 wget -q -O - {url} || echo '{FAILED}'; done"
    )
    r = lab.exec(f"{client.node}/{client.name}", ["sh", "-c", loop], timeout=seconds + 30)
    return Counter(line.strip() for line in r.stdout.splitlines() if line.strip())


def socket_xlated(lab: Lab, node: str) -> int:
    """connect()/sendmsg() calls the node's socket LB pointed at a backend so far."""
    return sum(
        int(m["packets"])
        for m in lab.agent(node).bpf_metrics()
        if m["reason"] == Reason.SOCK_XLATE.name
    )


def slotted(lab: Lab, node: str, vip: str, port: int = 80) -> set[str] | None:
    """IPs holding a slot of ``vip:port`` on ``node`` (get new connections); None: no frontend."""
    for row in lab.agent(node).bpf_lb():
        if row["vip"] == vip and row["port"] == port:
            return {b["ip"] for b in row["backends"] if b["slot"] is not None}
    return None


def wait_until(check: Callable[[], bool], timeout: float = WAIT) -> float | None:
    """Seconds until ``check()`` held (None if it did not within ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except AgentClientError:
            pass  # an agent busy restarting: ask again
        time.sleep(0.05)
    return None


def wait_slotted(lab: Lab, nodes: Iterable[str], vip: str, ips: set[str] | None) -> float | None:
    """Until every node in ``nodes`` gives exactly ``ips`` slots (None: no such frontend)."""
    wanted = list(nodes)
    return wait_until(lambda: all(slotted(lab, n, vip) == ips for n in wanted))
