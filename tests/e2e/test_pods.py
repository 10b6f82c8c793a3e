"""Containers on two nodes of the session lab: IPs, ping and TCP both ways, labels -> identity.

Needs root, the agent, the operator and glia-cni. Containers are busybox
httpd servers answering their own name (the lab's default command).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from labhelpers import wait_for

from glia.lab.lab import Lab
from glia.lab.podman import Container
from glia.model.identity import MIN_LOCAL, identity_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.root]


@dataclass
class Pods:
    a: Container  # c1/n1, app=web team=blue
    b: Container  # c1/n2, app=web team=blue (same labels as a)
    c: Container  # c1/n2, app=client


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[Pods]:
    tag = uuid.uuid4().hex[:6]
    started: list[Container] = []
    try:
        for node, role, labels in [
            ("c1/n1", "a", {"app": "web", "team": "blue"}),
            ("c1/n2", "b", {"app": "web", "team": "blue"}),
            ("c1/n2", "c", {"app": "client"}),
        ]:
            started.append(lab.run_container(node, f"glia-t-{role}-{tag}", labels=labels))
        yield Pods(*started)
    finally:
        for ctr in started:
            lab.remove_container(ctr.node, ctr.name)


def _ping(lab: Lab, src: Container, dst: Container) -> bool:
    assert dst.ip
    r = lab.exec(f"{src.node}/{src.name}", ["ping", "-c", "1", "-W", "1", dst.ip])
    return r.returncode == 0


def _http(lab: Lab, src: Container, dst: Container) -> str:
    # `timeout`, not wget's -T: Debian's static busybox 1.35 wget segfaults with -T.
    r = lab.exec(
        f"{src.node}/{src.name}", ["timeout", "3", "wget", "-q", "-O", "-", f"http://{dst.ip}/"]
    )
    return r.stdout.strip()


def test_containers_get_addresses_from_their_node_cidr(lab: Lab, pods: Pods) -> None:
    ips = [p.ip for p in (pods.a, pods.b, pods.c)]
    assert all(ips) and len(set(ips)) == 3
    pool = lab.topo.cluster("c1").pod_pool
    assert all(ip and ipaddress.ip_address(ip) in pool for ip in ips)
    # b and c share node n2, hence its /24.
    assert pods.b.ip and pods.c.ip
    assert pods.b.ip.rsplit(".", 1)[0] == pods.c.ip.rsplit(".", 1)[0]
    assert pods.a.ip and pods.a.ip.rsplit(".", 1)[0] != pods.b.ip.rsplit(".", 1)[0]


@pytest.mark.parametrize(("src", "dst"), [("a", "b"), ("b", "a"), ("c", "b"), ("c", "a")])
def test_ping(lab: Lab, pods: Pods, src: str, dst: str) -> None:
    s, d = getattr(pods, src), getattr(pods, dst)
    wait_for(f"ping {s.name} -> {d.name} ({d.ip})", lambda: _ping(lab, s, d))


@pytest.mark.parametrize(("src", "dst"), [("a", "b"), ("b", "a"), ("c", "b"), ("c", "a")])
def test_tcp(lab: Lab, pods: Pods, src: str, dst: str) -> None:
    s, d = getattr(pods, src), getattr(pods, dst)
    body = wait_for(f"HTTP {s.name} -> {d.name} ({d.ip})", lambda: _http(lab, s, d))
    assert body == d.name


def _endpoint(lab: Lab, ctr: Container) -> dict[str, Any] | None:
    for ep in lab.agent(ctr.node).endpoints():
        if ep.get("name") == ctr.name and ep.get("identity", 0) >= MIN_LOCAL:
            return ep
    return None


def test_labels_become_an_identity(lab: Lab, pods: Pods) -> None:
    def identity_of(ctr: Container) -> dict[str, Any]:
        return wait_for(f"identity of {ctr.name}", lambda: _endpoint(lab, ctr))

    eps = {"a": identity_of(pods.a), "b": identity_of(pods.b), "c": identity_of(pods.c)}
    for role, ctr in (("a", pods.a), ("b", pods.b), ("c", pods.c)):
        ep = eps[role]
        assert ep["ip"] == ctr.ip
        assert ctr.labels.items() <= ep["labels"].items()
        assert identity_cluster(ep["identity"]) == lab.topo.cluster("c1").id
    # Same labels on two nodes: one identity; other labels: another.
    assert eps["a"]["identity"] == eps["b"]["identity"]
    assert eps["c"]["identity"] != eps["a"]["identity"]
    known = {i["id"]: i["labels"] for i in lab.agent("c1/n1").identities()}
    assert pods.a.labels.items() <= known[eps["a"]["identity"]].items()
    assert pods.c.labels.items() <= known[eps["c"]["identity"]].items()
