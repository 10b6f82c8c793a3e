"""A remote cluster's Services against a real remote etcd: checked by its node CIDRs in time.

A remote ClusterService's backends are checked against the node CIDRs of that
cluster (the nodes and pod CIDR allocations imported next to it). The five
import reflectors list concurrently, so the Services can arrive first: they
must wait for those lists, not be checked against a half-empty table (which
dropped every backend of a node not listed yet, until the next freshness tick:
up to a second without the remote backends after each agent start, seen as
refused connections in tests/e2e/test_mesh_services.py's lab). And a node
whose allocation arrives later gets its backends at once, not at the next
tick: the tick is set to an hour here, so only the event path can pass.
The agent waits (boundedly) for these first lists before its own
(:meth:`ClusterMesh.wait_synced`). Shares the set-up helpers of
test_clustermesh.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_clustermesh import C2, LOCAL, _agent_tables, _cluster_file
from waiting import until

from glia.clustermesh import remote
from glia.clustermesh.mesh import ClusterMesh
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.lab.etcd import RW_USER, EtcdServer
from glia.model import codec
from glia.model.node import Node, PodCIDRAllocation
from glia.model.service import Backend, ClusterService, Protocol, ServicePort
from glia.service.merge import RemoteRecord

NODES = 40  # c2's nodes, each with a backend of the Service


class HistoryRecorder:
    """Every record handed to the Service merge, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, RemoteRecord | None]] = []

    async def set_remote(
        self, cluster: str, namespace: str, name: str, record: RemoteRecord | None
    ) -> None:
        self.calls.append((cluster, namespace, name, record))

    def backends(self) -> list[set[str]]:
        """The backend IPs of each record handed over (None: an empty set)."""
        return [{b.ip for b in r.service.backends} if r else set() for *_, r in self.calls]


@pytest.fixture
def no_tick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The freshness tick (which also re-checks Services) never comes during a test."""
    monkeypatch.setattr(remote, "TICK", 3600.0)
    yield


def _backend(i: int) -> Backend:
    return Backend(
        ip=f"10.2.{i}.5",
        port=80,
        protocol=Protocol.TCP,
        port_name="http",
        frontend_port=80,
        node=f"n{i}",
        cluster="c2",
        endpoint=f"default/web{i}",
        ready=True,
    )


async def _fill(kv: KVClient, *, allocated: int) -> None:
    """c2 with NODES nodes (the first ``allocated`` with a pod CIDR) and a global
    Service with a backend on each."""
    puts = {
        keys.cluster_info("c2"): codec.encode(C2),
        keys.HEARTBEAT: json.dumps({"cluster": "c2", "time": 0}).encode(),
        keys.service("c2", "default", "web"): codec.encode(
            ClusterService(
                "default",
                "web",
                "c2",
                2,
                "100.66.0.10",
                [ServicePort(80, 80, name="http")],
                [_backend(i) for i in range(1, NODES + 1)],
                global_=True,
            )
        ),
    }
    for i in range(1, NODES + 1):
        puts[keys.node("c2", f"n{i}")] = codec.encode(Node(f"n{i}", "c2", 2, f"198.18.2.{i}"))
        if i <= allocated:
            puts[keys.podcidr_node("c2", f"n{i}")] = codec.encode(
                PodCIDRAllocation(f"n{i}", f"10.2.{i}.0/24")
            )
    for key, value in puts.items():
        await kv.put(key, value)


async def test_services_wait_for_the_node_cidrs_and_follow_them_at_once(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path, no_tick: None
) -> None:
    srv = etcd_factory()
    _, sinks = await _agent_tables()
    recorder = HistoryRecorder()
    sinks = dataclasses.replace(sinks, services=recorder)  # type: ignore[arg-type]
    every = {_backend(i).ip for i in range(1, NODES + 1)}
    async with await KVClient.connect(srv.client_config(RW_USER)) as kv:
        await _fill(kv, allocated=NODES - 1)  # the last node has no pod CIDR yet
        _cluster_file(tmp_path, srv, cluster_id=2)
        mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
        await mesh.start()
        try:
            await until(lambda: bool(recorder.calls), "c2's Service handed to the merge", 20)
            (rc,) = mesh.remotes.values()
            await until(lambda: rc.synced, "c2's first lists", 20)
            # Checked once, against every node listed: only the unallocated node's
            # backend is missing, from the first record on.
            assert recorder.backends() == [every - {_backend(NODES).ip}]
            assert recorder.calls[0][:3] == ("c2", "default", "web")

            # Its allocation arrives: the Service is checked again at once.
            await kv.put(
                keys.podcidr_node("c2", f"n{NODES}"),
                codec.encode(PodCIDRAllocation(f"n{NODES}", f"10.2.{NODES}.0/24")),
            )
            await until(lambda: recorder.backends()[-1] == every, "the last node's backend", 10)
            assert rc.services.rejects.count == 0
        finally:
            await mesh.stop()


async def test_the_first_lists_are_awaited_but_not_a_cluster_that_is_down(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    # What the agent waits for before its own first lists (its first map writes then
    # hold the remote clusters' state, and a restart does not take it out meanwhile).
    srv = etcd_factory()
    _, sinks = await _agent_tables()
    async with await KVClient.connect(srv.client_config(RW_USER)) as kv:
        await _fill(kv, allocated=NODES)
    _cluster_file(tmp_path, srv, cluster_id=2)
    mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
    await mesh.start()
    try:
        assert await mesh.wait_synced(20.0) == []
        (rc,) = mesh.remotes.values()
        assert rc.synced and rc.status()["services"] == 1
    finally:
        await mesh.stop()

    srv.stop()
    _, sinks = await _agent_tables()
    mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
    await mesh.start()
    try:
        started = asyncio.get_running_loop().time()
        assert await mesh.wait_synced(1.0) == ["c2"]
        assert asyncio.get_running_loop().time() - started < 5.0  # bounded, not hung
    finally:
        await mesh.stop()
