"""The real glia-cni against a real agent in a lab node: bad input is refused, nothing plumbed.

Needs root and the lab (GLIA_E2E_LAB names it). Each refused call must come
back with its CNI error code (https://www.cni.dev/docs/spec/#error) and leave
the node as it was: no new link or address in the node's namespace, the same
IPAM allocations and endpoint records, an agent still healthy and a log
without a traceback. The pod namespaces the test makes are named after the
lab (``<lab>-badpod-*``) and removed at the end, also on failure.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from glia.agent.client import AgentError
from glia.lab import netns
from glia.lab.lab import Lab
from glia.lab.podman import NETWORK

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NODE = "c1/n1"
LONG_ID = "a" * 250  # valid characters, as the spec allows any length


@pytest.fixture
def pods(lab: Lab) -> Iterator[tuple[str, str]]:
    """Two pod network namespaces, paths under /run/netns; removed afterwards."""
    names = [f"{lab.name}-badpod-a", f"{lab.name}-badpod-b"]
    for name in names:
        if netns.exists(name):
            netns.delete(name)
        netns.add(name)
    try:
        yield str(netns.path(names[0])), str(netns.path(names[1]))
    finally:
        for name in names:
            if netns.exists(name):
                netns.delete(name)
        assert not [n for n in names if netns.exists(n)]


def plugin_conf(lab: Lab, **changes: Any) -> dict[str, Any]:
    """What a runtime gives glia-cni on stdin for this node: the conflist's plugin entry."""
    path = lab.node(NODE).cni_config_dir / f"{NETWORK}.conflist"  # not glia-chained's
    conflist = json.loads(path.read_text())
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"]}
    conf.update(conflist["plugins"][0])
    conf.update(changes)
    return {k: v for k, v in conf.items() if v is not None}


def cni(
    lab: Lab, command: str, cid: str, netns_path: str, conf: dict[str, Any], ifname: str = "eth0"
) -> tuple[int, dict[str, Any]]:
    """Run the lab's glia-cni binary in the node's namespace, as podman does there."""
    env = [
        f"CNI_COMMAND={command}",
        f"CNI_CONTAINERID={cid}",
        f"CNI_NETNS={netns_path}",
        f"CNI_IFNAME={ifname}",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=badinput",
        f"CNI_PATH={lab.topo.cni_bin_dir}",
    ]
    argv = ["env", "-i", *env, str(lab.topo.cni_bin_dir / "glia-cni")]
    r = lab.node_exec(NODE, argv, input=json.dumps(conf), timeout=30)
    assert "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout) if r.stdout.strip() else {}
    return r.returncode, out


def refused(lab: Lab, code: int, *args: Any, **kwargs: Any) -> str:
    rc, out = cni(lab, *args, **kwargs)
    assert rc == 1 and out.get("code") == code, out
    return str(out["msg"])


def node_state(lab: Lab) -> dict[str, Any]:
    """What a wrongly plumbed pod would change on the node."""
    n = lab.node(NODE)
    links = lab.node_exec(NODE, ["ip", "-o", "link", "show"], check=True).stdout
    addrs = lab.node_exec(NODE, ["ip", "-o", "addr", "show"], check=True).stdout
    routes = lab.node_exec(NODE, ["ip", "route", "show"], check=True).stdout
    ipam_file = n.state_dir / "ipam.json"  # written at the first allocation
    ipam = json.loads(ipam_file.read_text()) if ipam_file.exists() else {}
    return {
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()),
        "addrs": sorted(" ".join(line.split()[1:4]) for line in addrs.splitlines()),
        "routes": routes,
        "ipam": ipam.get("allocations", {}),
        "records": sorted(p.name for p in (n.state_dir / "endpoints").iterdir()),
    }


def test_bad_cni_input_is_refused_and_changes_nothing(lab: Lab, pods: tuple[str, str]) -> None:
    pod_a, pod_b = pods
    conf = plugin_conf(lab)
    log = lab.node(NODE).agent_log
    log_start = log.stat().st_size
    before = node_state(lab)

    # A 250-character id: the plugin refuses it, and so does the agent if asked directly.
    assert "CNI_CONTAINERID" in refused(lab, 4, "ADD", LONG_ID, pod_a, conf)
    with pytest.raises(AgentError) as ei:
        lab.agent(NODE).cni_add(
            {"container_id": LONG_ID, "netns": pod_a, "ifname": "eth0", "args": {}, "config": conf}
        )
    assert (ei.value.code, ei.value.http_status) == (4, 400), ei.value.msg

    # Namespaces that are not a pod's: the node's own (two ways), not a namespace at all.
    node_netns = str(netns.path(lab.node(NODE).netns))
    msg = refused(lab, 4, "ADD", "gliabadself", "/proc/self/ns/net", conf, ifname="eth7")
    assert msg == (
        "CNI_NETNS /proc/self/ns/net is the node's own network namespace (the agent's), not a pod's"
    )
    msg = refused(lab, 4, "ADD", "gliabadnode", node_netns, conf, ifname="eth7")
    assert msg.startswith(f"CNI_NETNS {node_netns} is the node's own network namespace")
    with tempfile.NamedTemporaryFile(prefix="glia-e2e-notns-") as f:
        msg = refused(lab, 4, "ADD", "gliabadfile", f.name, conf)
        assert msg == f"CNI_NETNS {f.name} is not a network namespace (not a namespace file)"
    msg = refused(lab, 4, "ADD", "gliabaduts", "/proc/self/ns/uts", conf)
    assert msg == "CNI_NETNS /proc/self/ns/uts is a UTS namespace, not a network namespace"
    assert node_state(lab) == before

    # A real pod: a second ADD naming another namespace is refused, the same one answered again.
    cid = "gliabaddup0123456789"
    rc, first = cni(lab, "ADD", cid, pod_a, conf)
    assert rc == 0, first
    try:
        msg = refused(lab, 4, "ADD", cid, pod_b, conf)
        assert msg.startswith(f"CNI_NETNS {pod_b} is not the network namespace of CNI_CONTAINERID")
        assert refused(lab, 4, "ADD", cid, pod_b, conf, ifname="eth1").startswith("CNI_NETNS")
        rc, again = cni(lab, "ADD", cid, pod_a, conf)
        assert (rc, again) == (0, first)
        b_links = subprocess.run(
            ["ip", "-n", Path(pod_b).name, "-o", "link", "show"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert [line.split(":")[1].strip() for line in b_links.splitlines()] == ["lo"]

        # CHECK against the ADD's result passes; a malformed prevResult, another
        # namespace or a configuration without "type" are refused with their codes.
        assert cni(lab, "CHECK", cid, pod_a, {**conf, "prevResult": first}) == (0, {})
        msg = refused(lab, 7, "CHECK", cid, pod_a, {**conf, "prevResult": {"ips": "x"}})
        assert msg == 'invalid prevResult: prevResult.ips: expected a list, got "x"'
        bad_ip = {**first, "ips": [{"address": "not-an-ip", "interface": 1}]}
        msg = refused(lab, 7, "CHECK", cid, pod_a, {**conf, "prevResult": bad_ip})
        assert "prevResult.ips[0].address" in msg
        refused(lab, 4, "CHECK", cid, pod_b, {**conf, "prevResult": first})
        msg = refused(lab, 7, "ADD", "gliabadnotype", pod_b, plugin_conf(lab, type=None))
        assert msg.startswith("missing plugin type")
    finally:
        rc, out = cni(lab, "DEL", cid, pod_a, conf)
        assert rc == 0, out

    assert node_state(lab) == before
    assert lab.agent(NODE).status()["healthy"] is True
    with log.open("rb") as f:
        f.seek(log_start)
        written = f.read().decode(errors="replace")
    assert "Traceback" not in written, written[-4000:]
