"""CNI chaining in the session lab: pods made by ``ptp`` + glia-cni (network
``glia-chained``) next to native glia pods (docs/chaining.md).

Real podman containers and real traffic: a chained pod and native pods on the
same node and across nodes reach each other (ping, HTTP) and the nodes reach
it; a Service selects the chained pod by its labels and load-balances to it
and to a native backend; an agent restart keeps the chained endpoint;
``podman rm`` removes glia's part (endpoint, map entry, keys) while ptp
removes the veth it made.
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
    node_fetches,
    ping,
    reaches,
    service_manifest,
    wait_backends,
    wait_for,
)

from glia.lab.errors import LabError
from glia.lab.lab import Lab
from glia.lab.podman import CHAINED_NETWORK, Container
from glia.model.identity import MIN_LOCAL

pytestmark = [pytest.mark.e2e, pytest.mark.root]

N1, N2 = "c1/n1", "c1/n2"


@dataclass
class Pods:
    chained: Container  # n1, ptp + glia-cni, app=chainweb
    local: Container  # n1, native
    remote: Container  # n2, native, app=chainweb (the Service's other backend)
    chained2: Container  # n2, ptp + glia-cni


def _run(
    lab: Lab, w: Workload, node: str, name: str, labels: dict[str, str], chained: bool
) -> Container:
    ctr = lab.run_container(
        node,
        name,
        labels=labels,
        command=backend_command(name),
        network=CHAINED_NETWORK if chained else "glia",
    )
    w.containers.append(ctr)
    return ctr


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[tuple[Pods, Workload]]:
    tag = uuid.uuid4().hex[:6]
    w = Workload(lab)
    try:
        web = {"app": "chainweb", "tag": tag}
        p = Pods(
            chained=_run(lab, w, N1, f"glia-ch-a-{tag}", web, True),
            local=_run(lab, w, N1, f"glia-ch-b-{tag}", {"app": "chainclient"}, False),
            remote=_run(lab, w, N2, f"glia-ch-c-{tag}", web, False),
            chained2=_run(lab, w, N2, f"glia-ch-d-{tag}", {"app": "chainclient"}, True),
        )
        w.endpoint_ready(p.chained, p.local, p.remote, p.chained2)
        yield p, w
    finally:
        w.close()


def _endpoint(lab: Lab, ctr: Container) -> dict[str, Any] | None:
    return next((e for e in lab.agent(ctr.node).endpoints() if e["name"] == ctr.name), None)


def test_chained_pods_have_ptp_addresses_from_the_nodes_block(
    lab: Lab, pods: tuple[Pods, Workload]
) -> None:
    p, _ = pods
    for ctr in (p.chained, p.chained2):
        block = lab.agent(ctr.node).status()["chained_cidr"]
        assert ctr.ip and ipaddress.ip_address(ctr.ip) in ipaddress.ip_network(block)
        ep = _endpoint(lab, ctr)
        assert ep is not None and ep["chained"] is True and ep["ip"] == ctr.ip
        assert ep["identity"] >= MIN_LOCAL and ep["labels"]["app"] == ctr.labels["app"]
        # glia's programs on ptp's host veth (not one of glia's gliae* veths).
        assert not ep["host_ifname"].startswith("gliae")
        assert ingress_program(lab, ctr.node, ep["host_ifname"]) == "from_endpoint"
        listed = glia_ok(lab, "endpoint", "list", "--node", ctr.node)
        assert f"{ep['host_ifname']} (chained)" in listed
        assert block in glia_ok(lab, "status", "--node", ctr.node)
    for ctr in (p.local, p.remote):
        block = lab.agent(ctr.node).status()["chained_cidr"]
        assert ctr.ip and ipaddress.ip_address(ctr.ip) not in ipaddress.ip_network(block)


def test_glia_does_not_give_an_address_of_the_chained_block(lab: Lab) -> None:
    block = ipaddress.ip_network(lab.agent(N1).status()["chained_cidr"])
    ip = str(block.broadcast_address - 1)
    name = f"glia-ch-ip-{uuid.uuid4().hex[:6]}"
    with pytest.raises(LabError) as e:
        lab.run_container(N1, name, ip=ip)
    assert f"{ip} is in {block}, the chained plugin's addresses" in str(e.value)
    assert name not in {c.name for c in lab.containers(N1)}


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("chained", "local"),
        ("local", "chained"),
        ("chained", "remote"),
        ("remote", "chained"),
        ("chained", "chained2"),
        ("chained2", "chained"),
    ],
)
def test_chained_and_native_pods_reach_each_other(
    lab: Lab, pods: tuple[Pods, Workload], src: str, dst: str
) -> None:
    p, _ = pods
    reaches(lab, getattr(p, src), getattr(p, dst))


@pytest.mark.parametrize("node", [N1, N2])
def test_nodes_reach_the_chained_pod(lab: Lab, pods: tuple[Pods, Workload], node: str) -> None:
    p, _ = pods
    assert node_fetches(lab, node, p.chained) == p.chained.name


def test_a_service_selects_the_chained_pod_by_label(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    p, w = pods
    selector = {"app": "chainweb", "tag": p.chained.labels["tag"]}
    name = f"chainweb-{p.chained.labels['tag']}"
    (vip,) = w.apply(service_manifest(name, selector, [{"port": 80, "protocol": "TCP"}]))
    assert p.chained.ip and p.remote.ip
    wait_backends(lab, vip, 80, {p.chained.ip, p.remote.ip})
    for client in (p.local, p.chained2):
        got = http_names(lab, client, vip, 30)
        assert set(got) == {p.chained.name, p.remote.name}, got


def test_policy_judges_chained_pods_by_their_identity(
    lab: Lab, pods: tuple[Pods, Workload]
) -> None:
    p, _ = pods
    tag = p.chained.labels["tag"]
    policy = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": f"chainweb-{tag}"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "chainweb", "tag": tag}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": "chainclient"}}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                }
            ],
        },
    }
    api = lab.agent(N1)
    api.config_apply([policy], "test_cni_chaining")
    try:
        assert p.chained.ip and p.remote.ip
        # A native pod without the client label is refused by the chained pod
        # (and the other way round: the chained client reaches the native web).
        wait_for("remote -> chained refused", lambda: http(lab, p.remote, p.chained.ip) == "")
        assert http(lab, p.local, p.chained.ip) == p.chained.name
        assert http(lab, p.chained2, p.chained.ip) == p.chained.name
        assert http(lab, p.chained2, p.remote.ip) == p.remote.name
        wait_for("chained -> remote refused", lambda: http(lab, p.chained, p.remote.ip) == "")
    finally:
        api.config_delete([policy], "test_cni_chaining")
    wait_for("remote -> chained again", lambda: http(lab, p.remote, p.chained.ip))


def test_agent_restart_keeps_the_chained_endpoint(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    p, _ = pods
    before = _endpoint(lab, p.chained)
    lab.restart_agent(N1)
    after = _endpoint(lab, p.chained)
    assert before is not None and after is not None
    for key in ("ip", "identity", "host_ifname", "chained", "mac", "host_mac"):
        assert after[key] == before[key], key
    assert ingress_program(lab, N1, after["host_ifname"]) == "from_endpoint"
    assert p.chained.ip
    wait_for("remote -> chained after the restart", lambda: ping(lab, p.remote, p.chained.ip))
    assert http(lab, p.remote, p.chained.ip) == p.chained.name


def test_podman_rm_removes_glias_part_only(lab: Lab, pods: tuple[Pods, Workload]) -> None:
    p, w = pods
    ep = _endpoint(lab, p.chained2)
    assert ep is not None and p.chained2.ip
    w.remove(p.chained2)
    assert _endpoint(lab, p.chained2) is None
    assert all(row["ip"] != p.chained2.ip for row in lab.agent(N2).bpf_endpoints())
    gone = f"{p.chained2.ip}/32"
    wait_for(
        f"{gone} to leave {N1}'s ipcache",
        lambda: all(row["prefix"] != gone for row in lab.agent(N1).bpf_ipcache()),
    )
    links = lab.node_exec(N2, ["ip", "-o", "link", "show"], check=True).stdout
    assert f" {ep['host_ifname']}@" not in links  # ptp's DEL removed its veth
    # The address went back to ptp's host-local: the next chained pod may get it.
    again = _run(lab, w, N2, p.chained2.name + "x", {"app": "chainclient"}, True)
    w.endpoint_ready(again)
    assert again.ip and p.remote.ip
    wait_for("new chained pod -> remote", lambda: ping(lab, again, p.remote.ip))
