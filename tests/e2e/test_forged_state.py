"""Forged records in the lab's real etcd, written with a compromised writer's credentials.

A compromised node holds its agent's etcd user (``glia-agent-n2``): it can
write only its own node's keys (etcd refuses the rest), and whatever it writes
there is validated by every reader: nothing bad reaches any node's maps, every
other record keeps syncing (a pod started afterwards is reachable from every
node), and ``glia status`` shows the rejection. The operator's user is used
for forged ClusterService records (the only writer of those).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from typing import Any

import pytest
from labhelpers import NODES, Workload, etcd_delete, etcd_keys, etcd_put, ping, wait_for

from glia.kvstore import keys, rbac
from glia.lab.lab import Lab
from glia.model import codec
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.service import Backend, ClusterService, Protocol, ServicePort

pytestmark = [pytest.mark.e2e, pytest.mark.root]

C = "c1"
N2_USER = rbac.agent_user("n2")


def _status(lab: Lab, node: str) -> dict[str, Any]:
    return lab.agent(node).status()


def _ipcache(lab: Lab, node: str) -> dict[str, dict[str, Any]]:
    return {str(e["prefix"]): e for e in lab.agent(node).bpf_ipcache()}


def _lb_ips(lab: Lab, node: str) -> set[str]:
    """Every VIP and backend IP in the node's lb maps."""
    out: set[str] = set()
    for row in lab.agent(node).bpf_lb():
        out.add(str(row["vip"]))
        out.update(str(b["ip"]) for b in row.get("backends") or [])
    return out


def _entry(ip: str, **changes: Any) -> bytes:
    value = {
        "ip": ip,
        "identity": 65792,
        "tunnel_endpoint": "198.18.0.12",
        "cluster_id": 1,
        "node": "n2",
        **changes,
    }
    return json.dumps(value).encode()


def test_a_compromised_node_harms_nothing_but_its_own_pods(lab: Lab, work: Workload) -> None:
    tag = uuid.uuid4().hex[:6]
    a = work.container("c1/n1", f"glia-fa-{tag}", {"app": f"fa-{tag}"})
    b = work.container("c1/n2", f"glia-fb-{tag}", {"app": f"fb-{tag}"})
    work.endpoint_ready(a, b)
    assert a.ip and b.ip
    spec = lab.topo.cluster(C)
    n2_ip = str(lab.topo.node(C, "n2").ip)
    etcd_ip = str(spec.etcd_ip)
    n2_block = ipaddress.IPv4Network(f"{b.ip}/24", strict=False)
    spare = str(n2_block.network_address + 200)
    before = {n: _ipcache(lab, n) for n in NODES}

    # etcd refuses what is not n2's own.
    for key in (
        keys.ipcache(C, "n1", "10.1.0.250"),
        keys.node(C, "n1"),
        keys.service(C, "default", "x"),
        keys.podcidr_node(C, "n2"),
        keys.endpoint(C, "n1", "default", "x"),
    ):
        ok, msg = etcd_put(lab, C, key, b"{}", N2_USER)
        assert not ok and "permission denied" in msg, (key, msg)

    forged_ip = {
        keys.ipcache(C, "n2", spare): _entry(spare, tunnel_endpoint="not-an-ip"),
        keys.ipcache(C, "n2", str(n2_block.network_address + 201)): _entry(
            str(n2_block.network_address + 201), cluster_id=300, tunnel_endpoint=n2_ip
        ),
        keys.ipcache(C, "n2", a.ip): _entry(a.ip, tunnel_endpoint=n2_ip),  # hijack n1's pod
        keys.ipcache(C, "n2", etcd_ip): _entry(etcd_ip, tunnel_endpoint=n2_ip),
        keys.ipcache(C, "n2", "8.8.8.8"): _entry("8.8.8.8", tunnel_endpoint=n2_ip),
        keys.ipcache(C, "n2", str(n2_block.network_address + 202)): _entry(
            str(n2_block.network_address + 202), identity=(1 << 32) + 65792, tunnel_endpoint=n2_ip
        ),
    }
    # An endpoint record with the etcd server's address, labelled for a Service.
    ghost = Endpoint(
        container_id="forged",
        namespace="default",
        name=f"ghost-{tag}",
        cluster=C,
        node="n2",
        ip=etcd_ip,
        identity=65792,
        labels={"app": f"fweb-{tag}"},
        state=EndpointState.READY,
    )
    forged_ep = {keys.endpoint(C, "n2", "default", ghost.name): codec.encode(ghost)}
    for key, value in {**forged_ip, **forged_ep}.items():
        ok, msg = etcd_put(lab, C, key, value, N2_USER)
        assert ok, (key, msg)

    # The operator's own records, forged: hijacking frontends and impossible backends.
    vip_ok = str(spec.service_cidr.broadcast_address - 7)
    nowhere = [f"10.1.{200 + i // 250}.{1 + i % 250}" for i in range(10_000)]
    svc = ClusterService(
        namespace="default",
        name=f"forged-{tag}",
        cluster=C,
        cluster_id=1,
        cluster_ip=vip_ok,
        ports=[ServicePort(80, 80)],
        backends=[
            Backend(ip, 80, Protocol.TCP, "", 80, "n1", C, "default/x", True)
            for ip in ("0.0.0.0", "127.0.0.1", "255.255.255.255", etcd_ip)
        ]
        + [Backend(ip, 80, Protocol.TCP, "", 80, "nx", C, "default/x", True) for ip in nowhere],
    )
    forged_svc = {
        keys.service(C, "default", f"forged-{tag}"): codec.encode(svc),
        keys.service(C, "default", f"hijack-{tag}"): codec.encode(
            ClusterService(
                "default", f"hijack-{tag}", C, 1, a.ip, [ServicePort(80, 80)], backends=[]
            )
        ),
        keys.service(C, "default", f"public-{tag}"): codec.encode(
            ClusterService(
                "default", f"public-{tag}", C, 1, "8.8.8.8", [ServicePort(53, 53)], backends=[]
            )
        ),
    }
    for key, value in forged_svc.items():
        ok, msg = etcd_put(lab, C, key, value, rbac.OPERATOR_USER)
        assert ok, (key, msg)
    # A declared Service selecting the ghost endpoint's labels.
    work.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"fweb-{tag}"},
            "spec": {"selector": {"app": f"fweb-{tag}"}, "ports": [{"port": 80}]},
        }
    )
    forged = {**forged_ip, **forged_ep, **forged_svc}
    try:
        # Every agent reports the rejections and stays healthy (it refused bad input).
        for node in NODES:

            def reported(node: str = node) -> dict[str, Any] | None:
                st = _status(lab, node)
                ok = st["ipcache"]["rejected"] >= len(forged_ip) and (
                    st["services"]["rejected"] >= len(forged_svc)
                )
                return st if ok else None

            st = wait_for(f"{node} to report the forged records", reported)
            assert st["healthy"], st["subsystems"]
            assert {"ipcache", "services"} <= set(st["degraded"]), st["degraded"]
            assert st["subsystems"]["ipcache"]["state"] == "degraded"
            assert st["ipcache"]["last_rejected"]["key"] in forged
            assert "rejected" in st["subsystems"]["services"]["msg"]

        # Nothing forged reached any map; what was there is unchanged.
        for node in NODES:
            now = _ipcache(lab, node)
            for key in forged_ip:
                prefix = keys.last(key) + "/32"
                assert now.get(prefix) == before[node].get(prefix), (node, prefix, now.get(prefix))
            assert now[f"{a.ip}/32"] == before[node][f"{a.ip}/32"]
            lb = _lb_ips(lab, node)
            assert not {a.ip, "8.8.8.8", etcd_ip, "0.0.0.0", "127.0.0.1"} & lb, (node, lb)
            assert not set(nowhere) & lb

        # The ghost endpoint is no backend, and nobody probes the etcd server.
        record = etcd_keys(lab, C, keys.service(C, "default", f"fweb-{tag}"))
        assert record, "the operator resolved the declared Service"
        (value,) = [v.value for v in record.values()]
        assert json.loads(value)["backends"] == []
        health = etcd_keys(lab, C, keys.health(C, "n2"))
        assert etcd_ip.encode() not in b"".join(v.value for v in health.values())

        # Everything else keeps syncing: a pod started now is reachable from every node.
        c = work.container("c1/n1", f"glia-fc-{tag}", {"app": f"fc-{tag}"})
        d = work.container("c1/n2", f"glia-fd-{tag}", {"app": f"fd-{tag}"})
        work.endpoint_ready(c, d)
        assert c.ip and d.ip
        for src, dst in ((b, c.ip), (d, c.ip), (a, d.ip), (c, b.ip), (b, a.ip)):
            wait_for(f"{src.name} -> {dst}", lambda s=src, t=dst: ping(lab, s, t) or None)
    finally:
        etcd_delete(lab, C, *forged)
    for node in NODES:
        wait_for(
            f"{node} to drop the rejections once the records are gone",
            lambda n=node: not _status(lab, n)["degraded"] or None,
        )


def test_a_bad_node_record_disturbs_only_that_nodes_pods(lab: Lab, work: Workload) -> None:
    tag = uuid.uuid4().hex[:6]
    a = work.container("c1/n1", f"glia-na-{tag}", {"app": f"na-{tag}"})
    b = work.container("c1/n2", f"glia-nb-{tag}", {"app": f"nb-{tag}"})
    work.endpoint_ready(a, b)
    assert a.ip and b.ip
    key = keys.node(C, "n2")
    (original,) = [v.value for v in etcd_keys(lab, C, key).values()]
    bad = json.loads(original)
    bad["node_ip"] = "not-an-ip"
    ok, msg = etcd_put(lab, C, key, json.dumps(bad).encode(), N2_USER)
    assert ok, msg
    try:
        wait_for(
            "n1 to reject n2's node record",
            lambda: key in _status(lab, "c1/n1")["ipcache"]["rejected_keys"] or None,
        )
        # n1 keeps syncing: a new pod there is reachable from n1's others.
        c = work.container("c1/n1", f"glia-nc-{tag}", {"app": f"nc-{tag}"})
        work.endpoint_ready(c)
        assert c.ip
        wait_for(f"{a.name} -> {c.ip}", lambda: ping(lab, a, c.ip or "") or None)
    finally:
        # The agent re-publishes its record (here: as it would after a lease loss).
        ok, msg = etcd_put(lab, C, key, original, N2_USER)
        assert ok, msg
    wait_for(f"{a.name} -> {b.ip} again", lambda: ping(lab, a, b.ip or "") or None)
    wait_for(
        "n1 to accept n2 again",
        lambda: not _status(lab, "c1/n1")["ipcache"]["rejected"] or None,
    )
