"""The agent's policy subsystem against a real etcd and the real, loaded policy maps.

Policies are written by the CLI path's user and read with a node's own user
(its role's grant on the policies prefix); identities arrive through a
reflector into the IdentityCache; PolicySync programs the pinned maps of a
loaded datapath on a worker thread, as the agent does, and hands CIDR
identities to a real IPCacheSync. Checked: the first sync, a change reaching
the map within a second of its write, a bad record refused alone, default allow
again after the delete, CIDR prefixes in the ipcache, and a restarted
PolicySync that finds the maps already right (nothing wiped, numbers kept).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import netns_util as nu
import pytest
from test_services_store import own_etcd

from glia.agent.identities import IdentityCache
from glia.agent.ipcache import IPCacheSync
from glia.agent.policy import PolicySync
from glia.datapath.loader import Datapath, unpin
from glia.kvstore import keys, rbac
from glia.kvstore.client import KVClient
from glia.kvstore.reflector import Reflector
from glia.lab.etcd import EtcdServer
from glia.model import codec
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, Identity
from glia.policy import store as policy_store
from glia.policy.cidr import is_cidr_identity
from glia.policy.manifest import parse_policy
from glia.policy.model import Direction, Policy
from glia.validate.bounds import ClusterBounds

T = TypeVar("T")
CLUSTER, NODE = "c1", "n1"
BOUNDS = ClusterBounds.of(CLUSTER, 1, "10.1.0.0/16", "100.64.0.0/15")
WEB, CLIENT, OTHER = 1 << 16 | 300, 1 << 16 | 301, 1 << 16 | 302
CHANGE_BOUND = 1.0  # s: the "a policy change on every node within 1 s"


def labels(app: str) -> dict[str, str]:
    return {"app": app, NAMESPACE_LABEL: "default", CLUSTER_LABEL: CLUSTER}


def cnp(name: str, spec: dict[str, Any]) -> Policy:
    doc = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy"}
    return parse_policy({**doc, "metadata": {"name": name}, "spec": spec}, cluster=CLUSTER)


def web_from(app: str, port: str) -> dict[str, Any]:
    return {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": app}}],
                "toPorts": [{"ports": [{"port": port, "protocol": "TCP"}]}],
            }
        ],
    }


CIDR_SPEC = {
    "endpointSelector": {"matchLabels": {"app": "client"}},
    "egress": [{"toCIDR": ["192.0.2.0/24"]}],
}


@pytest.fixture(scope="module")
def pol_etcd() -> Iterator[EtcdServer]:
    with own_etcd() as srv:
        srv.bootstrap_auth(rbac.cluster_users(CLUSTER, [NODE]))
        yield srv


@pytest.fixture(scope="module")
def datapath() -> Iterator[Datapath]:
    nu.require_bpffs()
    nu.cleanup_stale()
    dp = Datapath(nu.pin_dir("polsync"), nu.bpf_objects())
    try:
        dp.load()
        yield dp
    finally:
        dp.close()
        unpin(dp.pin_dir)


@dataclass
class Node:
    """One agent's policy parts, over real etcd and maps."""

    dp: Datapath
    kv: KVClient
    executor: ThreadPoolExecutor
    endpoints: list[tuple[int, dict[str, str]]]
    reflectors: list[Reflector] = field(default_factory=list)
    sync: PolicySync | None = None

    async def run_dp(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def start(self) -> PolicySync:
        ipcache = IPCacheSync(self.dp, self.run_dp, BOUNDS, NODE, "198.18.1.1")
        for part in ("nodes", "podcidrs", "ip"):
            await ipcache.handler(part).on_synced()
        cache = IdentityCache(BOUNDS)
        sync = PolicySync(CLUSTER, self.dp.policy, self.run_dp, cidr_sink=ipcache)
        cache.listen(sync.identity_changed)
        sync.set_endpoint_source(lambda: self.endpoints)
        self.sync = sync
        for prefix, handler in ((keys.identity_ids(CLUSTER), cache.handler()),):
            r = Reflector(self.kv, prefix, handler)
            await r.start()
            self.reflectors.append(r)
        await sync.adopt_cidr()
        r = Reflector(self.kv, keys.configs(policy_store.KIND), sync.policy_handler())
        await r.start()
        self.reflectors.append(r)
        await sync.initial_sync()
        return sync

    async def stop(self) -> None:
        for r in self.reflectors:
            await r.stop()
        self.reflectors.clear()
        if self.sync is not None:
            await self.sync.stop()


@pytest.fixture
async def admin(pol_etcd: EtcdServer) -> AsyncIterator[KVClient]:
    c = await KVClient.connect(pol_etcd.client_config(rbac.RW_USER))
    await c.delete_prefix(keys.ROOT)
    yield c
    await c.close()


@pytest.fixture
async def node(pol_etcd: EtcdServer, datapath: Datapath, admin: KVClient) -> AsyncIterator[Node]:
    # The node's own user: its role must let it read (and watch) the policies.
    kv = await KVClient.connect(
        pol_etcd.client_config(rbac.agent_user(NODE)),
        check_read=[keys.STATE, keys.configs(policy_store.KIND)],
    )
    with ThreadPoolExecutor(max_workers=1) as ex:
        n = Node(datapath, kv, ex, [(WEB, labels("web")), (CLIENT, labels("client"))])
        try:
            yield n
        finally:
            await n.stop()
            await kv.close()
            # Leave the maps empty for the next test.
            datapath.policy.sync_all({})
            for prefix, info in datapath.ipcache.items():
                if is_cidr_identity(info.identity):
                    datapath.ipcache.delete(prefix)


async def put_policy(admin: KVClient, policy: Policy) -> None:
    await admin.put(policy_store.config_key(policy.namespace, policy.name), codec.encode(policy))


async def put_identity(admin: KVClient, number: int, lbls: dict[str, str]) -> None:
    await admin.put(keys.identity_id(CLUSTER, number), codec.encode(Identity(number, lbls)))


def peers(dp: Datapath, subject: int) -> set[tuple[int, int, int, str]]:
    """(peer, lo, hi, action) of the ingress rows of ``subject`` in the kernel's map."""
    return {
        (r.peer, r.lo, r.hi, "deny" if r.deny else "allow")
        for r in dp.policy.rows(subject)
        if r.direction == Direction.INGRESS and r.proto == 6
    }


async def until(cond: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


async def test_policies_reach_the_maps_and_follow_changes(admin: KVClient, node: Node) -> None:
    dp = node.dp
    for number, app in ((WEB, "web"), (CLIENT, "client"), (OTHER, "other")):
        await put_identity(admin, number, labels(app))
    await put_policy(admin, cnp("web", web_from("client", "80")))
    junk = policy_store.config_key("default", "junk")
    await admin.put(junk, b'{"name": "junk"}')
    sync = await node.start()
    assert dp.policy.enforced()[WEB] == (True, False)
    assert CLIENT not in dp.policy.enforced()  # not selected: no entries, not enforced
    assert (CLIENT, 80, 80, "allow") in peers(dp, WEB)
    assert OTHER not in {p for p, *_ in peers(dp, WEB)}
    st = sync.status()
    assert (st["policies"], st["rejected"]) == (1, 1) and junk in st["rejected_keys"]
    row = next(r for r in dp.policy.rows(WEB) if r.peer == CLIENT)
    assert sync.rules_for_cookie(row.cookie) == ["default/web: spec.ingress[0]"]

    # A change, from the write in etcd to the kernel's map.
    t0 = time.monotonic()
    await put_policy(admin, cnp("web2", web_from("other", "8080")))
    await until(lambda: (OTHER, 8080, 8080, "allow") in peers(dp, WEB), CHANGE_BOUND)
    assert time.monotonic() - t0 < CHANGE_BOUND
    assert sync.last.latency_s < CHANGE_BOUND and sync.last.written > 0

    # A new peer identity, then one gone.
    await put_identity(admin, OTHER + 1, labels("client"))
    await until(lambda: (OTHER + 1, 80, 80, "allow") in peers(dp, WEB), CHANGE_BOUND)
    await admin.delete(keys.identity_id(CLUSTER, OTHER + 1))
    await until(lambda: OTHER + 1 not in {p for p, *_ in peers(dp, WEB)}, CHANGE_BOUND)

    # A good record gone bad stops counting; the others go on.
    await admin.put(policy_store.config_key("default", "web2"), b"garbage")
    await until(lambda: (OTHER, 8080, 8080, "allow") not in peers(dp, WEB), CHANGE_BOUND)
    assert (CLIENT, 80, 80, "allow") in peers(dp, WEB)
    assert sync.summary()[2]  # degraded

    # Deleting the policies: default allow again (the subject leaves the maps).
    await admin.delete(policy_store.config_key("default", "web"))
    await admin.delete(policy_store.config_key("default", "web2"))
    await until(lambda: WEB not in dp.policy.enforced(), CHANGE_BOUND)
    assert dp.policy.rows(WEB) == []


async def test_a_restarted_sync_finds_the_maps_right(admin: KVClient, node: Node) -> None:
    dp = node.dp
    for number, app in ((WEB, "web"), (CLIENT, "client")):
        await put_identity(admin, number, labels(app))
    await put_policy(admin, cnp("web", web_from("client", "80")))
    await put_policy(admin, cnp("cidr", CIDR_SPEC))
    await node.start()
    cidr = {p: i for p, i in dp.ipcache.items() if is_cidr_identity(i.identity)}
    assert set(cidr) == {"192.0.2.0/24"} and cidr["192.0.2.0/24"].tunnel_endpoint is None
    number = cidr["192.0.2.0/24"].identity
    egress = {r.peer for r in dp.policy.rows(CLIENT) if r.direction == Direction.EGRESS}
    assert number in egress
    before = sorted((r.subject, r.direction, r.peer, r.proto, r.lo, r.hi, r.deny)
                    for r in dp.policy.rows())  # fmt: skip
    await node.stop()

    # The agent restarts: a new PolicySync over the pinned maps.
    sync = await node.start()
    after = sorted((r.subject, r.direction, r.peer, r.proto, r.lo, r.hi, r.deny)
                   for r in dp.policy.rows())  # fmt: skip
    assert after == before
    assert sync.cidr.by_prefix == {"192.0.2.0/24": number}  # the number was adopted
    # Only cookies may differ (a new table); no entry was removed.
    assert sync.initial.written <= len(before)
    # A prefix no policy names any more leaves the ipcache.
    await admin.delete(policy_store.config_key("default", "cidr"))
    await until(
        lambda: not any(is_cidr_identity(i.identity) for _, i in dp.ipcache.items()),
        CHANGE_BOUND,
    )
