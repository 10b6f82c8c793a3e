"""A real etcd paused (SIGSTOP) past the lease TTL, then resumed: nothing is lost.

On SIGCONT etcd revokes the expired leases at once and deletes their keys;
their owners grant new leases and put the keys again. Shown here with 2 s
leases and a 4 s pause:

- the publisher re-publishes what it wants, and a key withdrawn (or whose put
  failed) while etcd was stopped never comes back;
- a reflector whose handler defers deletes (glia.kvstore.grace) never tells
  its consumer that a re-published key went, while a plain one does;
- the operator steps down, campaigns again (same process) and leads again;
  the ClusterService it publishes never loses its backend, and a Service
  applied afterwards is resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest
from etcd_pause import paused
from waiting import until

from glia.kvstore import keys
from glia.kvstore.client import EventKind, KeyValue, KVClient
from glia.kvstore.errors import KVStoreUnavailable
from glia.kvstore.grace import defer_deletes
from glia.kvstore.publisher import LeasedPublisher
from glia.kvstore.reflector import Reflector
from glia.lab.etcd import RW_USER, EtcdServer
from glia.model import codec
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.node import PodCIDRAllocation
from glia.model.service import (
    BackendHealth,
    ClusterService,
    HealthCheck,
    ProbeResult,
    ProbeType,
    ServicePort,
    ServiceSpec,
)
from glia.operator.config import OperatorConfig
from glia.operator.daemon import Operator
from glia.service import store

TTL = 2  # etcd's smallest lease (1.5 s) rounded up
PAUSE = 4.0  # past the TTL: etcd revokes on SIGCONT
GRACE = 3.0
CLUSTER = "c1"
CIDR = "100.64.0.0/16"


class Log:
    """A reflector handler that records what its consumer would see."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_upsert(self, key: str, kv: KeyValue) -> None:
        self.events.append(("upsert", key))

    def on_delete(self, key: str, old: KeyValue | None) -> None:
        self.events.append(("delete", key))

    def on_synced(self) -> None:
        return None

    def deletes(self) -> list[str]:
        return [k for what, k in self.events if what == "delete"]

    def present(self) -> set[str]:
        """The keys the consumer holds now."""
        last = dict((k, what) for what, k in self.events)
        return {k for k, what in last.items() if what == "upsert"}


@pytest.fixture
def srv(etcd_factory: Callable[[], EtcdServer]) -> EtcdServer:
    return etcd_factory()


@pytest.fixture
async def clients(srv: EtcdServer) -> AsyncIterator[tuple[KVClient, KVClient]]:
    # A short call budget, so calls made while etcd is stopped fail within the test.
    cfg = dataclasses.replace(srv.client_config(RW_USER), dial_timeout=1.0)
    owner = await KVClient.connect(cfg, retry_timeout=2.0)
    reader = await KVClient.connect(cfg)
    yield owner, reader
    await owner.close()
    await reader.close()


async def test_publisher_and_deferred_deletes_across_a_pause(
    srv: EtcdServer, clients: tuple[KVClient, KVClient], etcd_prefix: str
) -> None:
    owner, reader = clients
    p = etcd_prefix
    pub = LeasedPublisher(owner, TTL)
    await pub.start()
    plain, shielded = Log(), Log()
    reflectors = [
        Reflector(reader, p, plain),
        Reflector(reader, p, defer_deletes(shielded, reader, GRACE)),
    ]
    try:
        for r in reflectors:
            await r.start(timeout=10)
        await pub.publish(p + "kept", b"1")
        await pub.publish(p + "withdrawn", b"2")
        await pub.publish(p + "explicit", b"3")
        assert await pub.withdraw(p + "explicit") is True  # lease alive: passes at once
        await until(lambda: p + "explicit" in shielded.deletes(), "the explicit delete", 5)
        assert pub.lease is not None
        first_lease = pub.lease.id

        loop = asyncio.get_running_loop()
        stopped = loop.time()
        with paused(srv):
            with pytest.raises(KVStoreUnavailable):
                await pub.publish(p + "failed-add", b"4")  # a CNI ADD during the pause
            assert await pub.withdraw(p + "failed-add") is False  # its rollback
            assert await pub.withdraw(p + "withdrawn") is False
            assert set(pub.pending()) == {p + "failed-add", p + "withdrawn"}
            await asyncio.sleep(max(0.0, stopped + PAUSE - loop.time()))

        await until(lambda: pub.regrants == 1, "the publisher to re-grant", 10)
        assert pub.lease.id != first_lease
        await until(lambda: pub.pending() == {}, "the background deletes to finish", 10)
        stored, _ = await reader.list(p)
        assert [(kv.key, kv.lease) for kv in stored] == [(p + "kept", pub.lease.id)]

        # etcd deleted "kept" with the old lease; only the plain reflector passed it on.
        await until(lambda: p + "kept" in plain.deletes(), "the revocation to be seen", 5)
        await asyncio.sleep(GRACE + 0.5)  # anything held back is delivered by now
        assert p + "kept" not in shielded.deletes()
        assert p + "withdrawn" in shielded.deletes()  # really gone: passed on late
        # etcd may apply the failed ADD's put it had received when it resumes
        # (then revoke it at once): whatever the consumer saw, it ends without it.
        assert shielded.present() == plain.present() == {p + "kept"}
    finally:
        for r in reflectors:
            await r.stop()
        await pub.stop(revoke=True)


def web(name: str, **changes: object) -> ServiceSpec:
    spec = ServiceSpec("shop", name, "", [ServicePort(80, 8080)], {"app": "web"})
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


async def test_the_operator_campaigns_again_and_keeps_the_backends(
    srv: EtcdServer, clients: tuple[KVClient, KVClient]
) -> None:
    owner, reader = clients
    await reader.delete_prefix(keys.ROOT)
    # The operator's allocation that bounds the node's endpoints (not leased).
    alloc = PodCIDRAllocation("n1", "10.1.1.0/24")
    await reader.put(keys.podcidr_node(CLUSTER, "n1"), codec.encode(alloc))
    # An agent's endpoint and probe result, on its lease.
    agent = LeasedPublisher(owner, TTL)
    await agent.start()
    ep = Endpoint(
        container_id="c-a",
        namespace="shop",
        name="a",
        cluster=CLUSTER,
        node="n1",
        ip="10.1.1.5",
        identity=65792,
        labels={"app": "web"},
        state=EndpointState.READY,
    )
    await agent.publish(keys.endpoint(CLUSTER, "n1", "shop", "a"), codec.encode(ep))
    health = BackendHealth("n1", [ProbeResult("shop/web", ep.ip, 8080, True, 0.0)])
    await agent.publish(keys.health(CLUSTER, "n1"), codec.encode(health))
    await store.apply(reader, [web("web")], CIDR)

    cfg = OperatorConfig(
        cluster=CLUSTER,
        cluster_id=1,
        pod_pool="10.1.0.0/16",
        service_cidr=CIDR,
        etcd=srv.client_config(RW_USER),
        identity="glia-test-operator",
        lease_ttl=TTL,
    )
    operator = Operator(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop))
    record_key = keys.service(CLUSTER, "shop", "web")

    async def ready_backends(name: str = "web") -> list[str]:
        kv = await reader.get(keys.service(CLUSTER, "shop", name))
        if kv is None:
            return []
        return [b.ip for b in codec.decode(ClusterService, kv.value).backends if b.ready]

    async def resolved() -> bool:
        return await ready_backends() == [ep.ip]

    written: list[list[str]] = []

    async def follow(start: int) -> None:
        async for ev in reader.watch(record_key, start_revision=start):
            if ev.kind is EventKind.DELETE:
                written.append(["(deleted)"])
            else:
                rec = codec.decode(ClusterService, ev.value)
                written.append([b.ip for b in rec.backends if b.ready])

    watcher: asyncio.Task[None] | None = None
    try:
        await until(resolved, "the Service's backend", 10)
        assert operator.terms == 1
        watcher = asyncio.create_task(follow(await reader.revision() + 1))
        await asyncio.sleep(0.2)

        with paused(srv):
            await asyncio.sleep(PAUSE)
            assert not operator.leading  # no renewal within the TTL: stepped down

        await until(lambda: operator.terms == 2 and operator.leading, "a second term", 15)
        assert not task.done()  # campaigned again instead of exiting
        leader = await reader.get(keys.operator_leader(CLUSTER))
        assert leader is not None and leader.value == b"glia-test-operator"
        await until(lambda: agent.regrants == 1, "the agent to re-publish", 10)
        await asyncio.sleep(GRACE + 0.5)  # past every grace and hold period
        assert await resolved()
        assert all(ips == [ep.ip] for ips in written), written

        unprobed = HealthCheck(type=ProbeType.NONE)  # no agent probes it here
        await store.apply(reader, [web("after", health=unprobed)], CIDR)

        async def after_resolved() -> bool:
            return await ready_backends("after") == [ep.ip]

        await until(after_resolved, "a Service applied afterwards to get its backend", 10)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        stop.set()
        await asyncio.wait_for(task, 15)
        await agent.stop(revoke=True)
