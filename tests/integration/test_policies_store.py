"""Declared CiliumNetworkPolicies next to Services in a real etcd, through the agent's routes.

A file mixing both kinds is stored all or nothing in one transaction, re-applied
unchanged, deleted, and read back with ``GET /v1/config/policies`` (a damaged
record is skipped, never a crash). Runs against an etcd of its own
(:func:`test_services_store.own_etcd`), emptied before each test.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from test_services_store import own_etcd

from glia import declared
from glia.agent.api_config import add_routes
from glia.agent.config import AgentConfig
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.lab.etcd import RW_USER, EtcdServer
from glia.model import codec
from glia.policy import store as policy_store
from glia.policy.manifest import parse_policy, to_manifest
from glia.policy.model import Policy
from glia.service import store
from glia.service.manifest import ManifestError

CIDR = "100.64.0.0/24"
Client = TestClient[Any, Any]


@pytest.fixture(scope="module")
def pol_etcd() -> Iterator[EtcdServer]:
    with own_etcd() as srv:
        yield srv


@pytest.fixture
async def kv(pol_etcd: EtcdServer) -> AsyncIterator[KVClient]:
    c = await KVClient.connect(pol_etcd.client_config(RW_USER))
    await c.delete_prefix(keys.ROOT)
    yield c
    await c.close()


@dataclass
class FakeAgent:
    kv: KVClient | None
    cfg: AgentConfig
    config_kv: KVClient | None = None


async def _client(kv: KVClient, service_cidr: str) -> AsyncIterator[Client]:
    cfg = AgentConfig("east", 1, "n1", "198.18.1.1", service_cidr=service_cidr, config_etcd=kv.cfg)
    app = web.Application()
    add_routes(app, FakeAgent(kv, cfg, config_kv=kv))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
async def api(kv: KVClient) -> AsyncIterator[Client]:
    async for c in _client(kv, CIDR):
        yield c


SVC: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "clusterIP": "100.64.0.20"},
}
WEB: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"k8s:app": "client"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    },
}
DENY: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "no-world"},
    "specs": [{"endpointSelector": {}, "egressDeny": [{"toEntities": ["world"]}]}],
}


async def apply(client: Client, *docs: dict[str, Any]) -> tuple[int, Any]:
    resp = await client.post("/v1/config/apply", json={"documents": list(docs), "source": "m.yaml"})
    return resp.status, await resp.json()


async def config_keys(kv: KVClient) -> dict[str, bytes]:
    items, _ = await kv.list(keys.CONFIG)
    return {i.key.removeprefix(keys.CONFIG): i.value for i in items}


def actions(answer: Any) -> list[tuple[str, str, str]]:
    return [(r["kind"], r["name"], r["action"]) for r in answer["results"]]


async def test_a_mixed_file_is_stored_in_file_order_and_reapplied_unchanged(
    api: Client, kv: KVClient
) -> None:
    status, answer = await apply(api, WEB, SVC, DENY)
    assert status == 200, answer
    assert actions(answer) == [
        ("ciliumnetworkpolicy", "web", "created"),
        ("service", "web", "created"),
        ("ciliumnetworkpolicy", "no-world", "created"),
    ]
    stored = await config_keys(kv)
    assert set(stored) == {
        "policies/shop/web",
        "policies/default/no-world",
        "services/default/web",
        "clusterips/100.64.0.20",
    }
    policy = codec.decode(Policy, stored["policies/shop/web"])
    assert policy == parse_policy(WEB, cluster="east")
    assert policy.cluster == "east"
    # The same file again changes nothing, not even a revision.
    revision = (await kv.get(policy_store.config_key("shop", "web"))).mod_revision  # type: ignore[union-attr]
    status, answer = await apply(api, WEB, SVC, DENY)
    assert status == 200, answer
    assert [a for _, _, a in actions(answer)] == ["unchanged"] * 3
    after = await kv.get(policy_store.config_key("shop", "web"))
    assert after is not None and after.mod_revision == revision
    # A changed policy is configured, the rest unchanged.
    changed = {**DENY, "specs": [{**DENY["specs"][0], "description": "no internet"}]}
    status, answer = await apply(api, WEB, SVC, changed)
    assert actions(answer)[2] == ("ciliumnetworkpolicy", "no-world", "configured")
    assert [a for _, _, a in actions(answer)[:2]] == ["unchanged", "unchanged"]


async def test_one_bad_document_stores_nothing(api: Client, kv: KVClient) -> None:
    status, answer = await apply(api, DENY)
    assert status == 200, answer
    before = await config_keys(kv)
    bad = {**WEB, "spec": {**WEB["spec"], "ingress": [{"fromEntities": ["moon"]}]}}
    unknown = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    changed = {**DENY, "specs": [{"endpointSelector": {}, "egress": [{"toEntities": ["all"]}]}]}
    status, answer = await apply(api, SVC, changed, bad, unknown)
    assert status == 400
    assert answer["error"]["msg"].splitlines() == [
        "m.yaml: document 3 (CiliumNetworkPolicy shop/web): spec.ingress[0].fromEntities[0]: "
        'expected one of host, remote-node, world, cluster, all, got "moon"',
        "m.yaml: document 4: kind: expected v1 Service or cilium.io/v2 CiliumNetworkPolicy "
        'objects, got "Deployment"',
    ]
    assert await config_keys(kv) == before
    # Valid documents, but the store refuses one Service: the policies are not stored either.
    other = {**SVC, "metadata": {"name": "other"}}
    status, answer = await apply(api, other)
    assert status == 200, answer
    status, answer = await apply(api, WEB, changed, SVC)
    assert status == 400
    assert "100.64.0.20 is already allocated to Service default/other" in answer["error"]["msg"]
    after = await config_keys(kv)
    assert "policies/shop/web" not in after
    assert after["policies/default/no-world"] == before["policies/default/no-world"]


async def test_delete_both_kinds(api: Client, kv: KVClient) -> None:
    status, answer = await apply(api, SVC, WEB)
    assert status == 200, answer
    resp = await api.post("/v1/config/delete", json={"documents": [DENY, WEB, SVC, WEB]})
    assert resp.status == 200
    assert actions(await resp.json()) == [
        ("ciliumnetworkpolicy", "no-world", "not found"),
        ("ciliumnetworkpolicy", "web", "deleted"),
        ("service", "web", "deleted"),
    ]
    assert await config_keys(kv) == {}
    # Deleting needs only the names: a document invalid beyond its metadata still names one.
    status, _ = await apply(api, WEB)
    broken = {**WEB, "spec": {"nonsense": 1}}
    resp = await api.post("/v1/config/delete", json={"documents": [broken]})
    assert actions(await resp.json()) == [("ciliumnetworkpolicy", "web", "deleted")]
    resp = await api.post("/v1/config/delete", json={"documents": [{**WEB, "kind": "Pod"}]})
    assert resp.status == 400


async def test_get_policies_round_trip_and_skip_damaged_records(
    api: Client, kv: KVClient, caplog: pytest.LogCaptureFixture
) -> None:
    status, answer = await apply(api, WEB, DENY, SVC)
    assert status == 200, answer
    resp = await api.get("/v1/config/policies")
    assert resp.status == 200
    got = await resp.json()
    assert got == [
        to_manifest(parse_policy(DENY, cluster="east")),
        to_manifest(parse_policy(WEB, cluster="east")),
    ]
    # What get answers applies again as unchanged: the round trip is exact.
    status, answer = await apply(api, *got)
    assert [a for _, _, a in actions(answer)] == ["unchanged", "unchanged"]
    resp = await api.get("/v1/config/policies", params={"name": "web", "namespace": "shop"})
    assert [p["metadata"]["name"] for p in await resp.json()] == ["web"]
    resp = await api.get("/v1/config/policies", params={"name": "web"})
    assert await resp.json() == []
    resp = await api.get("/v1/config/policies", params={"namespace": "shop"})
    assert [p["metadata"]["name"] for p in await resp.json()] == ["web"]
    resp = await api.get("/v1/config/policies", params={"namespace": "a/b"})
    assert resp.status == 400
    # Damaged records: not JSON, the wrong shape, and well-shaped but not normal form.
    abnormal = codec.to_dict(parse_policy(DENY, cluster="east"))
    abnormal["specs"][0]["egress_deny"][0]["entities"] = ["world", "world"]
    await kv.put(policy_store.config_key("default", "junk"), b"{not json")
    await kv.put(policy_store.config_key("default", "shape"), b'{"namespace": 1}')
    await kv.put(policy_store.config_key("default", "odd"), json.dumps(abnormal).encode())
    with caplog.at_level(logging.WARNING, logger="glia.policy.store"):
        resp = await api.get("/v1/config/policies", params={"namespace": "default"})
        assert resp.status == 200
        assert [p["metadata"]["name"] for p in await resp.json()] == ["no-world"]
        resp = await api.get("/v1/config/policies", params={"name": "junk"})
        assert resp.status == 200 and await resp.json() == []
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("junk", "shape", "odd"):
        assert f"policies/default/{name}" in warned


async def test_policies_need_no_service_cidr(kv: KVClient) -> None:
    async for client in _client(kv, ""):
        status, answer = await apply(client, DENY)
        assert status == 200, answer
        assert actions(answer) == [("ciliumnetworkpolicy", "no-world", "created")]
        status, answer = await apply(client, DENY, SVC)
        assert status == 503
        assert "service_cidr" in answer["error"]["msg"]


async def test_too_many_policies_for_one_transaction(kv: KVClient) -> None:
    docs = [{**DENY, "metadata": {"name": f"p{i}"}} for i in range(5)]
    parsed = declared.parse(docs, "big.yaml", cluster="east")
    records = [policy_store.record(p) for p in parsed.policies]
    with pytest.raises(ManifestError, match="5 operations do not fit in one etcd transaction"):
        await store.apply(kv, [], "", max_txn_ops=4, records=records)
    assert await config_keys(kv) == {}
    results = await store.apply(kv, [], "", max_txn_ops=5, records=records)
    assert [r.action for r in results] == ["created"] * 5
    # Concurrent appliers, each changing every policy its own way: each transaction
    # wins or re-reads and tries again; the records end up as one applier wrote them.
    variants = [
        [
            policy_store.record(replace(d, policy=replace(d.policy, labels={"v": str(k)})))
            for d in parsed.policies
        ]
        for k in range(4)
    ]
    outcomes = await asyncio.gather(*(store.apply(kv, [], "", records=v) for v in variants))
    assert all(r.action in ("configured", "unchanged") for rs in outcomes for r in rs)
    stored = await config_keys(kv)
    values = {r.key.removeprefix(keys.CONFIG): r.value for v in variants for r in v}
    for k, value in stored.items():
        assert value in {r.value for v in variants for r in v if r.key.endswith(k)}, k
    assert len(stored) == 5 and set(stored) <= set(values)
