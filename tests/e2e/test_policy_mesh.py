"""A cross-cluster policy on the mesh lab: identities imported from the other cluster.

Uses the session's mesh lab (conftest ``mesh``: two clusters of two nodes). A
web pod on c1/n1 selected by a policy of c1 that admits app=mclient of
cluster c2 only: the agent of c1/n1 learns c2's identities through
ClusterMesh (its IdentityCache's c2 table) and programs them. A client of c2
connects; a pod of c2 with other labels, and a pod of c1 with the client's
labels (the rule names c2), do not. `glia bpf policy list` names the peer with
its cluster label. Deleting the policy restores default allow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from labhelpers import glia_ok as glia
from labhelpers import http, wait_for

from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model.identity import CLUSTER_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.root]

SYNC_TIMEOUT = 60.0  # the other cluster's pods reach the ipcache
POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "mweb-from-c2"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "mweb"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "mclient", CLUSTER_LABEL: "c2"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    },
}


@pytest.fixture
def pods(mesh: Lab) -> Iterator[dict[str, Container]]:
    started: dict[str, Container] = {}
    try:
        for key, node, app in (
            ("web", "c1/n1", "mweb"),
            ("remote_client", "c2/n1", "mclient"),
            ("remote_other", "c2/n2", "mother"),
            ("local_client", "c1/n2", "mclient"),
        ):
            started[key] = mesh.run_container(node, f"glia-pm-{key}", labels={"app": app})
        yield started
    finally:
        for ctr in started.values():
            mesh.remove_container(ctr.node, ctr.name)


def test_a_rule_naming_the_other_cluster(mesh: Lab, pods: dict[str, Container]) -> None:
    web = pods["web"]
    assert web.ip
    for key in ("remote_client", "remote_other", "local_client"):
        src = pods[key]
        wait_for(f"{key} -> web before any policy", lambda s=src: http(mesh, s, web.ip),
                 SYNC_TIMEOUT)  # fmt: skip
    path = Path(mesh.dir) / "policy-mesh-test.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    try:
        glia(mesh, "apply", "-f", str(path), "--node", "c1/n2")

        def enforced() -> bool:
            got = mesh.agent(web.node).get(f"/v1/bpf/policy?endpoint={web.ip}")
            return bool(got["ingress_enforced"])

        wait_for("the policy in c1/n1's map", enforced, 10)
        assert http(mesh, pods["remote_client"], web.ip) == web.name
        assert http(mesh, pods["remote_other"], web.ip) == ""
        assert http(mesh, pods["local_client"], web.ip) == ""
        listed = json.loads(glia(mesh, "bpf", "policy", "list", web.name, "-o", "json",
                                 "--node", web.node))  # fmt: skip
        peers = [r for r in listed["rows"] if r["ports"] == [80, 80] and r["action"] == "allow"]
        assert peers and all(f"{CLUSTER_LABEL}=c2" in r["peer_labels"] for r in peers), peers
        assert all(r["peer"] >> 16 == 2 for r in peers)  # c2's identity range
    finally:
        glia(mesh, "delete", "-f", str(path), "--node", "c1/n1", "--ignore-not-found")
        path.unlink(missing_ok=True)
    wait_for("default allow again", lambda: http(mesh, pods["local_client"], web.ip), 10)
