"""Egress and node access on the session lab: masquerade to "the world", node <-> pod.

Real podman containers (busybox httpd answering their own name) on both nodes
of the lab, the lab's world namespace (an HTTP server at 203.0.113.10 that
answers with the client address it saw), the agents' masquerade, forward
filter and node routes (glia.agent.egress):

- a pod fetches the world's page, and the world saw the pod's node's address;
- the world, even routing the pod pools at a node, opens no connection to a pod;
- a node reaches pods on both nodes by TCP, and a pod reaches the other node;
- policy still judges egress: ``toCIDR: [203.0.113.0/24]`` lets the pod reach
  the world, a policy that names another prefix only does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import (
    NODES,
    Workload,
    glia_run,
    http,
    ping,
    service_manifest,
    wait_backends,
    wait_for,
)
from labhelpers import glia_ok as glia

from glia.lab import netns
from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.lab.topology import WORLD_IP, WORLD_NET

pytestmark = [pytest.mark.e2e, pytest.mark.root]


@dataclass
class Pods:
    a: Container  # on NODES[0]
    b: Container  # on NODES[1]


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[Pods]:
    w = Workload(lab)
    tag = uuid.uuid4().hex[:6]
    try:
        a = w.container(NODES[0], f"glia-eg-a-{tag}", {"app": f"eg-a-{tag}"})
        b = w.container(NODES[1], f"glia-eg-b-{tag}", {"app": f"eg-b-{tag}"})
        w.endpoint_ready(a, b)
        yield Pods(a, b)
    finally:
        w.close()


def node_ip(lab: Lab, node: str) -> str:
    cluster, name = node.split("/")
    return str(lab.topo.node(cluster, name).ip)


def world_page(lab: Lab, src: Container) -> str:
    return http(lab, src, str(WORLD_IP), timeout=3)


def node_http(lab: Lab, node: str, ip: str) -> str:
    """The page at ``ip`` fetched by a process of ``node`` (not a pod)."""
    r = lab.node_exec(node, ["timeout", "3", "busybox", "wget", "-q", "-O", "-", f"http://{ip}/"])
    return r.stdout.strip() if r.returncode == 0 else ""


def world_exec(lab: Lab, argv: list[str]) -> int:
    return subprocess.run(
        netns.nsenter_argv(lab.topo.world_netns, argv), capture_output=True, timeout=30
    ).returncode


def test_lab_status_shows_the_world(lab: Lab) -> None:
    world = lab.status()["world"]
    assert world["netns"] == f"{lab.name}-world" and world["netns_exists"]
    assert world["ip"] == str(WORLD_IP) and world["state"] == "running"
    assert f"world {lab.name}-world {WORLD_IP}" in glia(lab, "lab", "status", "--lab", lab.name)
    for node in NODES:
        egress = lab.agent(node).status()["subsystems"]["egress"]
        assert egress["state"] == "ok", egress
        assert egress["msg"].startswith("masquerading 10.1."), egress


def test_a_pod_reaches_the_world_as_its_node(lab: Lab, pods: Pods) -> None:
    for pod in (pods.a, pods.b):
        page = wait_for(f"{pod.name} -> world", lambda p=pod: world_page(lab, p), timeout=10)
        assert page == f"glia world: client {node_ip(lab, pod.node)}", page


def test_the_world_cannot_open_a_connection_to_a_pod(lab: Lab, pods: Pods) -> None:
    assert pods.a.ip and pods.b.ip
    # A hostile world that routes the pod pool at the first node: both that
    # node's pod and the other node's (forwarded on) stay out of its reach.
    route = f"10.{lab.topo.clusters[0].id}.0.0/16"
    assert world_exec(lab, ["ip", "route", "add", route, "via", node_ip(lab, NODES[0])]) == 0
    try:
        for ip in (pods.a.ip, pods.b.ip):
            argv = ["timeout", "3", "busybox", "wget", "-q", "-O", "-", f"http://{ip}/"]
            assert world_exec(lab, argv) != 0, f"world -> {ip}:80 must fail"
            assert world_exec(lab, ["busybox", "ping", "-c", "1", "-W", "1", ip]) != 0
    finally:
        world_exec(lab, ["ip", "route", "del", route])
    # The pods' own connections to the world still work meanwhile and after.
    assert world_page(lab, pods.a).startswith("glia world")


def test_nodes_reach_pods_on_every_node(lab: Lab, pods: Pods) -> None:
    assert pods.a.ip and pods.b.ip
    for node in NODES:
        for pod in (pods.a, pods.b):
            assert pod.ip
            got = wait_for(
                f"{node} -> {pod.name}", lambda n=node, ip=pod.ip: node_http(lab, n, ip), timeout=10
            )
            assert got == pod.name


def test_pods_reach_every_node(lab: Lab, pods: Pods) -> None:
    for pod in (pods.a, pods.b):
        for node in NODES:
            assert ping(lab, pod, node_ip(lab, node)), f"{pod.name} -> {node}"


def _egress_policy(name: str, app: str, cidr: str) -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "egress": [{"toCIDR": [cidr]}]},
    }


@pytest.mark.parametrize(("cidr", "allowed"), [(str(WORLD_NET), True), ("192.0.2.0/24", False)])
def test_egress_policy_to_cidr_judges_the_world(
    lab: Lab, tmp_path: Path, cidr: str, allowed: bool
) -> None:
    w = Workload(lab)
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "policy.yaml"
    try:
        pod = w.container(NODES[0], f"glia-eg-p-{tag}", {"app": f"eg-p-{tag}"})
        w.endpoint_ready(pod)
        wait_for("the pod reaches the world before any policy", lambda: world_page(lab, pod))
        path.write_text(yaml.safe_dump(_egress_policy(f"eg-{tag}", f"eg-p-{tag}", cidr)))
        glia(lab, "apply", "-f", str(path), "--node", NODES[0])
        if allowed:
            # Allowed before and after the policy: it must hold for a while.
            for _ in range(3):
                assert world_page(lab, pod).startswith("glia world"), f"toCIDR {cidr}"
        else:
            wait_for(f"toCIDR {cidr} denies the world", lambda: not world_page(lab, pod))
    finally:
        if path.exists():
            glia_run(lab, "delete", "-f", str(path), "--node", NODES[0])
        w.close()


def test_across_clusters_nodes_reach_pods_and_pods_reach_the_world(mesh: Lab) -> None:
    """On the mesh lab: a node of c1 reaches a pod of c2 (and back), the c2 pod's
    egress to the world is masqueraded to its own node, pod-to-pod keeps pod IPs."""
    w = Workload(mesh, api_node="c1/n1")
    tag = uuid.uuid4().hex[:6]
    try:
        p1 = w.container("c1/n1", f"glia-egm-1-{tag}", {"app": f"egm-{tag}"})
        p2 = w.container("c2/n2", f"glia-egm-2-{tag}", {"app": f"egm-{tag}"})
        w.endpoint_ready(p1, p2)
        assert p1.ip and p2.ip
        for node, pod in (("c1/n1", p2), ("c1/n2", p2), ("c2/n1", p1), ("c2/n2", p1)):
            got = wait_for(
                f"{node} -> {pod.name}",
                lambda n=node, ip=pod.ip: node_http(mesh, n, ip),
                timeout=15,
            )
            assert got == pod.name
        page = wait_for("c2 pod -> world", lambda: world_page(mesh, p2), timeout=10)
        assert page == f"glia world: client {node_ip(mesh, 'c2/n2')}"
        # Pod to pod across clusters still works, and no node masquerades the
        # other cluster's pod pool.
        assert http(mesh, p2, p1.ip) == p1.name
        seen = mesh.node_exec("c1/n1", ["nft", "list", "set", "ip", "glia_egress", "mesh"]).stdout
        assert "10.1.0.0/16" in seen and "10.2.0.0/16" in seen
    finally:
        w.close()


def test_node_processes_reach_a_service_vip(lab: Lab, pods: Pods) -> None:
    """`glia lab exec NODE` runs as a process of the node (its cgroup, where the
    socket load-balancer is attached): a Service VIP answers it from both nodes."""
    w = Workload(lab)
    tag = uuid.uuid4().hex[:6]
    try:
        web = w.container(NODES[1], f"glia-eg-w-{tag}", {"app": f"eg-w-{tag}"})
        w.endpoint_ready(web)
        (vip,) = w.apply(
            service_manifest(f"eg-{tag}", {"app": f"eg-w-{tag}"}, [{"port": 80, "protocol": "TCP"}])
        )
        assert web.ip
        wait_backends(lab, vip, 80, {web.ip})
        for node in NODES:
            got = wait_for(f"{node} -> {vip}", lambda n=node: node_http(lab, n, vip), timeout=10)
            assert got == web.name
    finally:
        w.close()


@pytest.mark.parametrize(("peer", "other_node_allowed"), [("remote-node", True), ("none", False)])
def test_node_identities_under_ingress_policy(
    lab: Lab, tmp_path: Path, peer: str, other_node_allowed: bool
) -> None:
    """A node's traffic to its own pod is `host` (always allowed: docs/policy.md),
    another node's is `remote-node`: allowed by `fromEntities: [remote-node]`,
    refused by a policy that names only some pod."""
    w = Workload(lab)
    tag = uuid.uuid4().hex[:6]
    path = tmp_path / "policy.yaml"
    app = f"eg-i-{tag}"
    rule: dict[str, Any] = (
        {"fromEntities": [peer]}
        if peer != "none"
        else {"fromEndpoints": [{"matchLabels": {"app": f"nobody-{tag}"}}]}
    )
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": f"eg-i-{tag}"},
        "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "ingress": [rule]},
    }
    try:
        pod = w.container(NODES[0], f"glia-eg-i-{tag}", {"app": app})
        w.endpoint_ready(pod)
        assert pod.ip
        for node in NODES:
            wait_for(f"{node} -> pod before the policy", lambda n=node: node_http(lab, n, pod.ip))
        path.write_text(yaml.safe_dump(doc))
        glia(lab, "apply", "-f", str(path), "--node", NODES[0])
        if other_node_allowed:
            time.sleep(1.5)  # the bound for a policy to reach every node
            assert node_http(lab, NODES[1], pod.ip) == pod.name
        else:
            wait_for("the other node refused", lambda: not node_http(lab, NODES[1], pod.ip))
        assert node_http(lab, NODES[0], pod.ip) == pod.name  # host: always
    finally:
        if path.exists():
            glia_run(lab, "delete", "-f", str(path), "--node", NODES[0])
        w.close()


def test_a_dead_world_is_reported_and_lab_up_restarts_it(lab: Lab, pods: Pods) -> None:
    rec = lab.start_world()  # its live record
    os.kill(rec.pid, signal.SIGKILL)
    wait_for("the world's server gone", lambda: lab.status()["world"]["state"] == "dead")
    st = lab.status()
    assert any(p.startswith("world-http: dead") for p in st["problems"]), st["problems"]
    assert not lab.is_up()
    assert lab.up() is True  # repairs: starts the world again, keeps the rest
    page = wait_for("the world back", lambda: world_page(lab, pods.a), timeout=10)
    assert page == f"glia world: client {node_ip(lab, pods.a.node)}"
    assert lab.is_up()


def test_egress_survives_an_agent_restart(lab: Lab, pods: Pods) -> None:
    """The table and routes are the node's, not the agent's: egress and node
    access work while the agent is down, and after it is back."""
    assert pods.b.ip
    lab.stop_agent(NODES[0], stay_down=True)
    try:
        assert world_page(lab, pods.a) == f"glia world: client {node_ip(lab, NODES[0])}"
        assert node_http(lab, NODES[0], pods.b.ip) == pods.b.name
    finally:
        lab.start_agent(NODES[0])
    lab.wait_agents()
    assert world_page(lab, pods.a) == f"glia world: client {node_ip(lab, NODES[0])}"
    assert node_http(lab, NODES[0], pods.b.ip) == pods.b.name
    routes = lab.node_exec(NODES[0], ["ip", "route", "show", "proto", "200"]).stdout
    assert routes.count("via") == 1, routes  # the other node's CIDR, once
