"""CNI chaining after the standard ``bridge`` plugin in the session lab: pods of the
``glia-bridge`` network (bridge ``gliabr0`` + glia-cni) next to native glia pods
and ``glia-chained`` (ptp + glia-cni) pods (docs/chaining.md).

Real podman containers and real traffic: a bridged pod reaches and is reached
by native, ptp-chained and other bridged pods on its node (one on the same
bridge: ARP across the bridge, IP redirected past it by glia) and on the other
node; the nodes reach it through the bridge; a Service selects it by label and
load-balances to it and a native backend; policy selects it by label and judges
bridged clients by their identity; an agent restart keeps the bridged
endpoint; ``podman rm`` leaves the bridge's part to the bridge plugin; the
conflists' ``tuning`` turned IPv6 off in every chained pod.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from labhelpers import (
    Workload,
    backend_command,
    glia_ok,
    http,
    http_names,
    ingress_program,
    metric_delta,
    metrics,
    netns_python,
    node_fetches,
    ping,
    reaches,
    service_manifest,
    wait_backends,
    wait_for,
)

from glia.lab.lab import Lab
from glia.lab.podman import BRIDGE_DEVICE, BRIDGE_NETWORK, CHAINED_NETWORK, NETWORK, Container
from glia.model.identity import MIN_LOCAL

pytestmark = [pytest.mark.e2e, pytest.mark.root]

N1, N2 = "c1/n1", "c1/n2"
WEB, CLIENT, OTHER = "brweb", "brclient", "brother"


@dataclass
class Pods:
    bridged: Container  # n1, bridge + glia-cni, app=brweb (a Service backend)
    bridged_b: Container  # n1, same bridge, not a client
    ptp: Container  # n1, ptp + glia-cni, client
    local: Container  # n1, native, client
    remote: Container  # n2, native, app=brweb (the Service's other backend)
    bridged2: Container  # n2, bridge + glia-cni, client
    ptp2: Container  # n2, ptp + glia-cni, not a client


def _run(lab: Lab, w: Workload, node: str, name: str, app: str, tag: str, net: str) -> Container:
    ctr = lab.run_container(
        node, name, labels={"app": app, "tag": tag}, command=backend_command(name), network=net
    )
    w.containers.append(ctr)
    return ctr


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[tuple[Pods, Workload]]:
    t = uuid.uuid4().hex[:6]
    w = Workload(lab)
    try:
        p = Pods(
            bridged=_run(lab, w, N1, f"glia-br-a-{t}", WEB, t, BRIDGE_NETWORK),
            bridged_b=_run(lab, w, N1, f"glia-br-b-{t}", OTHER, t, BRIDGE_NETWORK),
            ptp=_run(lab, w, N1, f"glia-br-p-{t}", CLIENT, t, CHAINED_NETWORK),
            local=_run(lab, w, N1, f"glia-br-n-{t}", CLIENT, t, NETWORK),
            remote=_run(lab, w, N2, f"glia-br-r-{t}", WEB, t, NETWORK),
            bridged2=_run(lab, w, N2, f"glia-br-c-{t}", CLIENT, t, BRIDGE_NETWORK),
            ptp2=_run(lab, w, N2, f"glia-br-q-{t}", OTHER, t, CHAINED_NETWORK),
        )
        w.endpoint_ready(p.bridged, p.bridged_b, p.ptp, p.local, p.remote, p.bridged2, p.ptp2)
        yield p, w
    finally:
        w.close()


def _endpoint(lab: Lab, ctr: Container) -> dict[str, Any] | None:
    return next((e for e in lab.agent(ctr.node).endpoints() if e["name"] == ctr.name), None)


def _halves(lab: Lab, node: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    block = ipaddress.IPv4Network(lab.agent(node).status()["chained_cidr"])
    low, high = block.subnets(prefixlen_diff=1)
    return low, high


def test_bridged_pods_are_ports_of_the_bridge_in_the_upper_half_of_the_block(
    lab: Lab, pods: tuple[Pods, Workload]
) -> None:
    p, _ = pods
    for ctr in (p.bridged, p.bridged_b, p.bridged2):
        low, high = _halves(lab, ctr.node)
        assert ctr.ip and ipaddress.ip_address(ctr.ip) in high
        ep = _endpoint(lab, ctr)
        assert ep is not None and ep["chained"] is True and ep["ip"] == ctr.ip
        assert ep["identity"] >= MIN_LOCAL and ep["labels"]["app"] == ctr.labels["app"]
        host = ep["host_ifname"]
        assert not host.startswith("gliae")
        link = lab.node_exec(ctr.node, ["ip", "-o", "link", "show", "dev", host], check=True)
        assert f"master {BRIDGE_DEVICE}" in link.stdout  # a port of the bridge
        assert ingress_program(lab, ctr.node, host) == "from_endpoint"
        # The pod's gateway is the bridge's address, the first host of the half.
        addr = lab.node_exec(ctr.node, ["ip", "-4", "-o", "addr", "show", "dev", BRIDGE_DEVICE])
        assert f"{high.network_address + 1}/{high.prefixlen}" in addr.stdout
        route = lab.exec(f"{ctr.node}/{ctr.name}", ["ip", "route", "show", "default"]).stdout
        assert f"via {high.network_address + 1}" in route
        assert f"{host} (chained)" in glia_ok(lab, "endpoint", "list", "--node", ctr.node)
    for ctr in (p.ptp, p.ptp2):
        low, _ = _halves(lab, ctr.node)
        assert ctr.ip and ipaddress.ip_address(ctr.ip) in low


def test_chained_pods_have_ipv6_off(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    """The conflists' ``tuning`` turned IPv6 off in the pod before glia-cni ran: no
    link-local address, nothing for from_endpoint to drop as UNKNOWN_L3."""
    p, _ = pods
    for ctr in (p.bridged, p.bridged_b, p.bridged2, p.ptp, p.ptp2):
        where = f"{ctr.node}/{ctr.name}"
        flag = lab.exec(where, ["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"])
        assert flag.stdout.strip() == "1", (ctr.name, flag.stdout, flag.stderr)
        addrs = lab.exec(where, ["ip", "-6", "addr", "show", "dev", "eth0"])
        assert "inet6" not in addrs.stdout, (ctr.name, addrs.stdout)


PAIRS = [
    ("bridged", "bridged_b"),  # same bridge
    ("bridged_b", "bridged"),
    ("bridged", "local"),
    ("local", "bridged"),
    ("bridged", "ptp"),  # ptp-chained, same node
    ("ptp", "bridged"),
    ("bridged", "remote"),
    ("remote", "bridged"),
    ("bridged", "bridged2"),  # other node's bridge
    ("bridged2", "bridged"),
    ("bridged", "ptp2"),  # ptp-chained, other node
    ("ptp2", "bridged"),
]


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_bridged_pods_reach_native_and_ptp_pods(
    lab: Lab, pods: tuple[Pods, Workload], src: str, dst: str
) -> None:
    p, _ = pods
    reaches(lab, getattr(p, src), getattr(p, dst))


@pytest.mark.parametrize("node", [N1, N2])
def test_nodes_reach_the_bridged_pod(lab: Lab, pods: tuple[Pods, Workload], node: str) -> None:
    p, _ = pods
    assert node_fetches(lab, node, p.bridged) == p.bridged.name


def test_a_service_selects_the_bridged_pod_by_label(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    p, w = pods
    tag = p.bridged.labels["tag"]
    (vip,) = w.apply(
        service_manifest(
            f"brweb-{tag}", {"app": WEB, "tag": tag}, [{"port": 80, "protocol": "TCP"}]
        )
    )
    assert p.bridged.ip and p.remote.ip
    wait_backends(lab, vip, 80, {p.bridged.ip, p.remote.ip})
    # The bridged backend itself too: a hairpin, delivered back by glia.
    for client in (p.local, p.bridged_b, p.ptp, p.bridged2, p.bridged):
        got = http_names(lab, client, vip, 30)
        assert set(got) == {p.bridged.name, p.remote.name}, (client.name, got)


def test_policy_selects_bridged_pods_by_label(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    p, _ = pods
    tag = p.bridged.labels["tag"]
    policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": f"brweb-{tag}"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": WEB, "tag": tag}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": CLIENT, "tag": tag}}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                }
            ],
        },
    }
    api = lab.agent(N1)
    api.config_apply([policy], "test_cni_chaining_bridge")
    try:
        assert p.bridged.ip and p.remote.ip
        # Without the client label, refused by the bridged pod: from the other
        # node (ptp2, remote) and from its neighbour on the same bridge, whose
        # frames glia redirects before the bridge could forward them.
        wait_for("ptp2 -> bridged refused", lambda: http(lab, p.ptp2, p.bridged.ip) == "")
        assert http(lab, p.remote, p.bridged.ip) == ""
        # (HTTP, a new connection: the earlier pings' ICMP conntrack entry,
        # ports 0, would let a ping pass until it expires, as for any pod.)
        before = metrics(lab, N1)
        assert http(lab, p.bridged_b, p.bridged.ip) == ""
        after = metrics(lab, N1)
        assert sum(metric_delta(before, after, "DROP_POLICY", d) for d in ("ingress", "egress"))
        for client in (p.local, p.ptp, p.bridged2):
            assert http(lab, client, p.bridged.ip) == p.bridged.name, client.name
        # A bridged client is judged by its identity at the other web backend too.
        assert http(lab, p.bridged2, p.remote.ip) == p.remote.name
        wait_for("bridged -> remote refused", lambda: http(lab, p.bridged, p.remote.ip) == "")
    finally:
        api.config_delete([policy], "test_cni_chaining_bridge")
    wait_for("bridge neighbour -> bridged again", lambda: http(lab, p.bridged_b, p.bridged.ip))


def test_the_node_sends_a_bridged_pod_nothing_by_another_port(
    lab: Lab, pods: tuple[Pods, Workload]
) -> None:
    """The node's ARP entry for bridged poisoned with its bridge neighbour's MAC (as
    a neighbour answering ARP for bridged's address would leave it): the bridge
    takes the node's packets to the neighbour's port, where to_endpoint drops them
    (DROP_WRONG_PORT) instead of handing the neighbour what is bridged's."""
    p, _ = pods
    b = _endpoint(lab, p.bridged_b)
    assert b is not None and p.bridged.ip
    before = metrics(lab, N1)
    neigh = ["ip", "neigh", "replace", p.bridged.ip, "lladdr", b["mac"], "dev", BRIDGE_DEVICE]
    lab.node_exec(N1, [*neigh, "nud", "permanent"], check=True)
    try:
        argv = ["timeout", "2", "wget", "-q", "-O", "-", f"http://{p.bridged.ip}/"]
        assert lab.node_exec(N1, argv).stdout.strip() == ""
        after = metrics(lab, N1)
        assert metric_delta(before, after, "DROP_WRONG_PORT", "ingress") > 0
    finally:
        lab.node_exec(N1, ["ip", "neigh", "del", p.bridged.ip, "dev", BRIDGE_DEVICE])
    argv = ["timeout", "3", "wget", "-q", "-O", "-", f"http://{p.bridged.ip}/"]
    got = wait_for("N1 -> bridged again", lambda: lab.node_exec(N1, argv).stdout.strip() or None)
    assert got == p.bridged.name


GARP = """
import socket, struct, sys
spa, sha = socket.inet_aton(sys.argv[1]), bytes.fromhex(sys.argv[2].replace(":", ""))
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + sha + spa + b"\\xff" * 6 + spa
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(3):
    s.send(b"\\xff" * 6 + sha + b"\\x08\\x06" + arp)
"""


def test_a_bridged_pod_cannot_claim_its_neighbours_address(
    lab: Lab, pods: tuple[Pods, Workload]
) -> None:
    """Gratuitous ARP from bridged_b for bridged's address: from_endpoint drops it
    (DROP_INVALID_SOURCE) before the bridge, so neither the node's cache nor the
    neighbours' learn it, and the node still reaches bridged."""
    p, _ = pods
    b = _endpoint(lab, p.bridged_b)
    assert b is not None and p.bridged.ip
    argv = ["timeout", "3", "wget", "-q", "-O", "-", f"http://{p.bridged.ip}/"]
    wait_for("N1 -> bridged", lambda: lab.node_exec(N1, argv).stdout.strip() or None)
    before = metrics(lab, N1)
    netns_python(p.bridged_b, GARP, p.bridged.ip, b["mac"])
    after = metrics(lab, N1)
    assert metric_delta(before, after, "DROP_INVALID_SOURCE", "egress") >= 3
    neigh = lab.node_exec(N1, ["ip", "neigh", "show", p.bridged.ip, "dev", BRIDGE_DEVICE])
    assert b["mac"] not in neigh.stdout
    assert lab.node_exec(N1, argv).stdout.strip() == p.bridged.name


def test_agent_restart_keeps_the_bridged_endpoint(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    p, _ = pods
    before = _endpoint(lab, p.bridged)
    lab.restart_agent(N1)
    after = _endpoint(lab, p.bridged)
    assert before is not None and after is not None
    for key in ("ip", "identity", "host_ifname", "chained", "mac", "host_mac"):
        assert after[key] == before[key], key
    assert ingress_program(lab, N1, after["host_ifname"]) == "from_endpoint"
    assert p.bridged.ip
    for src in (p.bridged_b, p.remote):
        wait_for(
            f"{src.name} -> bridged after the restart", lambda s=src: http(lab, s, p.bridged.ip)
        )


def test_podman_rm_leaves_the_bridge_to_the_bridge_plugin(
    lab: Lab, pods: tuple[Pods, Workload]
) -> None:
    p, w = pods
    ep = _endpoint(lab, p.bridged2)
    assert ep is not None and p.bridged2.ip
    w.remove(p.bridged2)
    assert _endpoint(lab, p.bridged2) is None
    assert all(row["ip"] != p.bridged2.ip for row in lab.agent(N2).bpf_endpoints())
    gone = f"{p.bridged2.ip}/32"
    wait_for(
        f"{gone} to leave {N1}'s ipcache",
        lambda: all(row["prefix"] != gone for row in lab.agent(N1).bpf_ipcache()),
    )
    links = lab.node_exec(N2, ["ip", "-o", "link", "show"], check=True).stdout
    assert f" {ep['host_ifname']}@" not in links  # bridge's DEL removed its veth
    assert f" {BRIDGE_DEVICE}:" in links  # and left the bridge for the next pod
    again = _run(lab, w, N2, p.bridged2.name + "x", CLIENT, p.bridged.labels["tag"], BRIDGE_NETWORK)
    w.endpoint_ready(again)
    assert again.ip and p.bridged.ip
    wait_for("new bridged pod -> bridged", lambda: ping(lab, again, p.bridged.ip))
