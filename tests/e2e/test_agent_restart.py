"""kill -9 of an agent mid-stream: traffic flows on, the restarted agent adopts everything.

Uses the session lab: a TCP stream from ``cli`` (c1/n1) to ``srv`` (c1/n2),
and ``other`` on c1/n1 so the node has more than one endpoint. The agent of
c1/n1 is killed with SIGKILL while the stream runs (no clean-up of any kind),
stays dead for a while, and is started again. Shown here:

- the stream neither breaks nor loses a byte, and it keeps flowing while no
  agent runs (pinned maps, attached programs);
- the restarted agent adopts the endpoints: the same IPs and identities, one
  endpoint map entry each, one host veth each, the IPAM file holding exactly
  their IPs, and in etcd exactly one endpoint and one ipcache key each, moved
  to the new agent's lease (so the dead agent's lease expiring removes none of
  them), with the same identity references;
- a container started after the restart gets a fresh IP and reaches the old ones.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labhelpers import StoredKey, endpoint_named, etcd_keys, host_veths, http, ping, wait_for

from glia.kvstore import keys
from glia.lab import processes
from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model.identity import MIN_LOCAL

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NODE = "c1/n1"  # the node whose agent is killed
PORT = 7002
CHUNK = 10240  # bytes the client writes per round


@dataclass
class Pods:
    cli: Container  # c1/n1, sends the stream
    other: Container  # c1/n1
    srv: Container  # c1/n2, receives the stream


def _ip(ctr: Container) -> str:
    assert ctr.ip, f"{ctr.name} has no IP"
    return ctr.ip


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[Pods]:
    tag = uuid.uuid4().hex[:6]
    started: list[Container] = []
    try:
        for node, role in [(NODE, "cli"), (NODE, "other"), ("c1/n2", "srv")]:
            name = f"glia-rs-{role}-{tag}"
            started.append(lab.run_container(node, name, labels={"app": f"{role}-{tag}"}))
        pods = Pods(*started)
        for src, dst in [(pods.cli, pods.srv), (pods.srv, pods.cli), (pods.other, pods.cli)]:
            wait_for(f"ping {src.name} -> {dst.name}", lambda s=src, d=dst: ping(lab, s, _ip(d)))
        yield pods
    finally:
        for ctr in started:
            lab.remove_container(ctr.node, ctr.name)


@dataclass
class NodeView:
    """Everything of one node that an agent restart must leave as it was."""

    endpoints: list[dict[str, Any]]  # the agent's API
    bpf_endpoints: dict[str, dict[str, Any]]  # endpoint map, by IP
    bpf_ipcache: dict[str, dict[str, Any]]  # ipcache map, by prefix
    veths: dict[str, int]  # gliae* in the node's namespace -> ifindex
    ipam: dict[str, str]  # the IPAM file's allocations: IP -> owner
    etcd_endpoints: dict[str, StoredKey]  # this node's endpoint keys
    etcd_ipcache: dict[str, StoredKey]  # this node's ipcache keys
    etcd_refs: dict[str, StoredKey]  # this node's identity references
    node_key: StoredKey


def _view(lab: Lab, node: str) -> NodeView:
    spec = lab.node(node)
    client = lab.agent(node)
    endpoints = sorted(client.endpoints(), key=lambda e: str(e["name"]))
    bpf = {str(e["ip"]): e for e in client.bpf_endpoints()}
    ipcache = {str(e["prefix"]): e for e in client.bpf_ipcache()}
    ipam = json.loads((spec.state_dir / "ipam.json").read_text())["allocations"]
    stored = etcd_keys(lab, spec.cluster, keys.STATE)

    def mine(prefix: str) -> dict[str, StoredKey]:
        return {k: v for k, v in stored.items() if k.startswith(prefix)}

    refs = mine(keys.identity_refs(spec.cluster, spec.name))
    return NodeView(
        endpoints=endpoints,
        bpf_endpoints=bpf,
        bpf_ipcache=ipcache,
        veths=host_veths(lab, node),
        ipam=ipam,
        etcd_endpoints=mine(keys.endpoints(spec.cluster, spec.name)),
        etcd_ipcache=mine(keys.ipcaches(spec.cluster, spec.name)),
        etcd_refs=refs,
        node_key=stored[keys.node(spec.cluster, spec.name)],
    )


def _check_consistent(view: NodeView, containers: list[Container]) -> None:
    """One of everything per container, and nothing else."""
    names = sorted(c.name for c in containers)
    ips = {_ip(c) for c in containers}
    assert [e["name"] for e in view.endpoints] == names
    assert {e["ip"] for e in view.endpoints} == ips
    assert set(view.bpf_endpoints) == ips, "endpoint map entries"
    assert sorted(view.veths) == sorted(e["host_ifname"] for e in view.endpoints), "host veths"
    assert set(view.ipam) == ips, "IPAM allocations"
    assert sorted(k.rsplit("/", 1)[1] for k in view.etcd_endpoints) == names, "endpoint keys"
    assert sorted(k.rsplit("/", 1)[1] for k in view.etcd_ipcache) == sorted(ips), "ipcache keys"
    for ep in view.endpoints:
        assert ep["identity"] >= MIN_LOCAL, ep
        entry = view.bpf_endpoints[ep["ip"]]
        assert entry["identity"] == ep["identity"]
        assert entry["ifindex"] == view.veths[ep["host_ifname"]]
    want_refs = sorted({str(e["identity"]) for e in view.endpoints})
    assert sorted(keys.last(k) for k in view.etcd_refs) == want_refs, "identity refs"
    # Everything the agent publishes lives and dies with its one lease.
    leases = {v.lease for v in [*view.etcd_endpoints.values(), *view.etcd_ipcache.values()]}
    leases |= {v.lease for v in view.etcd_refs.values()}
    assert leases == {view.node_key.lease} and view.node_key.lease != 0, leases


def _received(lab: Lab, srv: Container) -> int:
    r = lab.exec(f"{srv.node}/{srv.name}", ["stat", "-c", "%s", "/tmp/recv"])
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip() else 0


def _listening(lab: Lab, srv: Container) -> bool:
    r = lab.exec(f"{srv.node}/{srv.name}", ["netstat", "-ltn"])
    return f":{PORT} " in r.stdout


def test_kill_9_mid_stream_keeps_the_stream_and_the_agent_adopts(lab: Lab, pods: Pods) -> None:
    # Removed while the agent is dead: its DEL is queued, and nothing of it may stay.
    gone = lab.run_container(NODE, f"glia-rs-gone-{uuid.uuid4().hex[:6]}")
    try:
        _kill_9_mid_stream(lab, pods, gone)
    finally:
        lab.podman(NODE).run(["rm", "-f", "-t", "0", "--ignore", gone.name], check=False)


def _kill_9_mid_stream(lab: Lab, pods: Pods, gone: Container) -> None:
    wait_for("the doomed endpoint's identity", lambda: endpoint_named(lab, gone))
    before = _view(lab, NODE)
    _check_consistent(before, [pods.cli, pods.other, gone])
    srv, cli = f"{pods.srv.node}/{pods.srv.name}", f"{pods.cli.node}/{pods.cli.name}"
    # stdin that never ends: busybox nc quits when its stdin does.
    lab.exec(srv, ["sh", "-c", f"(sleep 600 | nc -l -p {PORT} > /tmp/recv &)"], check=True)
    wait_for("the stream's listener", lambda: _listening(lab, pods.srv))
    script = (
        "rm -f /tmp/stop; i=0; while [ ! -e /tmp/stop ]; do "
        f"dd if=/dev/zero bs={CHUNK} count=1 2>/dev/null || exit 3; "
        "i=$((i+1)); echo $i > /tmp/sent; usleep 20000; done "
        f"| nc {_ip(pods.srv)} {PORT}; echo rc=$?"
    )
    argv, env = lab.exec_argv(cli, ["sh", "-c", script])
    client = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("the stream to start", lambda: _received(lab, pods.srv) > 0)
        st = lab.state()
        assert st is not None
        agent = st.processes[lab.node(NODE).agent_process]
        lab.stop_agent(NODE, kill=True, stay_down=True)  # the supervisor must not restart it
        assert not processes.alive(agent)
        # No agent on the sender's node: the pinned datapath carries on alone.
        dead = _received(lab, pods.srv)
        wait_for(
            "the stream to flow without an agent",
            lambda: _received(lab, pods.srv) > dead + 25 * CHUNK,
        )
        lab.remove_container(NODE, gone.name)  # glia-cni queues the DEL
        assert list(_delete_queue(lab).glob("*.delete")), "no DEL queued"
        lab.start_agent(NODE, wait=True)
        back = _received(lab, pods.srv)
        wait_for("the stream to flow on", lambda: _received(lab, pods.srv) > back + 25 * CHUNK)
        lab.exec(cli, ["touch", "/tmp/stop"], check=True)
        out, _ = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert out.decode().strip().endswith("rc=0"), f"the stream broke: {out!r}"
    sent = int(lab.exec(cli, ["cat", "/tmp/sent"], check=True).stdout) * CHUNK
    wait_for(f"all {sent} bytes at the server", lambda: _received(lab, pods.srv) == sent)

    assert not list(_delete_queue(lab).glob("*.delete")), "queued DEL not replayed"
    after = _view(lab, NODE)
    _check_consistent(after, [pods.cli, pods.other])
    kept = [e for e in before.endpoints if e["name"] != gone.name]
    assert after.endpoints == kept  # same IPs, identities, veths, labels
    assert after.bpf_endpoints == {ip: e for ip, e in before.bpf_endpoints.items() if ip != gone.ip}
    assert after.veths == {n: i for n, i in before.veths.items() if n in after.veths}
    assert after.ipam == {ip: o for ip, o in before.ipam.items() if ip != gone.ip}
    assert after.bpf_ipcache == {
        p: e for p, e in before.bpf_ipcache.items() if p != f"{gone.ip}/32"
    }
    assert after.node_key.lease != before.node_key.lease, "still on the dead agent's lease"
    for key, stored in after.etcd_ipcache.items():
        assert stored.value == before.etcd_ipcache[key].value
    # The other node keeps the adopted endpoints in its ipcache and drops the removed one.
    node_ip = str(lab.node(NODE).ip)

    def remote_view() -> dict[str, dict[str, Any]] | None:
        rows = {str(e["prefix"]): e for e in lab.agent("c1/n2").bpf_ipcache()}
        return None if f"{gone.ip}/32" in rows else rows

    remote = wait_for(f"c1/n2 to forget {gone.ip}", remote_view)
    for ep in after.endpoints:
        entry = remote[f"{ep['ip']}/32"]
        assert entry["identity"] == ep["identity"] and entry["tunnel_endpoint"] == node_ip


def _delete_queue(lab: Lab) -> Path:
    return lab.node(NODE).socket.parent / "cni-delete-queue"


def test_a_container_started_after_the_restart_reaches_the_old_ones(lab: Lab, pods: Pods) -> None:
    old = {_ip(c) for c in (pods.cli, pods.other, pods.srv)}
    name = f"glia-rs-new-{uuid.uuid4().hex[:6]}"
    new = lab.run_container(NODE, name, labels={"app": name})
    try:
        assert new.ip and new.ip not in old
        for src, dst in [(new, pods.srv), (pods.srv, new), (new, pods.other), (pods.other, new)]:
            wait_for(f"ping {src.name} -> {dst.name}", lambda s=src, d=dst: ping(lab, s, _ip(d)))
        assert http(lab, new, _ip(pods.srv)) == pods.srv.name
        assert http(lab, pods.srv, _ip(new)) == new.name
        _check_consistent(_view(lab, NODE), [pods.cli, pods.other, new])
    finally:
        lab.remove_container(NODE, name)
    _check_consistent(_view(lab, NODE), [pods.cli, pods.other])
