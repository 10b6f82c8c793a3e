"""Least privilege in a real etcd: each writer's user may write only its own records.

The users and roles are glia.kvstore.rbac's, created by the lab's bootstrap
(etcdctl as root) on the session etcd; the cluster name is this module's own
so no other test's keys are touched.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from glia.kvstore import keys, rbac
from glia.kvstore.client import KVClient
from glia.kvstore.errors import PermissionDenied
from glia.lab.etcd import EtcdServer

NODES = ["n1", "n2"]


@pytest.fixture
async def cluster(etcd: EtcdServer) -> AsyncIterator[str]:
    name = f"rbac{uuid.uuid4().hex[:8]}"
    etcd.bootstrap_auth(rbac.cluster_users(name, NODES))
    yield name
    async with await KVClient.connect(etcd.client_config(rbac.RW_USER)) as admin:
        for prefix in (keys.STATE, keys.CONFIG):
            for kv in (await admin.list(prefix))[0]:
                if f"/{name}/" in kv.key or kv.key.endswith(f"/{name}"):
                    await admin.delete(kv.key)


async def _writes(client: KVClient, key: str) -> bool:
    try:
        await client.put(key, b"x")
    except PermissionDenied:
        return False
    await client.delete(key)
    return True


def _own_keys(c: str, node: str) -> list[str]:
    return [
        keys.node(c, node),
        keys.ipcache(c, node, "10.1.0.5"),
        keys.endpoint(c, node, "default", "web"),
        keys.health(c, node),
        keys.identity_ref(c, 65792, node),
        keys.identity_id(c, 65792),  # the shared allocator's keys
        keys.identity_labels(c, "abc"),
    ]


async def test_an_agent_writes_only_its_own_node_records(etcd: EtcdServer, cluster: str) -> None:
    c = cluster
    async with await KVClient.connect(etcd.client_config(rbac.agent_user("n1"))) as n1:
        for key in _own_keys(c, "n1"):
            assert await _writes(n1, key), key
        foreign = [
            keys.node(c, "n2"),
            keys.ipcache(c, "n2", "10.1.1.5"),
            keys.endpoint(c, "n2", "default", "web"),
            keys.health(c, "n2"),
            keys.identity_ref(c, 65792, "n2"),
            keys.service(c, "default", "web"),
            keys.podcidr_node(c, "n1"),
            keys.operator_leader(c),
            keys.cluster_info(c),
            keys.HEARTBEAT,
            keys.config("services", "default", "web"),
            keys.node(c, "n10"),  # a prefix of n1's name is not n1's
        ]
        for key in foreign:
            assert not await _writes(n1, key), f"n1 may write {key}"
        # It reads the whole cluster state (validation bounds what it accepts)
        # and the declared policies it enforces, nothing else of the config.
        await n1.check_read(keys.STATE)
        await n1.check_read(keys.configs("policies"))
        assert not await _writes(n1, keys.config("policies", "default", "web"))
        with pytest.raises(PermissionDenied):
            await n1.check_read(keys.configs("services"))


async def test_operator_and_config_users(etcd: EtcdServer, cluster: str) -> None:
    c = cluster
    async with await KVClient.connect(etcd.client_config(rbac.OPERATOR_USER)) as op:
        for key in (
            keys.service(c, "default", "web"),
            keys.podcidr_node(c, "n1"),
            keys.podcidr_block(c, "10.1.0.0/24"),
            keys.operator_leader(c),
            keys.cluster_info(c),
            keys.identity_id(c, 65792),
        ):
            assert await _writes(op, key), key
        for key in (
            keys.node(c, "n1"),
            keys.ipcache(c, "n1", "10.1.0.5"),
            keys.config("s", "a", "b"),
        ):
            assert not await _writes(op, key), f"the operator may write {key}"
    async with await KVClient.connect(etcd.client_config(rbac.CONFIG_USER)) as cfg:
        assert await _writes(cfg, keys.config("services", "default", "web"))
        assert await _writes(cfg, keys.cluster_ip("10.96.0.10"))
        assert await _writes(cfg, keys.config("policies", "default", "web"))
        for key in (keys.service(c, "default", "web"), keys.node(c, "n1"), keys.cluster_info(c)):
            assert not await _writes(cfg, key), f"the CLI path may write {key}"
    async with await KVClient.connect(etcd.client_config(rbac.RO_USER)) as ro:
        for key in [*_own_keys(c, "n1"), keys.cluster_info(c), keys.HEARTBEAT]:
            assert not await _writes(ro, key), f"glia-remote may write {key}"


async def test_agent_connect_checks_its_own_keys(etcd: EtcdServer, cluster: str) -> None:
    cfg = etcd.client_config(rbac.agent_user("n1"))
    with pytest.raises(PermissionDenied, match="may not write"):
        await KVClient.connect(cfg, check_write=[keys.node(cluster, "n2")])
