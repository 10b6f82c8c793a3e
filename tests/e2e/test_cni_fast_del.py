"""CNI DEL returns before the kernel has removed the veth; what must still hold.

Needs root and the lab (GLIA_E2E_LAB names it). The agent removes an
endpoint's veth in the background (glia.endpoint.veth_removal), so shown here
with the real agent and the real glia-cni:

- a DEL followed at once by an ADD of the same container and ifname (what
  ``podman restart`` does) gets a working endpoint: the veth the second ADD
  made, its endpoint map entry pointing at that veth, the pod's address; and
  when the pod namespace outlives the DEL, the agent's deletion removes the
  pair by itself;
- a host veth a failed deletion left behind (no record claims it) is removed
  when the agent starts again, and the endpoints it has are untouched.

The pod namespace is named after the lab (``<lab>-fastdel-pod``) and removed
at the end, also on failure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from labhelpers import host_veths, wait_for

from glia.datapath.netlink import host_ifname_for
from glia.lab import netns
from glia.lab.lab import Lab
from glia.lab.podman import NETWORK

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NODE = "c1/n1"
ROUNDS = 10


@pytest.fixture
def pod(lab: Lab) -> Iterator[str]:
    name = f"{lab.name}-fastdel-pod"
    if netns.exists(name):
        netns.delete(name)
    netns.add(name)
    try:
        yield str(netns.path(name))
    finally:
        if netns.exists(name):
            netns.delete(name)


def plugin_conf(lab: Lab) -> dict[str, Any]:
    path = lab.node(NODE).cni_config_dir / f"{NETWORK}.conflist"  # not glia-chained's
    conflist = json.loads(path.read_text())
    return {
        "cniVersion": conflist["cniVersion"],
        "name": conflist["name"],
        **conflist["plugins"][0],
    }


def cni(lab: Lab, command: str, cid: str, pod: str, conf: dict[str, Any]) -> dict[str, Any]:
    """The lab's glia-cni in the node's namespace, as podman runs it there."""
    env = [
        f"CNI_COMMAND={command}",
        f"CNI_CONTAINERID={cid}",
        f"CNI_NETNS={pod}",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=glia-fastdel",
        f"CNI_PATH={lab.topo.cni_bin_dir}",
    ]
    argv = ["env", "-i", *env, str(lab.topo.cni_bin_dir / "glia-cni")]
    r = lab.node_exec(NODE, argv, input=json.dumps(conf), timeout=30)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    return json.loads(r.stdout) if r.stdout.strip() else {}


def pod_addresses(lab: Lab, pod: str) -> list[str]:
    r = lab.node_exec(NODE, ["nsenter", f"--net={pod}", "ip", "-j", "-4", "addr", "show", "eth0"])
    if r.returncode != 0:
        return []
    return [a["local"] for link in json.loads(r.stdout) for a in link["addr_info"]]


def check_endpoint(lab: Lab, cid: str, pod: str) -> str:
    """One endpoint for ``cid``, plumbed through the veth that exists now; its IP."""
    host = host_ifname_for(cid, "eth0")
    agent = lab.agent(NODE)
    [ep] = [e for e in agent.endpoints() if e["container_id"] == cid]
    veths = host_veths(lab, NODE)
    assert host in veths, f"{host} missing after the ADD"
    [entry] = [e for e in agent.bpf_endpoints() if e["ip"] == ep["ip"]]
    assert entry["ifindex"] == veths[host], "the endpoint map points at another interface"
    assert pod_addresses(lab, pod) == [ep["ip"]]
    return str(ep["ip"])


def test_an_add_right_after_a_del_of_the_same_container_works(lab: Lab, pod: str) -> None:
    conf = plugin_conf(lab)
    cid = "gliafastdel" + uuid.uuid4().hex
    host = host_ifname_for(cid, "eth0")
    agent = lab.agent(NODE)
    req = {"container_id": cid, "netns": pod, "ifname": "eth0", "args": {}, "config": conf}
    log = lab.node(NODE).agent_log
    log_start = log.stat().st_size
    try:
        cni(lab, "ADD", cid, pod, conf)
        first_ip = check_endpoint(lab, cid, pod)
        for _ in range(ROUNDS):
            # Straight to the agent: no plugin start between the two calls.
            agent.cni_del(req)
            agent.cni_add(req)
            assert check_endpoint(lab, cid, pod) == first_ip  # a restart keeps its IP
        # The runtime's own path once more: the plugin's DEL, then its ADD.
        cni(lab, "DEL", cid, pod, conf)
        cni(lab, "ADD", cid, pod, conf)
        check_endpoint(lab, cid, pod)
    finally:
        cni(lab, "DEL", cid, pod, conf)
    # The pod namespace still exists: the agent's background deletion removes the pair.
    wait_for(f"{host} to be removed", lambda: host not in host_veths(lab, NODE), timeout=5)
    assert pod_addresses(lab, pod) == []
    assert not [e for e in agent.endpoints() if e["container_id"] == cid]
    with log.open() as f:
        f.seek(log_start)
        text = f.read()
    assert "Traceback" not in text and "removing endpoint interface" not in text, text


def test_a_veth_a_failed_deletion_left_is_removed_at_the_next_start(lab: Lab) -> None:
    # What a background deletion that failed leaves: a host veth no record claims.
    left = host_ifname_for("gliafastdel-left" + uuid.uuid4().hex, "eth0")
    peer = "gliafdp" + uuid.uuid4().hex[:8]
    before = sorted(lab.agent(NODE).endpoints(), key=lambda e: str(e["name"]))
    lab.node_exec(
        NODE, ["ip", "link", "add", left, "type", "veth", "peer", "name", peer], check=True
    )
    try:
        assert left in host_veths(lab, NODE)
        lab.restart_agent(NODE)
        assert left not in host_veths(lab, NODE), "the leftover veth survived the restart"
        after = sorted(lab.agent(NODE).endpoints(), key=lambda e: str(e["name"]))
        assert after == before
    finally:
        lab.node_exec(NODE, ["ip", "link", "del", left])
