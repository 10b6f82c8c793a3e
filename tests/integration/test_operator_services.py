"""The operator's ServiceResolver against a real etcd: records follow config, endpoints, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest
from test_services_store import own_etcd
from waiting import until

from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.lab.etcd import RW_USER, EtcdServer
from glia.model import codec
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.node import PodCIDRAllocation
from glia.model.service import (
    BackendHealth,
    ClusterService,
    ProbeResult,
    ServicePort,
    ServiceSpec,
)
from glia.operator.config import OperatorConfig
from glia.operator.daemon import Operator
from glia.operator.services import ServiceResolver
from glia.service import store

CLUSTER = "c1"
CIDR = "100.64.0.0/16"
NODE_CIDRS = {"n1": "10.1.1.0/24", "n2": "10.1.2.0/24"}


@pytest.fixture(scope="module")
def svc_etcd() -> Iterator[EtcdServer]:
    with own_etcd() as srv:
        yield srv


@pytest.fixture
async def kv(svc_etcd: EtcdServer) -> AsyncIterator[KVClient]:
    c = await KVClient.connect(svc_etcd.client_config(RW_USER))
    await c.delete_prefix(keys.ROOT)
    # The operator's pod CIDR allocations bound what each node's endpoints may claim.
    for node, block in NODE_CIDRS.items():
        await c.put(keys.podcidr_node(CLUSTER, node), codec.encode(PodCIDRAllocation(node, block)))
    yield c
    await c.close()


@pytest.fixture
async def resolver(kv: KVClient) -> AsyncIterator[ServiceResolver]:
    r = ServiceResolver(kv, CLUSTER, 1)
    await r.start()
    yield r
    await r.stop()


def web_spec(**changes: object) -> ServiceSpec:
    s = ServiceSpec("shop", "web", "", [ServicePort(80, 8080, name="http")], {"app": "web"})
    return replace(s, **changes)  # type: ignore[arg-type]


def endpoint(name: str, ip: str, node: str = "n1", app: str = "web") -> Endpoint:
    return Endpoint(
        container_id=f"c-{name}",
        namespace="shop",
        name=name,
        cluster=CLUSTER,
        node=node,
        ip=ip,
        identity=65792,
        labels={"app": app},
        state=EndpointState.READY,
    )


async def put_endpoint(kv: KVClient, ep: Endpoint) -> None:
    await kv.put(keys.endpoint(CLUSTER, ep.node, ep.namespace, ep.name), codec.encode(ep))


async def put_health(kv: KVClient, node: str, *results: tuple[str, int, bool]) -> None:
    value = BackendHealth(
        node, [ProbeResult("shop/web", ip, port, ok, 0.0) for ip, port, ok in results]
    )
    await kv.put(keys.health(CLUSTER, node), codec.encode(value))


async def record(kv: KVClient, ns: str = "shop", name: str = "web") -> ClusterService | None:
    item = await kv.get(keys.service(CLUSTER, ns, name))
    return None if item is None else codec.decode(ClusterService, item.value)


async def backends(kv: KVClient) -> list[tuple[str, int, bool]] | None:
    rec = await record(kv)
    return None if rec is None else [(b.ip, b.port, b.ready) for b in rec.backends]


async def until_backends(kv: KVClient, want: list[tuple[str, int, bool]] | None) -> None:
    async def cond() -> bool:
        return await backends(kv) == want

    await until(cond, f"backends {want}")


async def test_records_follow_config_endpoints_and_health(
    kv: KVClient, resolver: ServiceResolver
) -> None:
    [applied] = await store.apply(kv, [web_spec()], CIDR)
    await until_backends(kv, [])
    rec = await record(kv)
    assert rec is not None
    assert (rec.cluster, rec.cluster_id, rec.cluster_ip) == (CLUSTER, 1, applied.cluster_ip)

    await put_endpoint(kv, endpoint("a", "10.1.1.5"))
    await put_endpoint(kv, endpoint("b", "10.1.2.7", node="n2"))
    await put_endpoint(kv, endpoint("db", "10.1.1.9", app="db"))
    await until_backends(kv, [("10.1.1.5", 8080, False), ("10.1.2.7", 8080, False)])

    await put_health(kv, "n1", ("10.1.1.5", 8080, True))
    await put_health(kv, "n2", ("10.1.2.7", 8080, True))
    await until_backends(kv, [("10.1.1.5", 8080, True), ("10.1.2.7", 8080, True)])

    await put_health(kv, "n2", ("10.1.2.7", 8080, False))  # fails its probe
    await until_backends(kv, [("10.1.1.5", 8080, True), ("10.1.2.7", 8080, False)])
    await kv.delete(keys.health(CLUSTER, "n1"))  # n1's agent is gone: no result, not ready
    await until_backends(kv, [("10.1.1.5", 8080, False), ("10.1.2.7", 8080, False)])
    await put_health(kv, "n1", ("10.1.1.5", 8080, True))

    await put_endpoint(kv, replace(endpoint("b", "10.1.2.7", node="n2"), labels={"app": "other"}))
    await until_backends(kv, [("10.1.1.5", 8080, True)])
    await put_endpoint(kv, endpoint("b", "10.1.2.7", node="n2"))
    await put_health(kv, "n2", ("10.1.2.7", 8080, True))
    await until_backends(kv, [("10.1.1.5", 8080, True), ("10.1.2.7", 8080, True)])
    await kv.delete(keys.endpoint(CLUSTER, "n1", "shop", "a"))
    await until_backends(kv, [("10.1.2.7", 8080, True)])

    # a config change (another target port) re-resolves; the probes of 9090 are not in yet
    await store.apply(kv, [web_spec(ports=[ServicePort(80, 9090, name="http")])], CIDR)
    await until_backends(kv, [("10.1.2.7", 9090, False)])

    await store.delete(kv, [("shop", "web")])
    await until_backends(kv, None)
    assert resolver.status()["errors"] == 0


async def test_only_changes_are_written(kv: KVClient, resolver: ServiceResolver) -> None:
    await store.apply(kv, [web_spec()], CIDR)
    await put_endpoint(kv, endpoint("a", "10.1.1.5"))
    await until_backends(kv, [("10.1.1.5", 8080, False)])
    first = await kv.get(keys.service(CLUSTER, "shop", "web"))
    assert first is not None
    writes, passes = resolver.writes, resolver.passes

    # events that do not change the record: another app's endpoint, a no-op
    # rewrite, a probe result of an address that is no backend (marks web dirty)
    await put_endpoint(kv, endpoint("db", "10.1.1.9", app="db"))
    await put_endpoint(kv, endpoint("a", "10.1.1.5"))
    await put_health(kv, "n1", ("10.1.1.99", 8080, True))

    async def idle_after_a_pass() -> bool:
        return resolver.passes > passes and resolver.status()["pending"] == 0

    await until(idle_after_a_pass, "a resolution pass")
    assert resolver.writes == writes
    again = await kv.get(keys.service(CLUSTER, "shop", "web"))
    assert again is not None and again.mod_revision == first.mod_revision

    await put_endpoint(kv, endpoint("b", "10.1.1.6"))  # this one does change it
    await until_backends(kv, [("10.1.1.5", 8080, False), ("10.1.1.6", 8080, False)])

    # The record is visible in etcd a moment before the resolver counts the write.
    async def counted() -> bool:
        return resolver.writes >= writes + 1 and resolver.status()["pending"] == 0

    await until(counted, "the write to be counted")
    assert resolver.writes == writes + 1


async def test_start_removes_stale_records_and_keeps_current_ones(kv: KVClient) -> None:
    await store.apply(kv, [web_spec()], CIDR)
    await put_endpoint(kv, endpoint("a", "10.1.1.5"))
    first = ServiceResolver(kv, CLUSTER, 1)
    await first.start()  # start() publishes before it returns
    await first.stop()
    current = await kv.get(keys.service(CLUSTER, "shop", "web"))
    assert current is not None
    stale = replace(codec.decode(ClusterService, current.value), name="gone")
    await kv.put(keys.service(CLUSTER, "shop", "gone"), codec.encode(stale))
    await kv.put(keys.service(CLUSTER, "shop", "junk"), b"{garbage")
    await kv.put(keys.service("c2", "shop", "gone"), codec.encode(stale))  # another cluster's

    second = ServiceResolver(kv, CLUSTER, 1)
    await second.start()
    try:
        items, _ = await kv.list(keys.services(CLUSTER))
        assert [i.key for i in items] == [keys.service(CLUSTER, "shop", "web")]
        assert items[0].mod_revision == current.mod_revision  # not rewritten
        assert await kv.get(keys.service("c2", "shop", "gone")) is not None
        assert second.status()["deletes"] == 2
    finally:
        await second.stop()


async def test_many_services_are_published_in_few_passes(
    kv: KVClient, resolver: ServiceResolver
) -> None:
    n = 300
    specs = [
        ServiceSpec("shop", f"s{i}", "", [ServicePort(80, 8080)], {"app": "web", "n": str(i % 3)})
        for i in range(n)
    ]
    for i in range(0, n, 60):
        await store.apply(kv, specs[i : i + 60], CIDR)

    async def all_published() -> bool:
        return len((await kv.list(keys.services(CLUSTER)))[0]) == n

    # Generous bounds: correctness is under test here, speed is bench/'s (a busy CI
    # machine once took over 5 s).
    await until(all_published, f"{n} records", 30)
    passes = resolver.passes
    # one endpoint matching a third of them: one debounced pass re-publishes those 100
    ep = replace(endpoint("a", "10.1.1.5"), labels={"app": "web", "n": "1"})
    writes = resolver.writes
    await put_endpoint(kv, ep)

    async def hundred_written() -> bool:
        return resolver.writes == writes + n // 3

    await until(hundred_written, "100 records rewritten", 30)
    assert resolver.passes - passes <= 2
    rec = await record(kv, "shop", "s1")
    assert rec is not None and [b.ip for b in rec.backends] == ["10.1.1.5"]
    rec = await record(kv, "shop", "s0")
    assert rec is not None and rec.backends == []


async def test_the_operator_runs_the_resolver_when_it_leads(
    kv: KVClient, svc_etcd: EtcdServer
) -> None:
    await store.apply(kv, [web_spec()], CIDR)
    await put_endpoint(kv, endpoint("a", "10.1.1.5"))
    cfg = OperatorConfig(
        cluster=CLUSTER,
        cluster_id=1,
        pod_pool="10.1.0.0/16",
        service_cidr=CIDR,
        etcd=svc_etcd.client_config(RW_USER),
        identity="glia-test-operator",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(Operator(cfg).run(stop))
    try:
        await until_backends(kv, [("10.1.1.5", 8080, False)])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_forged_endpoints_and_probe_results_never_make_backends(
    kv: KVClient, resolver: ServiceResolver
) -> None:
    await store.apply(kv, [web_spec()], CIDR)
    await put_endpoint(kv, endpoint("a", "10.1.1.5"))
    # n2 writes endpoints with n1's address, etcd's, one of no block at all, and
    # one naming n1 under its own key; then claims n1's backend is down.
    await put_endpoint(kv, endpoint("steal", "10.1.1.6", node="n2"))
    await put_endpoint(kv, endpoint("etcd", "127.0.0.1", node="n2"))
    await put_endpoint(kv, endpoint("far", "10.9.0.1", node="n2"))
    await kv.put(
        keys.endpoint(CLUSTER, "n2", "shop", "liar"),
        codec.encode(endpoint("liar", "10.1.2.8", node="n1")),
    )
    await put_health(kv, "n2", ("10.1.1.5", 8080, False))
    await put_health(kv, "n1", ("10.1.1.5", 8080, True))
    await until_backends(kv, [("10.1.1.5", 8080, True)])
    rejected = resolver.rejects.current()
    for name in ("steal", "etcd", "far", "liar"):
        assert keys.endpoint(CLUSTER, "n2", "shop", name) in rejected, rejected
    assert keys.health(CLUSTER, "n2") in rejected
    # A good endpoint of n2 written afterwards still becomes a backend.
    await put_endpoint(kv, endpoint("b", "10.1.2.7", node="n2"))
    await put_health(kv, "n2", ("10.1.2.7", 8080, True))
    await until_backends(kv, [("10.1.1.5", 8080, True), ("10.1.2.7", 8080, True)])
