"""The full lab (etcd, operator, agents): daemons healthy, wiring, CLI, teardown after a crash.

Needs root, the agent and the operator. Uses the session ``lab`` (gliat) and,
for the teardown test, a lab of its own ("gliad" with agents).
"""

from __future__ import annotations

import subprocess

import pytest
from labhelpers import lab_dir, leftovers, wait_for

from glia.lab import netns, processes
from glia.lab.lab import Lab, bin_dir

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def test_every_daemon_is_alive_and_every_agent_healthy(lab: Lab) -> None:
    st = lab.status()
    assert st["up"] and st["agents"]
    for c in st["clusters"]:
        assert c["etcd"]["alive"] and c["operator"]["alive"], c
        for n in c["nodes"]:
            assert n["netns_exists"] and n["agent"]["alive"] and n["agent"]["healthy"], n


def test_agent_config_points_at_the_lab(lab: Lab) -> None:
    for node in lab.topo.nodes:
        status = lab.agent(node.ref).status()
        assert status["healthy"] is True
        cfg = lab.agent_config(node.ref)
        assert cfg.node_ip == str(node.ip)
        assert cfg.etcd.endpoints == [lab.topo.cluster(node.cluster).etcd_endpoint]
        assert cfg.runtime_env["CONTAINERS_CONF"] == str(node.containers_conf)


def test_nodes_reach_each_other_and_etcd(lab: Lab) -> None:
    n2 = str(lab.node("c1/n2").ip)
    r = lab.node_exec("c1/n1", ["busybox", "ping", "-c", "1", "-W", "2", n2])
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = lab.etcd_config("c1")
    health = lab.node_exec(
        "c1/n2",
        [
            "etcdctl",
            f"--endpoints={lab.topo.cluster('c1').etcd_endpoint}",
            f"--cacert={cfg.ca_file}",
            f"--cert={cfg.cert_file}",
            f"--key={cfg.key_file}",
            "endpoint",
            "health",
        ],
        timeout=20,
    )
    assert health.returncode == 0, health.stderr


def test_nodes_learn_each_other_through_etcd(lab: Lab) -> None:
    def both_known() -> list[dict[str, object]] | None:
        nodes = lab.agent("c1/n1").nodes()
        return nodes if len(nodes) == len(lab.topo.nodes) else None

    nodes = wait_for("both nodes in c1/n1's node list", both_known)
    ips = sorted(str(n["node_ip"]) for n in nodes)
    assert ips == sorted(str(n.ip) for n in lab.topo.nodes)


def test_cli_reaches_a_node_through_its_socket(lab: Lab) -> None:
    r = subprocess.run(
        [str(bin_dir() / "glia"), "status", "--node", "c1/n2"],
        env=lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_down_after_a_crash_removes_containers_agents_and_pins() -> None:
    small = Lab.open("gliad", lab_dir("gliad"), clusters=1, nodes=1)
    try:
        small.up(recreate=True)
        ctr = small.run_container("c1/n1", "glia-t-crash", labels={"app": "web"})
        assert ctr.ip and ctr.netns_path
        st = small.state()
        assert st is not None
        agent = st.processes["c1-n1-agent"]
        small.topo.state_file.unlink()  # the CLI that held the record is gone
        report = Lab.open("gliad", lab_dir("gliad")).down()
        assert report.containers == ["c1/n1/glia-t-crash"] and not report.problems
        assert not processes.alive(agent)
        assert not netns.exists(ctr.netns_path.rsplit("/", 1)[-1])
        assert leftovers(small, [ctr.netns_path]) == []
    finally:
        small.down()
