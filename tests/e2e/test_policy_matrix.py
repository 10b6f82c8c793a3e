"""Network policy truth table on the mesh lab: real connections agree with `glia policy trace`.

In the style of the Kubernetes network policy truth tables: podman containers
with different labels on both clusters of the session's mesh lab (conftest
``mesh``: two clusters of two nodes), policies of cluster c1 applied with
``glia apply -f``, and for every (source, destination, port) of the table the
real TCP connection's result equals both the expected verdict and what
``glia policy trace`` says from the source's cluster. Every rule kind has at
least one allow and one deny, among them a cross-cluster rule and a deny
overriding an allow:

- fromEndpoints (this cluster's clients, port 80) and a cross-cluster
  fromEndpoints (c2's clients, port 7001);
- toEndpoints: the client's egress to web (every port) and to c2's db (80);
- fromEntities ``cluster`` (7001) with an ingressDeny of app=other over it;
- toEntities ``all`` with an egressDeny of ``cluster`` on port 80;
- fromCIDRSet with ``except``, sources on the web node's own address space
  (the node's stack delivers them, to_endpoint judges them);
- toPorts everywhere, protocols TCP and ANY.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labhelpers import (
    RECORDER_PORT,
    LineReader,
    lb_frontend,
    netns_python,
    recorder_command,
    service_manifest,
    slotted,
    tcp_send,
    wait_for,
)
from labhelpers import (
    glia_run as glia,
)

from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

GLIA = Path(sys.executable).parent / "glia"
SYNC_TIMEOUT = 60.0
CIDR_OK, CIDR_EXCEPT = "192.0.2.1", "192.0.2.129"  # inside the CIDR set / inside its except
WEB_NODE = "c1/n2"

POLICIES = f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: pm-web}}
spec:
  endpointSelector: {{matchLabels: {{app: pm-web}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: pm-client}}}}]
    toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
  - fromEndpoints: [{{matchLabels: {{app: pm-client, io.cilium.k8s.policy.cluster: c2}}}}]
    toPorts: [{{ports: [{{port: "{RECORDER_PORT}"}}]}}]
  - fromEntities: [cluster]
    toPorts: [{{ports: [{{port: "{RECORDER_PORT}", protocol: TCP}}]}}]
  - fromCIDRSet: [{{cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}]
    toPorts: [{{ports: [{{port: "{RECORDER_PORT}"}}]}}]
  ingressDeny:
  - fromEndpoints: [{{matchLabels: {{app: pm-other}}}}]
    toPorts: [{{ports: [{{port: "{RECORDER_PORT}"}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: pm-client}}
spec:
  endpointSelector: {{matchLabels: {{app: pm-client}}}}
  egress:
  - toEndpoints: [{{matchLabels: {{app: pm-web}}}}]
  - toEndpoints: [{{matchLabels: {{app: pm-db, io.cilium.k8s.policy.cluster: c2}}}}]
    toPorts: [{{ports: [{{port: "80", protocol: TCP}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: pm-other}}
spec:
  endpointSelector: {{matchLabels: {{app: pm-other}}}}
  egress:
  - toEntities: [all]
  egressDeny:
  - toEntities: [cluster]
    toPorts: [{{ports: [{{port: "80"}}]}}]
"""

# name -> (node, app label)
PODS = {
    "client": ("c1/n1", "pm-client"),
    "other": ("c1/n1", "pm-other"),
    "web": (WEB_NODE, "pm-web"),
    "db": ("c2/n1", "pm-db"),
    "rclient": ("c2/n2", "pm-client"),
}


@dataclass(frozen=True)
class Case:
    src: str  # a pod name, or "cidr:<address>" (from the web node's stack)
    dst: str  # a pod name
    port: int
    allowed: bool
    why: str


CASES = [
    Case("client", "web", 80, True, "fromEndpoints + toEndpoints (L3)"),
    Case("client", "web", RECORDER_PORT, True, "fromEntities cluster; egress L3"),
    Case("rclient", "web", RECORDER_PORT, True, "cross-cluster fromEndpoints"),
    Case("rclient", "web", 80, False, "fromEndpoints without the cluster label: own cluster only"),
    Case("other", "web", RECORDER_PORT, False, "ingressDeny over the cluster allow"),
    Case("other", "web", 80, False, "egressDeny toEntities cluster, port 80"),
    Case("other", "db", 80, True, "toEntities all (db is not this cluster)"),
    Case("client", "db", 80, True, "cross-cluster toEndpoints with toPorts"),
    Case("client", "db", RECORDER_PORT, False, "egress default deny: port not listed"),
    Case("client", "other", 80, False, "egress default deny: no rule names other"),
    Case("db", "client", RECORDER_PORT, True, "no policy selects client's ingress"),
    Case(f"cidr:{CIDR_OK}", "web", RECORDER_PORT, True, "fromCIDRSet"),
    Case(f"cidr:{CIDR_EXCEPT}", "web", RECORDER_PORT, False, "fromCIDRSet except"),
]


@pytest.fixture(scope="module")
def pods(mesh: Lab) -> Iterator[dict[str, Container]]:
    started: dict[str, tuple[str, Container]] = {}
    try:
        for name, (node, app) in PODS.items():
            ctr_name = f"glia-pm-{name}"
            started[name] = (
                node,
                mesh.run_container(
                    node, ctr_name, labels={"app": app}, command=recorder_command(ctr_name)
                ),
            )
        yield {name: ctr for name, (_, ctr) in started.items()}
    finally:
        for node, ctr in started.values():
            mesh.remove_container(node, ctr.name)


@pytest.fixture(scope="module")
def cidr_sources(mesh: Lab) -> Iterator[None]:
    """The CIDR sources as addresses of the web node's own namespace (lab-owned).

    Scope host: used only when a socket binds to them, never picked as the
    source of the node's own connections (a global address on lo would be, and
    the node's health probes would come from a CIDR identity)."""
    added = []
    try:
        for ip in (CIDR_OK, CIDR_EXCEPT):
            argv = ["ip", "addr", "add", f"{ip}/32", "dev", "lo", "scope", "host"]
            r = mesh.node_exec(WEB_NODE, argv)
            assert r.returncode == 0, r.stderr
            added.append(ip)
        yield
    finally:
        for ip in added:
            mesh.node_exec(WEB_NODE, ["ip", "addr", "del", f"{ip}/32", "dev", "lo"])


@pytest.fixture(scope="module")
def policies(mesh: Lab, pods: dict[str, Container], cidr_sources: None) -> Iterator[None]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="glia-pm-") as f:
        f.write(POLICIES)
        f.flush()
        r = glia(mesh, "apply", "-f", f.name, "--node", "c1/n1")
        assert r.returncode == 0, r.stderr
        try:
            yield
        finally:
            glia(mesh, "delete", "-f", f.name, "--node", "c1/n1", "--ignore-not-found")


CONNECT_FROM = """
import socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with socket.create_connection((dst, port), timeout=1, source_address=(src, 0)) as s:
    s.sendall(b"x\\n")
"""


def connects(lab: Lab, pods: dict[str, Container], case: Case) -> bool:
    dst = pods[case.dst]
    assert dst.ip
    if case.src.startswith("cidr:"):
        # Python, not nc: Debian's busybox nc has no -s (source address).
        src_ip = case.src.removeprefix("cidr:")
        argv = [sys.executable, "-c", CONNECT_FROM, src_ip, dst.ip, str(case.port)]
        return lab.node_exec(WEB_NODE, argv, timeout=20).returncode == 0
    return tcp_send(lab, pods[case.src], dst.ip, case.port)


def trace(lab: Lab, pods: dict[str, Container], case: Case) -> dict[str, Any]:
    def end(name: str) -> list[str]:
        if name.startswith("cidr:"):
            return ["ip:" + name.removeprefix("cidr:")]
        node, app = PODS[name]
        cluster = node.split("/")[0]
        return [f"app={app},io.cilium.k8s.policy.cluster={cluster}"]

    src_node = WEB_NODE if case.src.startswith("cidr:") else PODS[case.src][0]
    r = glia(
        lab,
        "policy",
        "trace",
        "--src",
        *end(case.src),
        "--dst",
        *end(case.dst),
        "--dport",
        f"{case.port}/TCP",
        "-o",
        "json",
        "--node",
        src_node,
    )
    assert r.stdout, r.stderr
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def test_the_truth_table_holds_and_trace_agrees(
    mesh: Lab, pods: dict[str, Container], policies: None
) -> None:
    # Identities of every pod reach every node (both clusters) before judging.
    def settled() -> bool | None:
        return all(connects(mesh, pods, c) == c.allowed for c in CASES) or None

    wait_for("every case of the table to hold", settled, timeout=SYNC_TIMEOUT)
    failures = []
    for case in CASES:
        real = connects(mesh, pods, case)
        traced = trace(mesh, pods, case)
        if real != case.allowed or traced["allowed"] != real:
            failures.append((case, real, traced))
        else:
            decided = traced[traced["decided_by"]]
            if case.allowed is False and decided["reason"] == "denied":
                assert decided["rule"], (case, traced)  # a deny names its rule
    assert not failures, "\n".join(
        f"{c.src} -> {c.dst}:{c.port} ({c.why}): expected {c.allowed}, connection {real}, "
        f"trace {t.get('allowed')} {json.dumps(t)[:400]}"
        for c, real, t in failures
    )


def test_monitor_shows_the_denied_connection_with_both_identities(
    mesh: Lab, pods: dict[str, Container], policies: None
) -> None:
    """other -> web:7001 is denied at web's ingress (the ingressDeny): web's node shows it."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIA_LAB_DIR", "GLIA_LAB_NAME")}
    argv = [str(GLIA), "monitor", "--node", WEB_NODE, "--lab", mesh.name]
    proc = subprocess.Popen(
        [*argv, "--type", "drop", "--type", "policy-verdict", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        reader = LineReader(proc)
        reader.wait_more(0, 1, timeout=20)  # the start line
        src, dst = pods["other"], pods["web"]

        def denied() -> dict[str, Any] | None:
            assert not tcp_send(mesh, src, dst.ip or "", RECORDER_PORT)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                for line in reader.all():
                    ev = json.loads(line)  # every line parses
                    if (
                        ev.get("type") == "drop"
                        and ev.get("reason") == "policy-denied"
                        and (ev.get("src") or {}).get("ip") == src.ip
                    ):
                        return dict(ev)
                time.sleep(0.1)
            return None

        ev = wait_for("the policy drop in glia monitor", denied, timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert ev["direction"] == "ingress" and ev["dst"]["port"] == RECORDER_PORT
    assert ev["src"]["labels"]["app"] == "pm-other" and ev["dst"]["labels"]["app"] == "pm-web"
    assert ev["src"]["identity"] and ev["dst"]["identity"]
    assert ev["match"] == "L3-L4"  # the deny entry of other's identity on that port
    assert any("pm-web" in r and "ingressDeny" in r for r in ev["rules"] or []), ev


CONNECT = """
import socket, sys
s = socket.socket()
s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("ok")
except OSError as e:
    print("fail", e)
"""
SVC_PORT = 8080  # the VIP's port; the backends listen on 80


def test_service_traffic_is_judged_against_the_backend(
    mesh: Lab, pods: dict[str, Container], policies: None
) -> None:
    """A VIP:8080 over pm-web's :80. other's egressDeny (cluster, port 80) must catch it on
    both load-balancers: judged at VIP:8080 it would pass. client's allows pass."""
    doc = service_manifest(
        "pm-websvc", {"app": "pm-web"}, [{"port": SVC_PORT, "targetPort": 80, "protocol": "TCP"}]
    )
    r = glia(mesh, "apply", "-f", "-", "--node", "c1/n1", stdin=json.dumps(doc))
    assert r.returncode == 0, r.stderr
    try:
        vip = str(mesh.agent("c1/n1").config_services(name="pm-websvc")[0]["spec"]["clusterIP"])
        web_ip = pods["web"].ip
        wait_for(
            "the Service's backend on c1/n1",
            lambda: web_ip in slotted(lb_frontend(mesh, "c1/n1", vip, SVC_PORT)),
            timeout=SYNC_TIMEOUT,
        )
        for name, allowed in (("client", True), ("other", False)):
            ctr = pods[name]
            # Socket LB: the container's own processes (in the node's cgroup).
            r = mesh.exec(
                f"{ctr.node}/{ctr.name}",
                ["timeout", "3", "wget", "-q", "-O", "-", f"http://{vip}:{SVC_PORT}/"],
            )
            got = r.stdout.strip() if r.returncode == 0 else ""
            assert (got == pods["web"].name) is allowed, (name, "socket LB", got)
            # Per-packet LB: a process outside the cgroup, in the pod's network namespace.
            out = netns_python(ctr, CONNECT, vip, str(SVC_PORT))
            assert out.startswith("ok") is allowed, (name, "per-packet LB", out)
    finally:
        glia(mesh, "delete", "-f", "-", "--node", "c1/n1", stdin=json.dumps(doc))
