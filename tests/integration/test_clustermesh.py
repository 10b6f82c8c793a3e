"""ClusterMesh against a real remote etcd: connect, validate, import, withdraw.

The remote cluster "c2" is a real etcd (TLS, client certificates, RBAC) read
with its read-only user from a cluster file in a temporary directory, as an
agent of "c1" would. The agent's tables are the real ones (IPCacheSync,
IdentityCache); the BPF map under the ipcache is a dict (the map itself is
tested in test_datapath_*), and the Service merge is a recorder (the merge is
tested in test_service_merge).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from waiting import until

from glia.agent.identities import IdentityCache
from glia.agent.ipcache import IPCacheSync
from glia.clustermesh.mesh import ClusterMesh
from glia.clustermesh.remote import MeshSinks
from glia.datapath.maps import IPCacheInfo
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.lab.etcd import RO_USER, RW_USER, EtcdServer
from glia.model import codec
from glia.model.cluster import ClusterInfo
from glia.model.identity import Identity, ReservedIdentity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node, PodCIDRAllocation
from glia.model.service import ClusterService, ServicePort
from glia.service.merge import RemoteRecord
from glia.validate.bounds import ClusterBounds

T = TypeVar("T")
LOCAL = ClusterInfo("c1", 1, ["10.1.0.0/16"], "100.64.0.0/15")
C2 = ClusterInfo("c2", 2, ["10.2.0.0/16"], "100.66.0.0/15")
C2_ID = 2 << 16 | 300


class MapDict:
    """Stands in for the pinned ipcache map: prefix -> IPCacheInfo."""

    def __init__(self) -> None:
        self.entries: dict[str, IPCacheInfo] = {}

    def upsert_many(self, infos: dict[str, IPCacheInfo]) -> None:
        self.entries.update({p.removesuffix("/32"): i for p, i in infos.items()})

    def delete(self, prefix: str) -> bool:
        return self.entries.pop(prefix.removesuffix("/32"), None) is not None

    def items(self) -> list[tuple[str, IPCacheInfo]]:
        return [(f"{p}/32", i) for p, i in self.entries.items()]


class FakeDatapath:
    def __init__(self) -> None:
        self.ipcache = MapDict()


class ServiceRecorder:
    def __init__(self) -> None:
        self.remote: dict[tuple[str, str, str], RemoteRecord] = {}

    async def set_remote(
        self, cluster: str, namespace: str, name: str, record: RemoteRecord | None
    ) -> None:
        if record is None:
            self.remote.pop((cluster, namespace, name), None)
        else:
            self.remote[(cluster, namespace, name)] = record


async def _run_dp(fn: Callable[[], T]) -> T:
    return fn()


async def _agent_tables() -> tuple[FakeDatapath, MeshSinks]:
    """c1/n1's tables, its own cluster synced (empty), ready to take remote clusters."""
    dp = FakeDatapath()
    bounds = ClusterBounds.from_info(LOCAL)
    ipcache = IPCacheSync(dp, _run_dp, bounds, "n1", "198.18.1.1")  # type: ignore[arg-type]
    for part in ("nodes", "podcidrs", "ip"):
        await ipcache.handler(part).on_synced()
    return dp, MeshSinks(ipcache, IdentityCache(bounds), ServiceRecorder())  # type: ignore[arg-type]


async def _fill_c2(kv: KVClient) -> None:
    puts = {
        keys.cluster_info("c2"): codec.encode(C2),
        keys.node("c2", "n1"): codec.encode(Node("n1", "c2", 2, "198.18.2.1")),
        keys.podcidr_node("c2", "n1"): codec.encode(PodCIDRAllocation("n1", "10.2.1.0/24")),
        keys.ipcache("c2", "n1", "10.2.1.5"): codec.encode(
            IPCacheEntry("10.2.1.5", C2_ID, "198.18.2.1", 2, "n1")
        ),
        # Forged: one of OUR addresses, and an identity of our range.
        keys.ipcache("c2", "n1", "10.1.0.9"): codec.encode(
            IPCacheEntry("10.1.0.9", C2_ID, "198.18.2.1", 2, "n1")
        ),
        keys.ipcache("c2", "n1", "10.2.1.6"): codec.encode(
            IPCacheEntry("10.2.1.6", 1 << 16 | 300, "198.18.2.1", 2, "n1")
        ),
        keys.identity_id("c2", C2_ID): codec.encode(Identity(C2_ID, {"app": "web"})),
        keys.service("c2", "default", "web"): codec.encode(
            ClusterService(
                "default", "web", "c2", 2, "100.66.0.10", [ServicePort(80, 80)], [], global_=True
            )
        ),
        keys.HEARTBEAT: json.dumps({"cluster": "c2", "time": 0}).encode(),
    }
    for key, value in puts.items():
        await kv.put(key, value)


def _cluster_file(directory: Path, srv: EtcdServer, cluster_id: int) -> Path:
    cfg = srv.client_config(RO_USER)
    text = "\n".join(
        [
            "endpoints:",
            *(f"  - {u}" for u in cfg.endpoints),
            f"ca_file: {cfg.ca_file}",
            f"cert_file: {cfg.cert_file}",
            f"key_file: {cfg.key_file}",
            f"cluster_id: {cluster_id}",
        ]
    )
    path = directory / "c2.yaml"
    path.write_text(text + "\n")
    return path


async def test_a_remote_cluster_is_imported_validated_and_withdrawn(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    srv = etcd_factory()
    dp, sinks = await _agent_tables()
    identities, services = sinks.identities, sinks.services
    assert isinstance(services, ServiceRecorder)
    async with await KVClient.connect(srv.client_config(RW_USER)) as kv:
        await _fill_c2(kv)
        path = _cluster_file(tmp_path, srv, cluster_id=2)
        mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
        await mesh.start()
        try:

            def c2() -> dict[str, Any]:
                (st,) = mesh.status()["clusters"]
                return dict(st)

            await until(lambda: c2()["state"] == "synced", "c2 synced", 20)
            m = dp.ipcache.entries
            assert m["10.2.1.5"] == IPCacheInfo(C2_ID, "198.18.2.1", 2)
            assert m["198.18.2.1"] == IPCacheInfo(int(ReservedIdentity.REMOTE_NODE), None, 2)
            assert "10.1.0.9" not in m and "10.2.1.6" not in m
            st = c2()
            assert (st["nodes"], st["endpoints"], st["identities"], st["services"]) == (1, 1, 1, 1)
            assert st["rejected"] == 2 and st["id"] == 2 and st["pod_pools"] == ["10.2.0.0/16"]
            assert identities.get(C2_ID) == Identity(C2_ID, {"app": "web"})
            assert ("c2", "default", "web") in services.remote

            # Changes on the remote side follow; the read-only user cannot write there.
            await kv.put(
                keys.ipcache("c2", "n1", "10.2.1.7"),
                codec.encode(IPCacheEntry("10.2.1.7", C2_ID, "198.18.2.1", 2, "n1")),
            )
            await until(lambda: "10.2.1.7" in dp.ipcache.entries, "a new remote entry", 10)

            # Removing the file withdraws everything at once.
            path.unlink()
            await until(lambda: not mesh.remotes, "c2 disconnected", 10)
            assert set(dp.ipcache.entries) == {"198.18.1.1"}
            assert services.remote == {} and identities.get(C2_ID) is None
        finally:
            await mesh.stop()


async def test_a_cluster_claiming_our_id_is_refused(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    srv = etcd_factory()
    dp, sinks = await _agent_tables()
    async with await KVClient.connect(srv.client_config(RW_USER)) as kv:
        await _fill_c2(kv)
        # c2's record now says it is cluster 1 with our pool: refused, nothing imported.
        await kv.put(keys.cluster_info("c2"), codec.encode(ClusterInfo("c2", 1, ["10.1.0.0/16"])))
        _cluster_file(tmp_path, srv, cluster_id=1)
        mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
        await mesh.start()
        try:
            await until(
                lambda: mesh.status()["clusters"][0]["state"] == "refused", "c2 refused", 20
            )
            (st,) = mesh.status()["clusters"]
            assert "refused: cluster id 1" in (st["last_error"] or "")
            await asyncio.sleep(0.5)
            assert set(dp.ipcache.entries) == {"198.18.1.1"}
        finally:
            await mesh.stop()
