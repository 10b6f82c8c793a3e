"""The network policy part of ``glia lab demo``: an identity rule across clusters.

Called by :mod:`glia.lab.demo` with its containers: ``web1`` (c1/n1,
app=web), ``web2`` (c2/n1, app=web) and ``client`` (c1/n2, app=client). It
applies, in cluster 2, a ``CiliumNetworkPolicy`` that lets only cluster 1's
clients reach cluster 2's web on port 80, and shows:

1. ``glia policy trace`` from cluster 1: client -> web2 allowed, web1 -> web2
   denied (default deny once selected), each with the rule that decided;
2. real HTTP agreeing: the client gets web2's answer, web1 gets nothing;
3. ``glia monitor`` on web2's node showing the drop with both identities and
   their labels; ``glia bpf policy list`` with the entry of the client's
   identity;
4. the policy deleted: web1 reaches web2 again (default allow).

:func:`run` returns the failures.
"""

from __future__ import annotations

import signal
import subprocess
import time

import yaml
from rich.console import Console
from rich.text import Text

from glia.lab.demo_steps import WAIT, Steps, show_cli, wait_until
from glia.lab.lab import Lab, bin_dir
from glia.lab.podman import Container

POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web-from-c1-clients"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "fromEndpoints": [
                    {"matchLabels": {"app": "client", "io.cilium.k8s.policy.cluster": "c1"}}
                ],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    },
}
MONITOR_WAIT = 10.0  # seconds to see the drop in glia monitor


def _get(lab: Lab, src: Container, dst: Container) -> str:
    """web's answer to one GET from ``src`` ("" when refused or dropped)."""
    r = lab.exec(
        f"{src.node}/{src.name}",
        ["timeout", "2", "wget", "-q", "-O", "-", f"http://{dst.ip}/"],
        timeout=30,
    )
    return r.stdout.strip() if r.returncode == 0 else ""


def _trace(src: str, dst: str) -> list[str]:
    return ["policy", "trace", "--src", src, "--dst", dst, "--dport", "80/TCP", "--node", "c1/n1"]


def _enforced(lab: Lab, node: str, name: str) -> bool:
    return bool(lab.agent(node).bpf_policy(name).get("ingress_enforced"))


def run(
    lab: Lab, console: Console, web1: Container, web2: Container, client: Container
) -> list[str]:
    step = Steps(console)
    failures: list[str] = []
    text = yaml.safe_dump(POLICY, sort_keys=False)
    step("network policy by identity: only cluster 1's clients may reach web in cluster 2")
    console.print(Text(text.rstrip(), style="dim"))
    started = time.monotonic()
    failures += show_cli(lab, console, ["apply", "-f", "-", "--node", "c2/n1"], stdin=text)
    if wait_until(lambda: _enforced(lab, web2.node, web2.name), WAIT) is None:
        return [*failures, f"{web2.node} did not enforce the policy in {WAIT:.0f} s"]
    step.note(f"enforced on {web2.node} {time.monotonic() - started:.2f} s after glia apply")
    c1, c2 = (f"io.cilium.k8s.policy.cluster={c}" for c in ("c1", "c2"))
    failures += show_cli(lab, console, _trace(f"app=client,{c1}", f"app=web,{c2}"))
    denied = show_cli(lab, console, _trace(f"app=web,{c1}", f"app=web,{c2}"))
    if len(denied) != 1 or "exited with 3" not in denied[0]:  # 3: the trace says denied
        failures += denied or ["glia policy trace web1 -> web2 did not say denied"]

    step("real connections agree")
    answer = _get(lab, client, web2)
    console.print(f"    {client.name} -> {web2.name}: {answer or '(nothing)'}")
    if answer != web2.name:
        failures.append(f"{client.name} -> {web2.name} should be allowed, got {answer!r}")
    monitor = subprocess.Popen(
        [str(bin_dir() / "glia"), "monitor", "--node", web2.node, "--type", "drop"],
        env=lab.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # the monitor subscribes
        answer = _get(lab, web1, web2)
        console.print(f"    {web1.name} -> {web2.name}: {answer or '(nothing: dropped)'}")
        if answer:
            failures.append(f"{web1.name} -> {web2.name} should be denied, got {answer!r}")
        time.sleep(0.5)
    finally:
        monitor.send_signal(signal.SIGINT)
        out, err = monitor.communicate(timeout=MONITOR_WAIT)
    console.print(Text(f"$ glia monitor --node {web2.node} --type drop", style="bold"))
    drops = [ln for ln in out.splitlines() if "policy-denied" in ln and str(web1.ip) in ln]
    console.print(Text("\n".join(drops[:3]) or err.strip(), style="dim"), soft_wrap=True)
    if not drops:
        failures.append(f"glia monitor on {web2.node} did not show the drop of {web1.name}")
    failures += show_cli(lab, console, ["bpf", "policy", "list", web2.name, "--node", web2.node])

    step("deleting the policy: default allow again")
    failures += show_cli(lab, console, ["delete", "-f", "-", "--node", "c2/n1"], stdin=text)
    if wait_until(lambda: _get(lab, web1, web2) == web2.name, WAIT) is None:
        failures.append(f"{web1.name} -> {web2.name} still denied {WAIT:.0f} s after the delete")
    else:
        console.print(f"    {web1.name} -> {web2.name}: {web2.name}")
    return failures
