"""The cluster record in a real etcd: the operator publishes and keeps it; remote clusters
read it with the read-only user and can write nothing; agents cannot write it either.

Runs the operator as ``glia-operator`` (the RBAC role of glia.kvstore.rbac,
created as the lab does), so the test also shows the role grants what the
operator needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from waiting import until

from glia.kvstore import keys, rbac
from glia.kvstore.client import KVClient
from glia.kvstore.errors import PermissionDenied
from glia.lab.etcd import EtcdServer
from glia.model import codec
from glia.model.cluster import ClusterInfo
from glia.operator.config import OperatorConfig
from glia.operator.daemon import Operator
from glia.validate.cluster import check_cluster_info

CLUSTER = "c1"
KEY = keys.cluster_info(CLUSTER)
NODES = ["n1"]


@pytest.fixture
def srv(etcd_factory: Callable[[], EtcdServer]) -> EtcdServer:
    s = etcd_factory()
    s.bootstrap_auth(rbac.cluster_users(CLUSTER, NODES))
    return s


@pytest.fixture
async def admin(srv: EtcdServer) -> AsyncIterator[KVClient]:
    async with await KVClient.connect(srv.client_config(rbac.RW_USER)) as c:
        yield c


def operator_config(srv: EtcdServer, **changes: object) -> OperatorConfig:
    cfg = OperatorConfig(
        cluster=CLUSTER,
        cluster_id=1,
        pod_pool="10.1.0.0/16",
        service_cidr="100.64.0.0/15",
        etcd=srv.client_config(rbac.OPERATOR_USER),
        identity="glia-test-operator",
        heartbeat_interval=0.2,
    )
    return replace(cfg, **changes)  # type: ignore[arg-type]


class Running:
    """An operator run in this event loop until :meth:`stop`."""

    def __init__(self, cfg: OperatorConfig) -> None:
        self.op = Operator(cfg)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.op.run(self._stop))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 10)


async def record(c: KVClient) -> bytes | None:
    kv = await c.get(KEY)
    return None if kv is None else kv.value


async def refused_write(c: KVClient) -> bool:
    for write in (c.put(KEY, b"{}"), c.delete(KEY)):
        try:
            await write
        except PermissionDenied:
            continue
        return False
    return True


async def test_published_readable_by_remotes_and_writable_by_the_operator_only(
    srv: EtcdServer, admin: KVClient
) -> None:
    expected = ClusterInfo("c1", 1, ["10.1.0.0/16"], "100.64.0.0/15")
    op = Running(operator_config(srv))
    try:
        async with await KVClient.connect(srv.client_config(rbac.RO_USER)) as remote:

            async def published() -> bool:
                return await record(remote) is not None

            await until(published, "the cluster record", timeout=10)
            kv = await remote.get(KEY)
            assert kv is not None and kv.lease == 0  # not on the operator's lease
            # What a remote cluster reads passes the check it runs.
            assert check_cluster_info(KEY, kv.value, "c1", 1) == expected
            assert await refused_write(remote), "glia-remote may write the cluster record"
        for user in (rbac.agent_user("n1"), rbac.CONFIG_USER):
            async with await KVClient.connect(srv.client_config(user)) as other:
                assert await refused_write(other), f"{user} may write the cluster record"
                assert await record(other) == kv.value  # but reads it

        # A correct record is left alone: no new revision every heartbeat.
        await asyncio.sleep(1.0)
        again = await admin.get(KEY)
        assert again is not None and again.mod_revision == kv.mod_revision
        assert op.op.record_puts == 1

        # Changed or deleted behind the operator's back: put right within an interval.
        forged = codec.encode(replace(expected, pod_pools=["10.0.0.0/8"]))
        await admin.put(KEY, forged)
        await until(lambda: _equals(admin, kv.value), "the forged record replaced")
        await admin.delete(KEY)
        await until(lambda: _equals(admin, kv.value), "the deleted record back")
        await until(lambda: op.op.record_puts == 3, "three puts in all")
    finally:
        await op.stop()
    # Stopping the operator (its lease revoked) keeps the record: it describes the cluster.
    assert await record(admin) == kv.value


async def _equals(c: KVClient, value: bytes) -> bool:
    return await record(c) == value


async def test_each_term_publishes_the_configured_record(srv: EtcdServer, admin: KVClient) -> None:
    await admin.put(KEY, b"left over from an old configuration")
    op = Running(operator_config(srv))
    try:
        want = codec.encode(ClusterInfo("c1", 1, ["10.1.0.0/16"], "100.64.0.0/15"))
        await until(lambda: _equals(admin, want), "the first term's record", timeout=10)
    finally:
        await op.stop()
    # The next leader has another service CIDR configured: its term starts with it.
    op = Running(operator_config(srv, service_cidr="100.80.0.0/16", identity="glia-test-op2"))
    try:
        want = codec.encode(ClusterInfo("c1", 1, ["10.1.0.0/16"], "100.80.0.0/16"))
        await until(lambda: _equals(admin, want), "the second term's record", timeout=10)
        assert op.op.terms == 1
    finally:
        await op.stop()


async def test_an_operator_without_the_grant_is_refused_at_connect(srv: EtcdServer) -> None:
    # The operator role of a glia without cluster records: the operator says
    # so when it connects, naming the key, instead of failing at its first put.
    user = "glia-test-old-operator"
    grants = tuple(g for g in rbac.operator_role(CLUSTER).grants if g.key != KEY)
    srv.bootstrap_auth({user: rbac.RoleSpec(user, grants)})
    cfg = operator_config(srv, etcd=srv.client_config(user))
    with pytest.raises(PermissionDenied, match=f"may not write '{KEY}'"):
        await Operator(cfg).run(asyncio.Event())
