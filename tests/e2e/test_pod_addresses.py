"""Issue 10, items 4, 5 and 7 with real podman containers on the session lab.

`podman run --ip` (given, in use, outside the node's CIDR, another node's),
`podman restart` keeping the address, the ``io.kubernetes.pod.namespace``
label putting the endpoint (and a Service's backends) in that namespace, and
`podman pod create` with two containers sharing one endpoint.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from labhelpers import NODES, Workload, endpoint_named, http, service_manifest, wait_backends
from labhelpers import wait_for as wait

from glia.lab.errors import LabError
from glia.lab.lab import Lab
from glia.lab.podman import Container, cgroup_parent, default_command
from glia.lab.topology import IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.root]

NS_LABEL = "io.kubernetes.pod.namespace"


@pytest.fixture
def work(lab: Lab) -> Iterator[Workload]:
    w = Workload(lab)
    try:
        yield w
    finally:
        w.close()


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _cidr(lab: Lab, node: str) -> ipaddress.IPv4Network:
    name = node.split("/")[1]
    for n in lab.agent(node).nodes():
        if n["name"] == name:
            return ipaddress.IPv4Network(n["pod_cidr"])
    raise AssertionError(f"{node} has no pod CIDR")


def _free_ip(lab: Lab, node: str) -> str:
    net = _cidr(lab, node)
    # The node's chained block is ptp's (docs/chaining.md): glia refuses --ip there.
    chained = ipaddress.ip_network(lab.agent(node).status()["chained_cidr"])
    used = {c.ip for c in lab.containers(node)}
    for host in range(250, 100, -1):
        ip = str(net.network_address + host)
        if ip not in used and ipaddress.ip_address(ip) not in chained:
            return ip
    raise AssertionError(f"no free address in {net}")


def _endpoint(lab: Lab, node: str, name: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((e for e in lab.agent(node).endpoints() if e["name"] == name), None)

    return wait(f"endpoint {name} on {node}", found)


def _run(work: Workload, node: str, name: str, **kw: Any) -> Container:
    ctr = work.lab.run_container(node, name, **kw)
    work.containers.append(ctr)
    return ctr


def test_requested_ip_is_given(lab: Lab, work: Workload) -> None:
    ip = _free_ip(lab, NODES[0])
    ctr = _run(work, NODES[0], f"glia-ip-{_tag()}", ip=ip)
    assert ctr.ip == ip
    assert _endpoint(lab, NODES[0], ctr.name)["ip"] == ip
    client = _run(work, NODES[1], f"glia-ipc-{_tag()}")
    assert wait(f"http to {ip}", lambda: http(lab, client, ip)) == ctr.name


def test_requested_ip_in_use_names_the_holder(lab: Lab, work: Workload) -> None:
    ip = _free_ip(lab, NODES[0])
    holder = _run(work, NODES[0], f"glia-iph-{_tag()}", ip=ip)
    name = f"glia-ipx-{_tag()}"
    with pytest.raises(LabError) as e:
        _run(work, NODES[0], name, ip=ip)
    msg = str(e.value)
    assert f"requested address {ip} is in use on node n1 by default/{holder.name}" in msg, msg
    # the refused container is gone, the holder keeps its address
    assert name not in {c.name for c in lab.containers(NODES[0])}
    assert _endpoint(lab, NODES[0], holder.name)["ip"] == ip


def test_requested_ip_outside_the_node_cidr_is_refused(lab: Lab, work: Workload) -> None:
    own = _cidr(lab, NODES[0])
    other = _cidr(lab, NODES[1])
    cases = {
        str(other.network_address + 9): [
            f"outside this node's pod CIDR {own}",
            f"belongs to node n2's pod CIDR {other}",
        ],
        "192.0.2.9": [f"outside this node's pod CIDR {own}"],
        str(own.network_address + 1): [f"the node's gateway address in {own}"],
    }
    before = {e["ip"] for e in lab.agent(NODES[0]).endpoints()}
    for ip, parts in cases.items():
        with pytest.raises(LabError) as e:
            _run(work, NODES[0], f"glia-ipo-{_tag()}", ip=ip)
        for part in parts:
            assert part in str(e.value), (ip, str(e.value))
    assert {e["ip"] for e in lab.agent(NODES[0]).endpoints()} == before


def test_restart_keeps_the_address(lab: Lab, work: Workload) -> None:
    ctr = _run(work, NODES[1], f"glia-rs-{_tag()}")
    ep = _endpoint(lab, NODES[1], ctr.name)
    podman = lab.podman(NODES[1])
    for _ in range(2):
        podman.run(["restart", "-t", "0", ctr.name])
        again = podman.inspect(ctr.name)
        assert again.ip == ctr.ip
        new = _endpoint(lab, NODES[1], ctr.name)
        assert new["ip"] == ctr.ip and new["container_id"] == ep["container_id"]
    # a new container does not inherit a just-released address
    gone = _run(work, NODES[1], f"glia-gone-{_tag()}")
    work.remove(gone)
    fresh = _run(work, NODES[1], f"glia-new-{_tag()}")
    assert fresh.ip != gone.ip


def test_namespace_label_puts_endpoint_and_backends_in_that_namespace(
    lab: Lab, work: Workload
) -> None:
    app = f"shop{_tag()}"
    shop = _run(work, NODES[0], f"glia-shop-{_tag()}", labels={NS_LABEL: "shop", "app": app})
    other = _run(work, NODES[1], f"glia-dflt-{_tag()}", labels={"app": app})
    bad = _run(work, NODES[1], f"glia-bad-{_tag()}", labels={NS_LABEL: "Not_A_NS", "app": "x"})
    work.endpoint_ready(shop, other, bad)
    assert endpoint_named(lab, shop)["namespace"] == "shop"  # type: ignore[index]
    assert endpoint_named(lab, other)["namespace"] == "default"  # type: ignore[index]
    bad_ep = endpoint_named(lab, bad)
    assert bad_ep is not None and bad_ep["namespace"] == "default"
    assert bad_ep["labels"][NS_LABEL] == "default"  # the identity's labels agree

    manifest = service_manifest("web", {"app": app}, [{"port": 80}])
    manifest["metadata"]["namespace"] = "shop"
    (vip,) = work.apply(manifest)
    assert shop.ip and other.ip
    wait_backends(lab, vip, 80, {shop.ip})  # not the default namespace's container
    client = _run(work, NODES[1], f"glia-shopc-{_tag()}")
    assert wait(f"http to {vip}", lambda: http(lab, client, vip)) == shop.name


def test_pod_containers_share_one_endpoint(lab: Lab, work: Workload) -> None:
    node = NODES[0]
    podman = lab.podman(node)
    pod = f"glia-pod-{_tag()}"
    web, side = f"{pod}-web", f"{pod}-side"
    create = ["pod", "create", "--name", pod, "--network", "glia"]
    create += ["--label", f"{NS_LABEL}=shop", "--label", "app=podweb"]
    podman.run([*create, "--cgroup-parent", cgroup_parent(lab.node(node))])
    try:
        podman.run(["run", "-d", "--pod", pod, "--name", web, IMAGE, *default_command(web)])
        podman.run(["run", "-d", "--pod", pod, "--name", side, IMAGE, "sleep", "3600"])
        ep = _endpoint(lab, node, pod)
        mine = [e for e in lab.agent(node).endpoints() if pod in e["name"]]
        assert len(mine) == 1, mine  # the infra container's; members join its netns
        ip = ep["ip"]
        # both containers have that one address and reach each other on localhost
        for name in (web, side):
            r = lab.exec(f"{node}/{name}", ["ip", "-4", "-o", "addr", "show", "eth0"])
            assert f"inet {ip}/" in r.stdout, r.stdout
        r = lab.exec(
            f"{node}/{side}", ["timeout", "3", "wget", "-q", "-O", "-", "http://127.0.0.1/"]
        )
        assert r.stdout.strip() == web

        # the pod's labels (namespace included) are the endpoint's
        def in_shop() -> dict[str, Any] | None:
            eps = lab.agent(node).endpoints()
            return next((e for e in eps if e["name"] == pod and e["namespace"] == "shop"), None)

        ready = wait("pod endpoint in namespace shop", in_shop)
        assert ready["labels"]["app"] == "podweb"
        # ...but not the infra image's (io.buildah.version): they are not its identity.
        infra = podman.run(["pod", "inspect", "--format", "{{.InfraContainerID}}", pod]).strip()
        out = podman.run(["container", "inspect", "--format", "{{json .Config.Labels}}", infra])
        image_labels = {k for k in json.loads(out) if k.startswith("io.buildah.")}
        assert image_labels, "the infra image has no io.buildah label: nothing tested"
        assert not image_labels & set(ready["labels"]), ready["labels"]
        client = _run(work, NODES[1], f"glia-podc-{_tag()}")
        assert wait(f"http to the pod at {ip}", lambda: http(lab, client, ip)) == web
    finally:
        podman.run(["pod", "rm", "-f", "-t", "0", pod], check=False)
    wait(
        "pod endpoint removed",
        lambda: all(e["name"] != pod for e in lab.agent(node).endpoints()) or None,
    )
