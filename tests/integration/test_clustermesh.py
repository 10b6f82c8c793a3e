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
from glia.clustermesh import remote
from glia.clustermesh.mesh import ClusterMesh
from glia.clustermesh.sinks import MeshSinks
from glia.datapath.nodemaps import IPCacheInfo
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


class LoggedMap(MapDict):
    """Also remembers every prefix deleted (a withdrawal gap shows up here)."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def delete(self, prefix: str) -> bool:
        self.deleted.append(prefix.removesuffix("/32"))
        return super().delete(prefix)


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


async def _agent_tables(ipcache_map: MapDict | None = None) -> tuple[FakeDatapath, MeshSinks]:
    """c1/n1's tables, its own cluster synced (empty), ready to take remote clusters."""
    dp = FakeDatapath()
    if ipcache_map is not None:
        dp.ipcache = ipcache_map
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
        # Forged: a node claiming our node's address, one of OUR pod addresses,
        # and an identity of our range.
        keys.node("c2", "n9"): codec.encode(Node("n9", "c2", 2, "198.18.1.1")),
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


def _cluster_file(directory: Path, srv: EtcdServer, cluster_id: int | None, *extra: str) -> Path:
    cfg = srv.client_config(RO_USER)
    text = "\n".join(
        [
            "endpoints:",
            *(f"  - {u}" for u in cfg.endpoints),
            f"ca_file: {cfg.ca_file}",
            f"cert_file: {cfg.cert_file}",
            f"key_file: {cfg.key_file}",
            *([f"cluster_id: {cluster_id}"] if cluster_id is not None else []),
            *extra,
        ]
    )
    path = directory / "c2.yaml"
    tmp = directory / ".c2.yaml.tmp"  # renamed over it: the watcher never reads half a file
    tmp.write_text(text + "\n")
    tmp.replace(path)
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
            assert m["198.18.1.1"] == IPCacheInfo(int(ReservedIdentity.HOST), None, 1)
            st = c2()
            assert (st["nodes"], st["endpoints"], st["identities"], st["services"]) == (1, 1, 1, 1)
            assert st["rejected"] == 3 and st["id"] == 2 and st["pod_pools"] == ["10.2.0.0/16"]
            assert st["rejected_keys"][keys.node("c2", "n9")] == (
                "node_ip 198.18.1.1 is the address of our node c1/n1"
            )
            assert (
                "outside the pod pool" in st["rejected_keys"][keys.ipcache("c2", "n1", "10.1.0.9")]
            )
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


def _c2(mesh: ClusterMesh) -> dict[str, Any]:
    (st,) = mesh.status()["clusters"]
    return dict(st)


async def test_a_changed_file_never_opens_a_gap(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    old_srv, new_srv = etcd_factory(), etcd_factory()
    m = LoggedMap()
    _, sinks = await _agent_tables(m)
    async with (
        await KVClient.connect(old_srv.client_config(RW_USER)) as old_kv,
        await KVClient.connect(new_srv.client_config(RW_USER)) as new_kv,
    ):
        await _fill_c2(old_kv)
        only_old = keys.ipcache("c2", "n1", "10.2.1.8")
        await old_kv.put(
            only_old, codec.encode(IPCacheEntry("10.2.1.8", C2_ID, "198.18.2.1", 2, "n1"))
        )
        # The same cluster behind other endpoints (a moved or restored etcd):
        # all of it but 10.2.1.8, and one entry more.
        await _fill_c2(new_kv)
        await new_kv.put(
            keys.ipcache("c2", "n1", "10.2.1.7"),
            codec.encode(IPCacheEntry("10.2.1.7", C2_ID, "198.18.2.1", 2, "n1")),
        )
        _cluster_file(tmp_path, old_srv, 2)
        mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
        await mesh.start()
        try:
            await until(lambda: _c2(mesh)["state"] == "synced", "c2 synced", 20)
            rc = mesh.remotes["c2"]
            assert {"10.2.1.5", "10.2.1.8", "198.18.2.1"} <= set(m.entries)

            # Only stale_after: the same connection takes it, nothing is read again.
            _cluster_file(tmp_path, old_srv, 2, "stale_after: 42")
            await until(lambda: rc.cfg.stale_after == 42, "the new stale_after", 10)
            assert mesh.remotes["c2"] is rc and rc.connections == 1
            assert _c2(mesh)["state"] == "synced" and m.deleted == []

            # Other endpoints: a new connection, whose lists replace the old state
            # key by key; only what it does not have leaves the map.
            _cluster_file(tmp_path, new_srv, 2, "stale_after: 42")
            await until(lambda: "10.2.1.7" in m.entries, "the new connection's entry", 20)
            await until(lambda: _c2(mesh)["state"] == "synced", "c2 synced again", 20)
            assert rc.connections == 2 and mesh.remotes["c2"] is rc
            assert m.deleted == ["10.2.1.8"], m.deleted
            assert {"10.2.1.5", "10.2.1.7", "198.18.2.1"} <= set(m.entries)
            st = _c2(mesh)
            assert (st["nodes"], st["endpoints"], st["identities"], st["services"]) == (1, 2, 1, 1)
            assert st["rejected"] == 3  # the same forged records, not counted twice

            # An expected id the cluster does not have: refused, everything withdrawn.
            _cluster_file(tmp_path, new_srv, 3)
            await until(lambda: _c2(mesh)["state"] == "refused", "c2 refused", 20)
            st = _c2(mesh)
            assert "id 2 is not the configured cluster_id 3" in (st["last_error"] or ""), st
            assert set(m.entries) == {"198.18.1.1"}
            assert sinks.services.remote == {}  # type: ignore[attr-defined]
            assert sinks.identities.get(C2_ID) is None
            assert (st["nodes"], st["endpoints"], st["rejected"]) == (0, 0, 0)

            # Fixed: imported again.
            _cluster_file(tmp_path, new_srv, 2)
            await until(lambda: _c2(mesh)["state"] == "synced", "c2 synced after the fix", 20)
            assert {"10.2.1.5", "10.2.1.7"} <= set(m.entries)
            assert _c2(mesh)["last_error"] is None
        finally:
            await mesh.stop()


async def test_a_record_changed_to_claim_our_id_withdraws_the_cluster(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    srv = etcd_factory()
    dp, sinks = await _agent_tables()
    async with await KVClient.connect(srv.client_config(RW_USER)) as kv:
        await _fill_c2(kv)
        _cluster_file(tmp_path, srv, None)  # no expected id: the mesh's check decides
        mesh = ClusterMesh(str(tmp_path), LOCAL, sinks, poll_interval=0.2)
        await mesh.start()
        try:
            await until(lambda: _c2(mesh)["state"] == "synced", "c2 synced", 20)
            assert "10.2.1.5" in dp.ipcache.entries
            # While connected, c2's record starts claiming our id.
            forged = ClusterInfo("c2", 1, ["10.2.0.0/16"], "100.66.0.0/15")
            await kv.put(keys.cluster_info("c2"), codec.encode(forged))
            await until(lambda: _c2(mesh)["state"] == "refused", "c2 refused", 20)
            st = _c2(mesh)
            assert "refused: cluster id 1 is also this cluster's" in (st["last_error"] or ""), st
            assert set(dp.ipcache.entries) == {"198.18.1.1"}
            assert sinks.identities.get(C2_ID) is None
            # Its record fixed: admitted and imported again, at once (the record is
            # read every second; not only at the 10 s recheck).
            await kv.put(keys.cluster_info("c2"), codec.encode(C2))
            fixed = asyncio.get_running_loop().time()
            await until(lambda: _c2(mesh)["state"] == "synced", "c2 synced again", 20)
            assert asyncio.get_running_loop().time() - fixed < remote.RECHECK_REFUSED
            assert "10.2.1.5" in dp.ipcache.entries
            assert _c2(mesh)["last_error"] is None  # what was wrong is over
        finally:
            await mesh.stop()
