"""``glia policy trace`` across clusters against real etcds: the remote read-only user reads
the policies and nothing else new, and the agent's trace route judges a c2 endpoint by
c2's policies read over the ClusterMesh connection.

Two etcds of their own (``etcd_factory``), c1 (the agent's) and c2 (remote), with
the lab's users and roles (glia.kvstore.rbac via the bootstrap). The agent is a
stand-in holding the real parts the route reads: its config, a kvstore client
of c1, the real identity cache and the real ClusterMesh (tables as in
test_clustermesh).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_clustermesh import LOCAL, _agent_tables, _cluster_file, _fill_c2
from waiting import until

from glia.agent import api_policy
from glia.agent.config import AgentConfig
from glia.agent.identities import IdentityCache
from glia.clustermesh.mesh import ClusterMesh
from glia.kvstore import keys, rbac
from glia.kvstore.client import KVClient
from glia.kvstore.config import EtcdConfig
from glia.kvstore.errors import PermissionDenied
from glia.lab.etcd import RO_USER, RW_USER, EtcdServer
from glia.model import codec
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, Identity
from glia.policy import store as policy_store
from glia.policy.manifest import parse_policy

WEB_C2 = 2 << 16 | 301
CLIENT_C1 = 1 << 16 | 301


def cnp(name: str, spec: dict[str, Any], cluster: str) -> Any:
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
    return parse_policy(doc, cluster=cluster)


WEB = {"matchLabels": {"app": "web"}}
ALLOW_C1_CLIENTS = cnp(
    "web",
    {
        "endpointSelector": WEB,
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client", CLUSTER_LABEL: "c1"}}]}],
    },
    "c2",
)
DENY_8080 = cnp(
    "no-8080",
    {
        "endpointSelector": WEB,
        "ingressDeny": [
            {"fromEntities": ["all"], "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}
        ],
    },
    "c2",
)
# In c2's etcd, claiming to be c1's: it must not judge c1's endpoints.
FORGED = cnp("forged", {"endpointSelector": {}, "egressDeny": [{"toEntities": ["all"]}]}, "c1")


async def _put_policies(kv: KVClient, *policies: Any) -> None:
    for p in policies:
        await kv.put(policy_store.config_key(p.namespace, p.name), codec.encode(p))


async def test_the_remote_user_reads_policies_and_nothing_else_new(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    srv = etcd_factory()
    async with await KVClient.connect(srv.client_config(RW_USER)) as admin:
        await _put_policies(admin, ALLOW_C1_CLIENTS)
        await admin.put(keys.config("services", "default", "web"), b"{}")
        await admin.put(keys.cluster_ip("100.64.0.10"), b"default/web")
    assert rbac.ROLE_RO.grants[-1] == rbac.Grant(keys.POLICIES, "read")
    async with await KVClient.connect(
        srv.client_config(RO_USER), check_read=[keys.STATE, keys.HEARTBEAT, keys.POLICIES]
    ) as ro:
        listing = await policy_store.read_policies(ro)
        assert listing.policies == [ALLOW_C1_CLIENTS] and listing.skipped == []
        for prefix in (keys.configs("services"), keys.CLUSTERIPS, keys.CONFIG, keys.ROOT):
            with pytest.raises(PermissionDenied):
                await ro.list(prefix)
        with pytest.raises(PermissionDenied):
            await ro.get(keys.config("services", "default", "web"))
        for key in (policy_store.config_key("default", "x"), keys.configs("policies")):
            with pytest.raises(PermissionDenied):
                await ro.put(key, b"forged")
        with pytest.raises(PermissionDenied):
            await ro.delete(policy_store.config_key("default", "web"))


@dataclass
class StandIn:
    """What the policy routes read of the agent (glia.agent.daemon.Agent has it)."""

    cfg: AgentConfig
    config_kv: KVClient | None
    identities: IdentityCache
    mesh: ClusterMesh | None
    endpoints: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


async def test_a_cross_cluster_trace_reads_each_sides_own_policies(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    c1, c2 = etcd_factory(), etcd_factory()
    _, sinks = await _agent_tables()
    async with (
        await KVClient.connect(c1.client_config(RW_USER)) as kv1,
        await KVClient.connect(c2.client_config(RW_USER)) as kv2,
    ):
        await _fill_c2(kv2)
        web = {"app": "web", NAMESPACE_LABEL: "default", CLUSTER_LABEL: "c2"}
        await kv2.put(keys.identity_id("c2", WEB_C2), codec.encode(Identity(WEB_C2, web)))
        await _put_policies(kv2, ALLOW_C1_CLIENTS, DENY_8080, FORGED)
        await kv2.put(policy_store.config_key("default", "damaged"), b'{"namespace": 7}')
        # c1's own egress policy: its clients may reach c2's web on 80 and 8080 only.
        egress = cnp(
            "client-out",
            {
                "endpointSelector": {"matchLabels": {"app": "client"}},
                "egress": [
                    {
                        "toEndpoints": [{"matchLabels": {"app": "web", CLUSTER_LABEL: "c2"}}],
                        "toPorts": [{"ports": [{"port": "80"}, {"port": "8080"}]}],
                    }
                ],
            },
            "c1",
        )
        await _put_policies(kv1, egress)
        _cluster_file(tmp_path, c2, cluster_id=2)
        mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
        await mesh.start()
        app = web_app(
            StandIn(
                AgentConfig("c1", 1, "n1", "198.18.1.1", config_etcd=EtcdConfig()),
                kv1,
                sinks.identities,
                mesh,
            )
        )
        try:
            await until(lambda: mesh.remotes["c2"].state == "synced", "c2 synced", 20)
            async with TestClient(TestServer(app)) as client:

                async def trace(body: dict[str, Any]) -> tuple[int, Any]:
                    resp = await client.post("/v1/policy/trace", json=body)
                    return resp.status, await resp.json()

                ok_body = {"src": "app=client", "dst_identity": WEB_C2, "dport": "80"}
                status, ok = await trace(ok_body)
                assert status == 200, ok
                assert ok["verdict"] == "ALLOWED"
                assert ok["egress"]["rule"] == {
                    "cluster": "c1",
                    "id": "default/client-out: spec.egress[0]",
                }
                assert ok["ingress"]["rule"] == {
                    "cluster": "c2",
                    "id": "default/web: spec.ingress[0]",
                }
                assert ok["resolved"]["dst"]["cluster"] == "c2"
                assert ok["policies"] == {"c1": 1, "c2": 2}
                warnings = "\n".join(ok["warnings"])
                assert (
                    "cluster c2: skipped invalid record glia/config/v1/policies/default/damaged"
                    in warnings
                )
                assert "default/forged is stored for cluster 'c1'" in warnings
                assert "src: no identity of cluster c1 has exactly these labels" in warnings

                status, no = await trace({**ok_body, "dport": "8080/TCP"})
                assert status == 200 and no["verdict"] == "DENIED", no
                assert no["egress"]["allowed"] is True
                assert no["ingress"]["rule"] == {
                    "cluster": "c2",
                    "id": "default/no-8080: spec.ingressDeny[0]",
                }
                status, other = await trace({**ok_body, "dport": "443"})
                assert other["egress"]["reason"] == "default-deny" and not other["allowed"]

                # c2 unreachable: the ingress side is not judged, and the answer says so.
                c2.stop()
                status, err = await trace(ok_body)
                assert status == 503, err
                assert err["error"]["code"] == 11
                assert err["error"]["msg"].startswith(
                    "cannot judge the ingress at the destination: the policies of cluster c2 "
                    "cannot be read: "
                )
                # The source's side alone is still judged (the world has no policy).
                status, alone = await trace(
                    {"src": "app=client", "dst": "ip:192.0.2.1", "dport": "80"}
                )
                assert status == 200 and alone["egress"]["reason"] == "default-deny"
        finally:
            await mesh.stop()


def web_app(agent: StandIn) -> web.Application:
    app = web.Application()
    api_policy.add_routes(app, agent)  # type: ignore[arg-type]
    return app
