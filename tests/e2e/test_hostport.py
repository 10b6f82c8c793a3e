"""`podman run -p` (docs/hostport.md): host ports of real podman containers, TCP and
UDP, reached from the node (its IP and 127.0.0.1), the other node and pods of both
nodes; `-p IP:HOST:CONTAINER` only on that address; mappings glia cannot honour
fail the container's start; a host port connection from a pod is judged by the
backend's ingress policy with the pod's identity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import NODES, Workload, glia_ok, http, netns_python_argv, wait_for

from glia.lab.lab import Lab, LabError
from glia.lab.podman import Container

N1, N2 = NODES
UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo " + data, peer)
"""
UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
try:
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    data, peer = s.recvfrom(2048)
    print(data.decode(), f"{peer[0]}:{peer[1]}")
except OSError:
    pass
"""


def node_ip(lab: Lab, node: str) -> str:
    return str(lab.node(node).ip)


def node_http(lab: Lab, node: str, url: str) -> str:
    r = lab.node_exec(node, ["timeout", "3", "wget", "-q", "-O", "-", url])
    return r.stdout.strip() if r.returncode == 0 else ""


def udp_from_node(lab: Lab, node: str, ip: str, port: int) -> str:
    r = lab.node_exec(node, [sys.executable, "-c", UDP_ASK, ip, str(port)])
    return r.stdout.strip()


def udp_from_pod(ctr: Container, ip: str, port: int) -> str:
    argv = netns_python_argv(ctr, UDP_ASK, ip, str(port))
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.fixture
def pods(lab: Lab, work: Workload) -> dict[str, Container]:
    """`web` on n1 publishing 18080/tcp and 18053/udp, clients on both nodes."""
    web = work.container(
        N1, "glia-hp-web", {"app": "hp-web"}, publish=("18080:80", "18053:5353/udp")
    )
    c1 = work.container(N1, "glia-hp-c1", {"app": "hp-client"})
    c2 = work.container(N2, "glia-hp-c2", {"app": "hp-client"})
    work.endpoint_ready(web, c1, c2)
    return {"web": web, "c1": c1, "c2": c2}


def test_tcp_host_port_from_nodes_and_pods(lab: Lab, pods: dict[str, Container]) -> None:
    ip = node_ip(lab, N1)
    probes: dict[str, Any] = {
        "n1 -> node IP": lambda: node_http(lab, N1, f"http://{ip}:18080/"),
        "n1 -> 127.0.0.1": lambda: node_http(lab, N1, "http://127.0.0.1:18080/"),
        "n2 -> n1's IP": lambda: node_http(lab, N2, f"http://{ip}:18080/"),
        "pod on n1": lambda: http(lab, pods["c1"], f"{ip}:18080"),
        "pod on n2": lambda: http(lab, pods["c2"], f"{ip}:18080"),
        "web itself": lambda: http(lab, pods["web"], f"{ip}:18080"),
    }
    for what, probe in probes.items():
        assert wait_for(what, lambda p=probe: p() or None, timeout=10) == "glia-hp-web", what
    # The container's own port is what answers: nothing listens on 18080 in the pod.
    assert http(lab, pods["c1"], f"{pods['web'].ip}:18080", timeout=1) == ""


def test_host_ports_are_lb_frontends_not_kernel_nat(lab: Lab, pods: dict[str, Container]) -> None:
    """The mappings are frontends of n1's lb maps (LB_F_HOSTPORT), on its IP and 127.0.0.1,
    backed by the pod; no portmap chain in the node's ruleset."""
    ip, web = node_ip(lab, N1), pods["web"]
    rows = json.loads(glia_ok(lab, "bpf", "lb", "list", "-o", "json", "--node", N1))
    fronts = {
        row["frontend"]: [b["address"] for b in row["backends"]]
        for row in rows
        if row.get("host_port")
    }
    for addr in (ip, "127.0.0.1"):
        assert fronts.get(f"{addr}:18080/TCP") == [f"{web.ip}:80"], fronts
        assert fronts.get(f"{addr}:18053/UDP") == [f"{web.ip}:5353"], fronts
    ruleset = lab.node_exec(N1, ["nft", "list", "ruleset"]).stdout
    assert "CNI-HOSTPORT" not in ruleset


def test_udp_host_port_from_nodes_and_pods(
    lab: Lab, work: Workload, pods: dict[str, Container]
) -> None:
    work.spawn(pods["web"], UDP_ECHO)
    ip = node_ip(lab, N1)
    # The answer must come from the address asked (the NAT undone), not from the
    # pod: an unconnected socket takes both, a connected one only the first.
    probes: dict[str, Any] = {
        "n1 -> node IP": lambda: udp_from_node(lab, N1, ip, 18053),
        "n1 -> 127.0.0.1": lambda: udp_from_node(lab, N1, "127.0.0.1", 18053),
        "n2 -> n1's IP": lambda: udp_from_node(lab, N2, ip, 18053),
        "pod on n1": lambda: udp_from_pod(pods["c1"], ip, 18053),
        "pod on n2": lambda: udp_from_pod(pods["c2"], ip, 18053),
    }
    for what, probe in probes.items():
        got = wait_for(what, lambda p=probe: p() or None, timeout=10)
        asked = "127.0.0.1" if "127.0.0.1" in what else ip
        assert got == f"echo ping {asked}:18053", what


def test_host_ip_mapping_only_on_that_address(lab: Lab, work: Workload) -> None:
    ip = node_ip(lab, N1)
    web = work.container(
        N1, "glia-hp-ip", {"app": "hp-ip"}, publish=(f"{ip}:18090:80", "127.0.0.1:18091:80")
    )
    work.endpoint_ready(web)
    assert wait_for("n2 -> IP:18090", lambda: node_http(lab, N2, f"http://{ip}:18090/") or None)
    assert node_http(lab, N1, "http://127.0.0.1:18091/") == "glia-hp-ip"
    assert node_http(lab, N1, "http://127.0.0.1:18090/") == ""
    assert node_http(lab, N2, f"http://{ip}:18091/") == ""


@pytest.mark.parametrize(
    ("publish", "says"),
    [("18100:80/sctp", "tcp and udp only"), ("[::1]:18101:80", "IPv4 only")],
)
def test_mapping_glia_cannot_honour_fails_loudly(lab: Lab, publish: str, says: str) -> None:
    with pytest.raises(LabError, match=says):
        lab.run_container(N1, "glia-hp-bad", labels={"app": "hp-bad"}, publish=(publish,))
    assert "glia-hp-bad" not in {c.name for c in lab.containers(N1)}


HOSTPORT_POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "hp-web-from-allowed"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "hpp-web"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "hpp-allowed"}}]}],
    },
}


def test_host_port_connection_judged_with_the_clients_identity(
    lab: Lab, work: Workload, tmp_path: Path
) -> None:
    web = work.container(N1, "glia-hpp-web", {"app": "hpp-web"}, publish=("18081:80",))
    allowed = work.container(N1, "glia-hpp-ok", {"app": "hpp-allowed"})
    denied = work.container(N1, "glia-hpp-no", {"app": "hpp-denied"})
    work.endpoint_ready(web, allowed, denied)
    target = f"{node_ip(lab, N1)}:18081"
    wait_for("denied pod before the policy", lambda: http(lab, denied, target) or None)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(HOSTPORT_POLICY))
    glia_ok(lab, "apply", "-f", str(path), "--node", N1)
    try:
        # Pods of the node keep their identity through the DNAT: the policy
        # tells them apart; another node is remote-node, which it does not allow.
        assert wait_for("denied pod refused", lambda: http(lab, denied, target) == "" or None)
        assert http(lab, allowed, target) == "glia-hpp-web"
        assert node_http(lab, N2, f"http://{target}/") == ""
    finally:
        glia_ok(lab, "delete", "-f", str(path), "--node", N1)
