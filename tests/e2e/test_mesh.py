"""ClusterMesh in a lab of two clusters of two nodes: the wiring, pods across clusters, status.

Uses the session's mesh lab (conftest ``mesh``: ``--clusters 2 --nodes 2``,
shared with the other ClusterMesh modules). Shown here:

- the underlay: every node reaches every node and the etcd of the other
  cluster; with the files of its remote cluster directory, c1/n1 reads c2's
  etcd as ``glia-remote``, and writing with them is refused;
- pods in cluster 1 reach pods in cluster 2 by IP, both ways (ping and
  HTTP), although both clusters name their nodes n1 and n2: a pod on c1/n1
  reaches one on c2/n1 and the reverse, and each node's ipcache sends the
  other cluster's pods to the right node of the right cluster;
- ``glia clustermesh status -o json --node c1/n1`` shows c2 synced with its
  nodes and endpoints counted (and the reverse on c2/n1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labhelpers import http, ping, wait_for

from glia.clustermesh import configdir
from glia.clustermesh.config import RemoteClusterConfig
from glia.kvstore import keys
from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

GLIA = Path(sys.executable).parent / "glia"
SYNC_TIMEOUT = 60.0  # a remote cluster connects, lists and syncs; then its pods' entries


@pytest.fixture(scope="module")
def pods(mesh: Lab) -> Iterator[dict[str, Container]]:
    """A busybox httpd answering its name on every node, by node ("c1/n1": ...)."""
    started: dict[str, Container] = {}
    try:
        for n in mesh.topo.nodes:
            name = f"glia-mesh-{n.cluster}{n.name}"
            started[n.ref] = mesh.run_container(n.ref, name, labels={"app": f"mesh-{n.key}"})
        yield started
    finally:
        for node, ctr in started.items():
            mesh.remove_container(node, ctr.name)


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


def remote_file(lab: Lab, node: str, cluster: str) -> RemoteClusterConfig:
    """The remote cluster file the lab gave ``node``'s agent for ``cluster``, as it loads it."""
    path = lab.node(node).clustermesh_dir / f"{cluster}.yaml"
    return configdir.load_file(path, cluster)


def etcdctl_as(
    lab: Lab, node: str, cfg: RemoteClusterConfig, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """etcdctl from ``node``'s namespace with exactly the settings of a remote cluster file."""
    etcd = cfg.etcd
    argv = [
        "etcdctl",
        f"--endpoints={','.join(etcd.endpoints)}",
        f"--cacert={etcd.ca_file}",
        f"--cert={etcd.cert_file}",
        f"--key={etcd.key_file}",
        "--dial-timeout=3s",
        "--command-timeout=5s",
        *args,
    ]
    return lab.node_exec(node, argv, input=stdin, timeout=20)


def clustermesh_status(lab: Lab, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GLIA), "clustermesh", "status", "--node", node, *args],
        env=lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def remote_cluster(lab: Lab, node: str, cluster: str) -> dict[str, Any] | None:
    """``cluster``'s entry of ``glia clustermesh status -o json --node NODE``."""
    r = clustermesh_status(lab, node, "-o", "json")
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    return next((c for c in answer["clusters"] if c.get("name") == cluster), None)


# -- the wiring -----------------------------------------------------------------------


def test_every_agent_has_one_file_per_other_cluster(mesh: Lab) -> None:
    for n in mesh.topo.nodes:
        other = "c2" if n.cluster == "c1" else "c1"
        assert mesh.agent_config(n.ref).clustermesh_dir == str(n.clustermesh_dir)
        scan = configdir.scan(n.clustermesh_dir)
        assert (sorted(scan.configs), scan.errors) == ([other], {}), n.ref
        cfg = scan.configs[other]
        assert cfg.cluster_id == mesh.topo.cluster(other).id
        assert cfg.etcd.endpoints == [mesh.topo.cluster(other).etcd_endpoint]


def test_every_node_reaches_the_other_clusters_nodes_and_etcd(mesh: Lab) -> None:
    for n in mesh.topo.nodes:
        for c in mesh.topo.clusters:
            if c.name == n.cluster:
                continue
            for peer in c.nodes:
                r = mesh.node_exec(n.ref, ["busybox", "ping", "-c", "1", "-W", "2", str(peer.ip)])
                assert r.returncode == 0, f"{n.ref} -> {peer.ref} ({peer.ip}): {r.stdout}"
            cfg = remote_file(mesh, n.ref, c.name)
            r = etcdctl_as(mesh, n.ref, cfg, "endpoint", "health")
            assert r.returncode == 0, f"{n.ref} -> {c.name}'s etcd: {r.stderr}"


def test_the_remote_user_reads_and_cannot_write(mesh: Lab) -> None:
    cfg = remote_file(mesh, "c1/n1", "c2")
    r = etcdctl_as(mesh, "c1/n1", cfg, "get", "--prefix", "--keys-only", keys.STATE)
    assert r.returncode == 0, r.stderr
    assert keys.node("c2", "n1") in r.stdout.split()  # c2's own state, read from c1/n1
    assert keys.cluster_info("c2") in r.stdout.split()
    r = etcdctl_as(mesh, "c1/n1", cfg, "get", keys.HEARTBEAT)
    assert r.returncode == 0 and r.stdout.startswith(keys.HEARTBEAT), r.stderr
    for key in (keys.node("c2", "n9"), keys.HEARTBEAT, keys.CONFIG + "services/default/x"):
        r = etcdctl_as(mesh, "c1/n1", cfg, "put", key, "forged")
        assert r.returncode != 0 and "permission denied" in r.stderr, (key, r.stdout, r.stderr)
    # c1's own CA does not vouch for c2's etcd: the file's CA is c2's.
    assert cfg.etcd.ca_file == str(mesh.topo.cluster("c2").pki_dir / "glia-ca.crt")


# -- pods across clusters -------------------------------------------------------------


def test_pods_reach_pods_of_the_other_cluster_both_ways(
    mesh: Lab, pods: dict[str, Container]
) -> None:
    # Same node name, other cluster: the pairs that a node-name-only design would mix up.
    pairs = [
        ("c1/n1", "c2/n1"),
        ("c2/n1", "c1/n1"),
        ("c1/n2", "c2/n2"),
        ("c2/n2", "c1/n2"),
        ("c1/n1", "c2/n2"),
        ("c2/n2", "c1/n1"),
    ]
    for a, b in pairs:
        src, dst = pods[a], pods[b]
        wait_for(
            f"ping {a} ({src.name}) -> {b} ({_ip(dst)})",
            lambda s=src, d=dst: ping(mesh, s, _ip(d)),
            timeout=SYNC_TIMEOUT,
        )
        assert http(mesh, src, _ip(dst)) == dst.name, f"HTTP {a} -> {b}"
    # Within each cluster too (the mesh must not disturb it).
    for a, b in [("c1/n1", "c1/n2"), ("c2/n2", "c2/n1")]:
        assert ping(mesh, pods[a], _ip(pods[b])), f"{a} -> {b}"
        assert http(mesh, pods[a], _ip(pods[b])) == pods[b].name


def test_each_node_tunnels_to_the_right_node_of_the_right_cluster(
    mesh: Lab, pods: dict[str, Container]
) -> None:
    for n in mesh.topo.nodes:
        others = [o for o in mesh.topo.nodes if o.cluster != n.cluster]
        wanted = {f"{_ip(pods[o.ref])}/32": o for o in others}

        def imported(
            node: str = n.ref, w: frozenset[str] = frozenset(wanted)
        ) -> dict[str, Any] | None:
            have = {str(e["prefix"]): e for e in mesh.agent(node).bpf_ipcache()}
            return have if w <= set(have) else None

        got = wait_for(
            f"{n.ref}'s ipcache to hold the other cluster's pods", imported, timeout=SYNC_TIMEOUT
        )
        for prefix, owner in wanted.items():
            entry = got[prefix]
            assert entry["tunnel_endpoint"] == str(owner.ip), (n.ref, prefix, entry)
            assert entry["cluster_id"] == owner.cluster_id, (n.ref, prefix, entry)


# -- glia clustermesh status ----------------------------------------------------------


@pytest.mark.parametrize(("node", "remote"), [("c1/n1", "c2"), ("c2/n1", "c1")])
def test_clustermesh_status_shows_the_other_cluster_synced(
    mesh: Lab, pods: dict[str, Container], node: str, remote: str
) -> None:
    def synced() -> dict[str, Any] | None:
        entry = remote_cluster(mesh, node, remote)
        ok = entry is not None and entry.get("state") == "synced" and entry.get("endpoints", 0) >= 2
        return entry if ok else None

    entry = wait_for(f"{node}: {remote} synced with its 2 pods", synced, timeout=SYNC_TIMEOUT)
    c = mesh.topo.cluster(remote)
    assert entry["id"] == c.id
    assert entry["ready"] is True
    assert entry["pod_pools"] == [str(c.pod_pool)]
    assert entry["nodes"] == 2
    assert entry["rejected"] == 0, entry
    assert entry["last_error"] is None, entry
    r = clustermesh_status(mesh, node, "-o", "json")
    answer = json.loads(r.stdout)
    assert answer["config_dir"] == str(mesh.node(node).clustermesh_dir)
    assert answer["config_errors"] == {}
    assert [x["name"] for x in answer["clusters"]] == [remote]
    table = clustermesh_status(mesh, node)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(remote + " "))
    assert row.split()[1:3] == [str(c.id), "synced"], table.stdout
