"""Network policy on the session lab: `glia apply -f` a CiliumNetworkPolicy, real TCP.

One cluster, two nodes; a web pod on each node (httpd on :80, a line server on
:7000), a client pod (app=client) and another pod (app=other), on different
nodes so both local and cross-node delivery are judged. The policy lets only
app=client reach app=web, on TCP 80. Checked: every node's policy map holds
it within 1 s of `glia apply` returning; client -> web:80 connects, other ->
web:80 and client -> web:7000 do not; a connection other -> web:7000 opened
before the apply keeps flowing; `glia bpf policy list` shows the entries and
the rule; `glia delete -f` restores default allow everywhere, also within 1 s.
And across a restart of the web pod's agent the policy holds: while the agent
is down (the pinned maps enforce alone) and after it is back (its first sync
finds the maps right: the same rows, nothing wiped).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from labhelpers import (
    NODES,
    STREAM_PORT,
    LineReader,
    Workload,
    backend_command,
    endpoint_named,
    http,
    tcp_send,
    wait_for,
)
from labhelpers import (
    glia_ok as glia,
)

from glia.lab.base import bin_dir
from glia.lab.lab import Lab
from glia.lab.podman import Container

pytestmark = [pytest.mark.e2e, pytest.mark.root]

CHANGE_BOUND = 1.0  # s: the "a policy change on every node within 1 s"
POLICY = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web-from-client"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "pweb"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "pclient"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    },
}
RULE = "default/web-from-client: spec.ingress[0]"


def enforced_everywhere(lab: Lab, webs: list[Container]) -> dict[str, bool]:
    """Per web pod: whether its node's policy map enforces ingress for it now."""
    out = {}
    for w in webs:
        got = lab.agent(w.node).get(f"/v1/bpf/policy?endpoint={w.ip}")
        out[w.name] = bool(got["ingress_enforced"]) and any(
            r["ports"] == [80, 80] and r["action"] == "allow" for r in got["rows"]
        )
    return out


def until_all(lab: Lab, webs: list[Container], want: bool, t0: float) -> float:
    """Poll the agents until every web pod is (not) enforced; seconds since ``t0``."""
    deadline = t0 + 10.0
    while True:
        state = enforced_everywhere(lab, webs)
        if all(v == want for v in state.values()):
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            pytest.fail(f"policy maps not {'programmed' if want else 'cleared'}: {state}")
        time.sleep(0.02)


def test_policy_allows_only_the_client_and_keeps_open_connections(
    lab: Lab, work: Workload, tmp_path: Path
) -> None:
    webs = [
        work.container(node, f"glia-pweb{i}", {"app": "pweb"}, backend_command(f"glia-pweb{i}"))
        for i, node in enumerate(NODES, 1)
    ]
    client = work.container(NODES[1], "glia-pclient", {"app": "pclient"})
    other = work.container(NODES[0], "glia-pother", {"app": "pother"})
    work.endpoint_ready(*webs, client, other)
    for w in webs:
        assert w.ip
        wait_for(f"other -> {w.name} before any policy", lambda w=w: http(lab, other, w.ip))

    # A connection opened before the policy: other -> web1's line server.
    web1 = webs[0]
    assert web1.ip
    loop = f"while [ ! -e /tmp/stop ]; do echo hi; sleep 0.1; done | nc {web1.ip} {STREAM_PORT}"
    reader = LineReader(work.exec_bg(other, ["sh", "-c", loop]))
    reader.wait_more(0.0, 3)

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    try:
        glia(lab, "apply", "-f", str(path), "--node", NODES[0])
        t_applied = time.monotonic()
        took = until_all(lab, webs, True, t_applied)
        assert took < CHANGE_BOUND, f"policy on every node after {took:.2f} s"

        for w in webs:
            assert w.ip
            assert http(lab, client, w.ip) == w.name, f"client -> {w.name}:80"
            assert http(lab, other, w.ip) == "", f"other -> {w.name}:80 must be refused"
            assert not tcp_send(lab, client, w.ip, STREAM_PORT), f"client -> {w.name}:7000"
        # The connection opened before keeps flowing.
        t = time.monotonic()
        assert set(reader.wait_more(t, 5)) == {web1.name}

        listed = json.loads(glia(lab, "bpf", "policy", "list", web1.name, "-o", "json",
                                 "--node", web1.node))  # fmt: skip
        client_ep = endpoint_named(lab, client)
        assert client_ep is not None
        rows = [r for r in listed["rows"] if r["peer"] == client_ep["identity"]]
        assert [(r["direction"], r["proto"], r["ports"], r["action"]) for r in rows] == [
            ("ingress", "TCP", [80, 80], "allow")
        ], listed["rows"]
        assert rows[0]["rules"] == [RULE]
        assert "app=pclient" in rows[0]["peer_labels"]
        assert listed["ingress_enforced"] and not listed["egress_enforced"]
        table = glia(lab, "bpf", "policy", "list", str(web1.ip), "--node", web1.node)
        assert "allow" in table and RULE in table and "reserved:host" in table

        views: list[Any] = lab.agent(web1.node).get("/v1/policy/endpoints")
        mine = next(v for v in views if v["endpoint"] == f"default/{web1.name}")
        assert mine["ingress_enforced"] and mine["entries"] >= 2  # client:80, host

        for node in NODES:
            st = json.loads(glia(lab, "status", "-o", "json", "--node", node))
            pol = st["subsystems"]["policy"]
            assert pol["state"] == "ok", pol
            assert st["policy"]["policies"] >= 1 and st["policy"]["subjects"] >= 1

        glia(lab, "delete", "-f", str(path), "--node", NODES[1])
        t_deleted = time.monotonic()
    except BaseException:
        subprocess.run([str(bin_dir() / "glia"), "delete", "-f", str(path), "--node", NODES[0],
                        "--ignore-not-found"], env=lab.cli_env(), check=False)  # fmt: skip
        raise
    took = until_all(lab, webs, False, t_deleted)
    assert took < CHANGE_BOUND, f"policy removed from every node after {took:.2f} s"
    for w in webs:
        assert w.ip
        assert http(lab, other, w.ip) == w.name, f"other -> {w.name} after the delete"
    t = time.monotonic()
    assert set(reader.wait_more(t, 3)) == {web1.name}
    lab.exec(f"{other.node}/{other.name}", ["touch", "/tmp/stop"], check=True)


def _rows(lab: Lab, web: Container) -> list[tuple[Any, ...]]:
    got = lab.agent(web.node).get(f"/v1/bpf/policy?endpoint={web.ip}")
    return sorted(
        (r["direction"], r["peer"], r["proto"], tuple(r["ports"]), r["action"]) for r in got["rows"]
    )


def test_enforcement_outlives_an_agent_restart(lab: Lab, work: Workload, tmp_path: Path) -> None:
    web = work.container(NODES[0], "glia-prweb", {"app": "pweb"}, backend_command("glia-prweb"))
    client = work.container(NODES[1], "glia-prclient", {"app": "pclient"})
    other = work.container(NODES[1], "glia-prother", {"app": "pother"})
    work.endpoint_ready(web, client, other)
    assert web.ip
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    glia(lab, "apply", "-f", str(path), "--node", NODES[1])
    try:
        until_all(lab, [web], True, time.monotonic())
        before = _rows(lab, web)
        assert http(lab, client, web.ip) == web.name
        assert http(lab, other, web.ip) == ""

        lab.stop_agent(web.node)
        try:
            # The pinned maps enforce without an agent.
            assert http(lab, client, web.ip) == web.name
            assert http(lab, other, web.ip) == ""
        finally:
            lab.start_agent(web.node, wait=True)
        assert _rows(lab, web) == before
        assert http(lab, client, web.ip) == web.name
        assert http(lab, other, web.ip) == ""
        st = json.loads(glia(lab, "status", "-o", "json", "--node", web.node))
        assert st["subsystems"]["policy"]["state"] == "ok", st["subsystems"]["policy"]
    finally:
        glia(lab, "delete", "-f", str(path), "--node", NODES[1], "--ignore-not-found")
    until_all(lab, [web], False, time.monotonic())
    assert http(lab, other, web.ip) == web.name
