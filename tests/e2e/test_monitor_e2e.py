"""``glia monitor`` on the lab: a real pod's dropped packet, shown with both ends' labels.

The drop: a pod sends UDP to its node's VXLAN port (pods may not; dropped as
it leaves the pod, DROP_OVERLAY_PORT, see test_overlay_trust.py). The
installed ``glia monitor --node c1/n1 --lab LAB -o json`` runs as a user
would, its stdout a pipe; every line must parse as JSON, the drop must name
both identities with their labels and the reason; Ctrl-C ends it with exit
code 0 and nothing on stderr. (A denied connection is shown the same way
once policy is programmed by the agent.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from labhelpers import LineReader, endpoint_named, netns_python, wait_for

from glia.lab.lab import Lab, bin_dir
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NODE = "c1/n1"
UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
s.sendto(b"not vxlan", (sys.argv[1], int(sys.argv[2])))
"""
SPORT = 40123


@pytest.fixture
def pod(lab: Lab) -> Iterator[tuple[Container, dict[str, Any]]]:
    name = f"glia-mon-{uuid.uuid4().hex[:6]}"
    ctr = lab.run_container(NODE, name, labels={"app": "monitored", "tier": "e2e"})
    try:
        ep = wait_for(f"endpoint {name} with its identity", lambda: endpoint_named(lab, ctr))
        yield ctr, ep
    finally:
        lab.remove_container(NODE, name)


@pytest.fixture
def monitor(lab: Lab) -> Iterator[tuple[subprocess.Popen[str], LineReader]]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIA_LAB_DIR", "GLIA_LAB_NAME")}
    proc = subprocess.Popen(
        [str(bin_dir() / "glia"), "monitor", "--node", NODE, "--lab", lab.name, "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield proc, LineReader(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _drop_from(reader: LineReader, ip: str) -> dict[str, Any] | None:
    for line in reader.all():
        item = json.loads(line)  # every line parses
        if item.get("type") == "drop" and (item.get("src") or {}).get("ip") == ip:
            return dict(item)
    return None


def test_monitor_shows_a_pods_drop_with_both_identities_and_labels(
    lab: Lab,
    pod: tuple[Container, dict[str, Any]],
    monitor: tuple[subprocess.Popen[str], LineReader],
) -> None:
    ctr, ep = pod
    proc, reader = monitor
    start = json.loads(reader.wait_more(0, 1, timeout=20)[0])
    assert start == {"type": "start", "node": NODE, "types": ["drop", "policy-verdict", "trace"]}
    node_ip = str(lab.node(NODE).ip)
    port = lab.agent_config(NODE).vxlan_port

    def dropped() -> dict[str, Any] | None:
        # Sent again until seen: events are best effort (a full ring loses them).
        netns_python(ctr, UDP_SEND, node_ip, str(port), str(SPORT))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if ev := _drop_from(reader, ctr.ip or ""):
                return ev
            time.sleep(0.1)
        return None

    ev = wait_for(f"a drop from {ctr.name} in glia monitor", dropped, timeout=30)
    assert (ev["reason"], ev["direction"], ev["proto"], ev["node"]) == (
        "overlay-port",
        "egress",
        "udp",
        NODE,
    )
    assert ev["src"]["ip"] == ctr.ip and ev["src"]["port"] == SPORT
    assert ev["src"]["identity"] == ep["identity"]
    assert ev["src"]["labels"]["app"] == "monitored" and ev["src"]["labels"]["tier"] == "e2e"
    assert ev["src"]["endpoint"] == f"{ep['namespace']}/{ctr.name}"
    assert (ev["dst"]["ip"], ev["dst"]["port"]) == (node_ip, port)
    assert (ev["dst"]["identity"], ev["dst"]["labels"]) == (1, {"reserved:host": ""})
    for line in reader.all():
        json.loads(line)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err) == (0, "")
    # The agent forgot the client: no flag left on for it.
    status = wait_for(
        "the agent's monitor without subscribers",
        lambda: (s := lab.agent(NODE).status()["monitor"]) and s["subscribers"] == 0 and s,
    )
    assert status["flags"] == 0 and status["running"] is True
