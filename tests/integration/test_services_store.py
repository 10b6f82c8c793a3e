"""Declared Services in a real etcd: atomic applies, ClusterIPs never given twice, delete, API.

The Services' keys are global to an etcd (``glia/config/v1/...``), so these
tests run against an etcd of their own (:func:`own_etcd`, also used by
test_operator_services.py) and empty ``glia/`` before each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from glia.agent.api_config import add_routes
from glia.agent.config import AgentConfig
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.lab.etcd import RW_USER, EtcdError, EtcdServer, free_tcp_port
from glia.model import codec
from glia.model.service import ServicePort, ServiceSpec
from glia.service import store
from glia.service.clusterip import ClusterIPExhausted
from glia.service.manifest import ManifestError, load_yaml, parse_services

CIDR = "100.64.0.0/24"


@contextlib.contextmanager
def own_etcd() -> Iterator[EtcdServer]:
    """A fresh etcd (TLS, client-cert auth) in a glia-prefixed temp dir, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="glia-test-svc-"))
    srv: EtcdServer | None = None
    try:
        for attempt in range(3):
            client_port, peer_port = free_tcp_port(), free_tcp_port()
            srv = EtcdServer(
                f"svc{attempt}",
                base / f"glia-etcd-{attempt}",
                ("127.0.0.1", client_port),
                peer_port,
                base / "pki",
            )
            try:
                srv.start()
                srv.wait_ready(timeout=30)
                srv.bootstrap_auth()
                break
            except EtcdError:
                srv.cleanup()
                srv = None
        if srv is None:
            raise RuntimeError("could not start an etcd for the service tests")
        yield srv
    finally:
        if srv is not None:
            srv.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def svc_etcd() -> Iterator[EtcdServer]:
    with own_etcd() as srv:
        yield srv


@pytest.fixture
async def kv(svc_etcd: EtcdServer) -> AsyncIterator[KVClient]:
    c = await KVClient.connect(svc_etcd.client_config(RW_USER))
    await c.delete_prefix(keys.ROOT)
    yield c
    await c.close()


def spec(name: str, ip: str = "", ns: str = "default", port: int = 80) -> ServiceSpec:
    return ServiceSpec(ns, name, ip, [ServicePort(port, 8080)], {"app": name})


async def stored(kv: KVClient) -> dict[str, str]:
    """Every Service and reservation in etcd: {key suffix: ClusterIP or owner}."""
    out = {}
    for item in (await kv.list(keys.configs(store.KIND)))[0]:
        out[item.key.removeprefix(keys.CONFIG)] = codec.decode(ServiceSpec, item.value).cluster_ip
    for item in (await kv.list(keys.CLUSTERIPS))[0]:
        out[item.key.removeprefix(keys.CONFIG)] = item.value.decode()
    return out


# -- apply ----------------------------------------------------------------------------


async def test_apply_creates_then_keeps_the_cluster_ip(kv: KVClient) -> None:
    [r] = await store.apply(kv, [spec("web")], CIDR, rng=random.Random(3))
    assert (r.namespace, r.name, r.action) == ("default", "web", "created")
    ip = r.cluster_ip
    assert ip.startswith("100.64.0.")
    assert await stored(kv) == {"services/default/web": ip, f"clusterips/{ip}": "default/web"}
    got = await store.get_spec(kv, "default", "web")
    assert got == replace(spec("web"), cluster_ip=ip)

    [r] = await store.apply(kv, [spec("web")], CIDR)
    assert (r.action, r.cluster_ip) == ("unchanged", ip)
    [r] = await store.apply(kv, [spec("web", ip=ip)], CIDR)
    assert (r.action, r.cluster_ip) == ("unchanged", ip)
    [r] = await store.apply(kv, [spec("web", port=81)], CIDR)
    assert (r.action, r.cluster_ip) == ("configured", ip)
    assert await stored(kv) == {"services/default/web": ip, f"clusterips/{ip}": "default/web"}
    assert [s.ports[0].port for s in await store.list_specs(kv)] == [81]


async def test_cluster_ip_is_immutable(kv: KVClient) -> None:
    await store.apply(kv, [spec("web", ip="100.64.0.5")], CIDR)
    with pytest.raises(ManifestError) as ei:
        await store.apply(kv, [spec("web", ip="100.64.0.6")], CIDR)
    assert ei.value.problems == [
        "Service default/web: spec.clusterIP: is immutable: the Service has 100.64.0.5, "
        "got 100.64.0.6 (delete the Service to change it)"
    ]


async def test_one_bad_document_stores_nothing(kv: KVClient) -> None:
    await store.apply(kv, [spec("taken", ip="100.64.0.7")], CIDR)
    before = await stored(kv)
    text = "\n---\n".join(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        f"spec: {{selector: {{app: x}}, ports: [{{port: 80}}]{extra}}}"
        for name, extra in [
            ("one", ""),
            ("two", ", clusterIP: 100.64.0.9"),
            ("three", ", clusterIP: 100.64.0.7"),  # taken by default/taken
            ("four", ""),
        ]
    )
    docs = parse_services(load_yaml(text, "svc.yaml"), "svc.yaml", service_cidr=CIDR)
    with pytest.raises(ManifestError) as ei:
        await store.apply(kv, docs, CIDR)
    assert ei.value.problems == [
        "svc.yaml: document 3 (Service default/three): spec.clusterIP: 100.64.0.7 is already "
        "allocated to Service default/taken"
    ]
    assert await stored(kv) == before  # read back from etcd: nothing of the file

    outside = [spec("a"), spec("b", ip="10.0.0.1")]
    with pytest.raises(ManifestError, match=r"spec\.clusterIP: 10\.0\.0\.1 is outside the service"):
        await store.apply(kv, outside, CIDR)
    assert await stored(kv) == before


async def test_concurrent_applies_never_share_a_cluster_ip(kv: KVClient) -> None:
    cidr = "100.64.0.0/26"  # 62 addresses, 36 wanted: plenty of collisions to retry
    batches = [[spec(f"s{i}-{j}") for j in range(3)] for i in range(12)]
    clients = [kv] + [
        await KVClient.connect(kv.cfg) for _ in range(3)
    ]  # several connections, as several agents would
    try:
        results = await asyncio.gather(
            *(store.apply(clients[i % 4], b, cidr) for i, b in enumerate(batches))
        )
    finally:
        for c in clients[1:]:
            await c.close()
    ips = [r.cluster_ip for rs in results for r in rs]
    assert len(ips) == 36 == len(set(ips))
    state = await stored(kv)
    reservations = {
        k.removeprefix("clusterips/"): v for k, v in state.items() if "clusterips/" in k
    }
    assert len(reservations) == 36
    for rs in results:
        for r in rs:
            assert reservations[r.cluster_ip] == f"default/{r.name}"
            assert state[f"services/default/{r.name}"] == r.cluster_ip


async def test_a_full_cidr_refuses_and_stores_nothing(kv: KVClient) -> None:
    cidr = "100.64.0.0/29"  # 6 addresses for 8 concurrent applies
    outcomes = await asyncio.gather(
        *(store.apply(kv, [spec(f"s{i}")], cidr) for i in range(8)), return_exceptions=True
    )
    ok = [o for o in outcomes if isinstance(o, list)]
    full = [o for o in outcomes if isinstance(o, ClusterIPExhausted)]
    assert (len(ok), len(full)) == (6, 2), outcomes
    assert len({o[0].cluster_ip for o in ok}) == 6
    assert len(await stored(kv)) == 12  # 6 Services + 6 reservations


async def test_the_last_free_address_is_found(kv: KVClient) -> None:
    cidr = "100.64.0.0/29"
    await store.apply(kv, [spec(f"s{i}", ip=f"100.64.0.{i}") for i in range(1, 6)], cidr)
    [r] = await store.apply(kv, [spec("last")], cidr, rng=random.Random(0))
    assert r.cluster_ip == "100.64.0.6"


async def test_too_many_services_for_one_transaction(kv: KVClient) -> None:
    with pytest.raises(ManifestError, match="max-txn-ops"):
        await store.apply(kv, [spec(f"s{i}") for i in range(65)], "100.64.0.0/16")
    assert await stored(kv) == {}
    results = await store.apply(kv, [spec(f"s{i}") for i in range(64)], "100.64.0.0/16")
    assert len(results) == 64


# -- delete ---------------------------------------------------------------------------


async def test_delete_releases_the_cluster_ip(kv: KVClient) -> None:
    await store.apply(kv, [spec("web", ip="100.64.0.5"), spec("db")], CIDR)
    results = await store.delete(kv, [("default", "web"), ("default", "nope"), ("default", "web")])
    assert [(r.name, r.action, r.cluster_ip) for r in results] == [
        ("web", "deleted", "100.64.0.5"),
        ("nope", "not found", ""),
    ]
    assert list(await stored(kv)) == ["services/default/db", f"clusterips/{(await db_ip(kv))}"]
    # the address is free again, for another Service
    [r] = await store.apply(kv, [spec("other", ip="100.64.0.5")], CIDR)
    assert r.action == "created"


async def db_ip(kv: KVClient) -> str:
    s = await store.get_spec(kv, "default", "db")
    assert s is not None
    return s.cluster_ip


# -- the agent's API routes ----------------------------------------------------------


@dataclass
class FakeAgent:
    kv: KVClient | None
    cfg: AgentConfig
    config_kv: KVClient | None = None


@pytest.fixture
async def api(kv: KVClient) -> AsyncIterator[tuple[TestClient[Any, Any], FakeAgent]]:
    cfg = AgentConfig("c1", 1, "n1", "198.18.1.1", service_cidr=CIDR, config_etcd=kv.cfg)
    agent = FakeAgent(kv, cfg, config_kv=kv)
    app = web.Application()
    add_routes(app, agent)
    async with TestClient(TestServer(app)) as client:
        yield client, agent


WEB: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "clusterIP": "100.64.0.20"},
}


async def test_api_apply_get_delete(api: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    client, _ = api
    resp = await client.post("/v1/config/apply", json={"documents": [WEB], "source": "w.yaml"})
    assert resp.status == 200
    assert await resp.json() == {
        "results": [
            {
                "namespace": "default",
                "name": "web",
                "action": "created",
                "cluster_ip": "100.64.0.20",
                "kind": "service",
            }
        ]
    }
    resp = await client.get("/v1/config/services")
    [got] = await resp.json()
    assert got["spec"]["clusterIP"] == "100.64.0.20"
    assert got["metadata"] == {"name": "web", "namespace": "default"}
    resp = await client.get("/v1/config/services", params={"name": "web"})
    assert len(await resp.json()) == 1
    resp = await client.get("/v1/config/services", params={"namespace": "other"})
    assert await resp.json() == []
    resp = await client.post("/v1/config/delete", json={"documents": [WEB]})
    assert (await resp.json())["results"][0]["action"] == "deleted"


async def test_api_validates_again(api: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    client, _ = api
    bad = {**WEB, "spec": {**WEB["spec"], "clusterIP": "10.0.0.1"}}
    other = {**WEB, "metadata": {"name": "ok"}, "spec": {**WEB["spec"], "clusterIP": ""}}
    resp = await client.post("/v1/config/apply", json={"documents": [other, bad], "source": "f"})
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["code"] == 7
    assert err["msg"] == (
        "f: document 2 (Service default/web): spec.clusterIP: 10.0.0.1 is outside the "
        "service CIDR 100.64.0.0/24"
    )
    for body in (b"{nope", b"[]", b'{"documents": []}', b'{"documents": "x"}'):
        resp = await client.post("/v1/config/apply", data=body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] == 7
    resp = await client.get("/v1/config/services")
    assert await resp.json() == []  # nothing was stored


async def test_api_of_an_unready_agent(api: tuple[TestClient[Any, Any], FakeAgent]) -> None:
    client, agent = api
    agent.cfg = replace(agent.cfg, service_cidr="")
    resp = await client.post("/v1/config/apply", json={"documents": [WEB]})
    assert resp.status == 503
    assert "no service_cidr" in (await resp.json())["error"]["msg"]
    agent.config_kv = None
    resp = await client.get("/v1/config/services")
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == 11
    agent.cfg = replace(agent.cfg, config_etcd=None)
    resp = await client.get("/v1/config/services")
    assert resp.status == 503
    assert "serves no declared resources" in (await resp.json())["error"]["msg"]
