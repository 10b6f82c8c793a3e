"""``glia policy trace`` across the clusters of the mesh lab, and ``glia policy get``.

Uses the session's mesh lab (conftest ``mesh``: 2 clusters x 2 nodes). A client
container runs on c1/n1 and a web container on c2/n1; c2's policies (applied
through c2/n1's agent) allow ingress to web from c1's clients and deny port
8080 to everyone (a deny overriding that allow). c1/n1's agent traces the pair
with c2's policies read over its ClusterMesh connection (read-only user): 80
is allowed by c2's allow rule, 8080 denied by c2's deny rule, each named with
its cluster; c1/n1 never asks c2's agents. ``glia policy get`` on c2/n1 shows
the policies with the one local endpoint they select.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from labhelpers import glia_run as glia
from labhelpers import wait_for

from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model.identity import CLUSTER_LABEL, MIN_LOCAL

pytestmark = [pytest.mark.e2e, pytest.mark.root]

SYNC_TIMEOUT = 60.0  # c1/n1's connection to c2 up, and the pods' identities known
CLIENT, WEB = "trc-client", "trc-web"
POLICIES = [
    {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "trc-web", "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": WEB}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"app": CLIENT, CLUSTER_LABEL: "c1"}}]}],
        },
    },
    {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "trc-no-8080", "namespace": "default"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": WEB}},
            "ingressDeny": [
                {
                    "fromEntities": ["all"],
                    "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
                }
            ],
        },
    },
]


def identity_of(lab: Lab, node: str, name: str) -> int | None:
    for ep in lab.agent(node).endpoints():
        if ep.get("name") == name and int(ep.get("identity") or 0) >= MIN_LOCAL:
            return int(ep["identity"])
    return None


@pytest.fixture(scope="module")
def pair(mesh: Lab) -> Iterator[dict[str, Any]]:
    """The two containers, their identities, and c2's policies; all removed afterwards."""
    started: list[tuple[str, Container]] = []
    text = yaml.safe_dump_all(POLICIES)
    try:
        for node, app in (("c1/n1", CLIENT), ("c2/n1", WEB)):
            ctr = mesh.run_container(node, f"glia-{app}", labels={"app": app})
            started.append((node, ctr))
        r = glia(mesh, "apply", "-f", "-", "--node", "c2/n1", stdin=text)
        assert r.returncode == 0, r.stderr
        ids = {
            app: wait_for(
                f"{app}'s identity on {node}",
                lambda n=node, c=ctr: identity_of(mesh, n, c.name),
                timeout=SYNC_TIMEOUT,
            )
            for (node, ctr), app in zip(started, (CLIENT, WEB), strict=True)
        }
        yield ids
    finally:
        glia(mesh, "delete", "-f", "-", "--ignore-not-found", "--node", "c2/n1", stdin=text)
        for node, ctr in started:
            mesh.remove_container(node, ctr.name)


def trace(lab: Lab, *args: str) -> tuple[int, dict[str, Any] | str]:
    r = glia(lab, "policy", "trace", "--node", "c1/n1", *args, "-o", "json")
    if r.returncode not in (0, 3):
        return r.returncode, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_a_cross_cluster_trace_names_the_deciding_rule_of_each_cluster(
    mesh: Lab, pair: dict[str, int]
) -> None:
    dst = f"app={WEB},{CLUSTER_LABEL}=c2"

    def allowed() -> dict[str, Any] | None:
        # Until c1/n1 has c2 synced (and c2's web identity), the trace may say it
        # cannot judge the ingress side (exit 1): never a guess.
        rc, got = trace(mesh, "--src", f"app={CLIENT}", "--dst", dst, "--dport", "80/TCP")
        if rc != 0 or not isinstance(got, dict) or got["resolved"]["dst"]["identity"] is None:
            return None
        return got

    ok = wait_for("c1/n1 to trace to c2's web", allowed, timeout=SYNC_TIMEOUT)
    assert ok["verdict"] == "ALLOWED"
    assert ok["resolved"]["src"]["identity"] == pair[CLIENT]
    assert ok["resolved"]["dst"]["identity"] == pair[WEB]
    assert ok["resolved"]["dst"]["cluster"] == "c2"
    assert ok["egress"]["reason"] == "not-enforced"  # c1 has no policy for the client
    assert ok["ingress"]["rule"] == {"cluster": "c2", "id": "default/trc-web: spec.ingress[0]"}
    assert set(ok["ingress"]["selected_by"]) == {"default/trc-web", "default/trc-no-8080"}
    assert ok["policies"]["c2"] >= 2 and ok["warnings"] == []

    # The same pair by identity, on 8080: c2's deny overrides its allow.
    rc, no = trace(
        mesh,
        "--src-identity",
        str(pair[CLIENT]),
        "--dst-identity",
        str(pair[WEB]),
        "--dport",
        "8080",
    )
    assert rc == 3, no
    assert isinstance(no, dict)
    assert no["verdict"] == "DENIED" and no["decided_by"] == "ingress"
    assert no["ingress"]["reason"] == "denied"
    assert no["ingress"]["rule"] == {
        "cluster": "c2",
        "id": "default/trc-no-8080: spec.ingressDeny[0]",
    }
    assert {"cluster": "c2", "id": "default/trc-web: spec.ingress[0]"} in no["ingress"]["allows"]

    # The table says the same for people.
    r = glia(mesh, "policy", "trace", "--node", "c1/n1", "--src", f"app={CLIENT}", "--dst", dst,
             "--dport", "8080")  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "  decided by: default/trc-no-8080: spec.ingressDeny[0] (cluster c2)" in r.stdout
    assert r.stdout.splitlines()[-1] == "Final verdict: DENIED (decided at ingress)"


def test_policy_get_shows_the_enforced_policies_and_their_endpoints(
    mesh: Lab, pair: dict[str, int]
) -> None:
    r = glia(mesh, "policy", "get", "--node", "c2/n1", "-o", "json")
    assert r.returncode == 0, r.stderr
    items = {p["metadata"]["name"]: p for p in json.loads(r.stdout)["items"]}
    assert {"trc-web", "trc-no-8080"} <= set(items)
    for name in ("trc-web", "trc-no-8080"):
        status = items[name]["status"]
        assert status["cluster"] == "c2" and status["endpoints"] == 1, status
        assert status["revision"] > 0
    r = glia(mesh, "policy", "get", "--node", "c2/n2", "trc-web")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[1].split()[-2:] == [
        "0",
        str(items["trc-web"]["status"]["revision"]),
    ]
