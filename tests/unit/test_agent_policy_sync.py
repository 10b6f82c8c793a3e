"""The agent's policy subsystem without a kernel: what it asks a policy map writer to do.

The writer here keeps subject -> EndpointPolicy in a dict (PolicyMap's contract:
``apply(subject, old, new)`` goes from old to new, ``sync_all`` makes the map
hold exactly ``desired``); the datapath thread is a direct call. Checked: the
first sync, debounced flushes (a burst programs once), subject bookkeeping as
endpoints and identities come and go (a remote cluster's identities leave
with it), untrusted records, CIDR identities handed to the ipcache's writer,
rule cookies, and repair after a refused write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import pytest

from glia.agent.api_bpfpolicy import endpoint_view, find_endpoints
from glia.agent.api_http import ApiError
from glia.agent.identities import IdentityCache
from glia.agent.policy import PolicySync
from glia.agent.policy_types import CookieTable
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.endpoint import Endpoint
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, Identity
from glia.policy import store as policy_store
from glia.policy.cidr import is_cidr_identity
from glia.policy.entries import EndpointPolicy
from glia.policy.manifest import parse_policy
from glia.policy.model import Direction, Policy
from glia.validate.bounds import ClusterBounds

T = TypeVar("T")
C1 = ClusterBounds.of("c1", 1, "10.1.0.0/16", "100.64.0.0/15")
C2 = ClusterBounds.of("c2", 2, "10.2.0.0/16", "100.66.0.0/15")
WEB, CLIENT, OTHER = 1 << 16 | 300, 1 << 16 | 301, 1 << 16 | 302
REMOTE_CLIENT = 2 << 16 | 300


def labels(app: str, cluster: str = "c1") -> dict[str, str]:
    return {"app": app, NAMESPACE_LABEL: "default", CLUSTER_LABEL: cluster}


class FakeWriter:
    """PolicyMap's contract over a dict, recording the calls."""

    def __init__(self) -> None:
        self.maps: dict[int, EndpointPolicy] = {}
        self.calls: list[tuple[str, Any]] = []
        self.cookies: dict[int, int] = {}  # subject -> cookies written (count)
        self.fail = False

    def apply(
        self,
        subject: int,
        old: EndpointPolicy | None,
        new: EndpointPolicy | None,
        cookie: Callable[[tuple[str, ...]], int],
    ) -> int:
        if self.fail:
            raise OSError("E2BIG: map full")
        assert self.maps.get(subject) == old, "apply from a state the map does not hold"
        self.calls.append(("apply", subject))
        if new is None:
            self.maps.pop(subject, None)
        else:
            self.maps[subject] = new
            for v in new.entries.values():
                cookie(v.rules)
        return 1

    def apply_many(
        self,
        changes: Iterable[tuple[int, EndpointPolicy | None, EndpointPolicy | None]],
        cookie: Callable[[tuple[str, ...]], int],
    ) -> int:
        changes = list(changes)
        self.calls.append(("apply_many", len(changes)))
        return sum(self.apply(s, old, new, cookie) for s, old, new in changes)

    def sync_all(
        self, desired: Mapping[int, EndpointPolicy], cookie: Callable[[tuple[str, ...]], int]
    ) -> int:
        if self.fail:
            raise OSError("E2BIG: map full")
        self.calls.append(("sync_all", sorted(desired)))
        self.maps = dict(desired)
        return len(desired)


class FakeIPCache:
    def __init__(self, held: dict[str, int] | None = None) -> None:
        self.held = dict(held or {})
        self.sets: list[dict[str, int]] = []

    async def set_cidr_identities(self, prefixes: Mapping[str, int]) -> None:
        self.sets.append(dict(prefixes))
        self.held = dict(prefixes)

    async def held_cidr_identities(self) -> dict[str, int]:
        return dict(self.held)


async def run_dp(fn: Callable[[], T]) -> T:
    return fn()


def cnp(name: str, spec: dict[str, Any], cluster: str = "c1") -> Policy:
    return parse_policy(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        },
        cluster=cluster,
    )


WEB_FROM_CLIENT = {
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "ingress": [
        {
            "fromEndpoints": [{"matchLabels": {"app": "client"}}],
            "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
        }
    ],
}
WEB_FROM_REMOTE = {
    "endpointSelector": {"matchLabels": {"app": "web"}},
    "ingress": [
        {"fromEndpoints": [{"matchLabels": {"app": "client", CLUSTER_LABEL: "c2"}}]},
    ],
}


def kv(key: str, value: bytes) -> KeyValue:
    return KeyValue(key, value, 1, 1, 1, 0)


class Rig:
    def __init__(self, held_cidr: dict[str, int] | None = None) -> None:
        self.writer = FakeWriter()
        self.ipcache = FakeIPCache(held_cidr)
        self.sync = PolicySync("c1", self.writer, run_dp, cidr_sink=self.ipcache, retry=0.01)
        self.cache = IdentityCache(C1)
        self.cache.listen(self.sync.identity_changed)
        self.endpoints: dict[str, tuple[int, dict[str, str]]] = {}
        self.sync.set_endpoint_source(lambda: list(self.endpoints.values()))
        self.policies = self.sync.policy_handler()

    def identity(self, number: int, lbls: dict[str, str], cluster: str = "c1") -> None:
        key = keys.identity_id(cluster, number)
        self.cache.tables[cluster].upsert(key, codec.encode(Identity(number, lbls)))

    def put(self, policy: Policy) -> None:
        key = policy_store.config_key(policy.namespace, policy.name)
        self.policies.on_upsert(key, kv(key, codec.encode(policy)))

    def delete(self, name: str) -> None:
        self.policies.on_delete(policy_store.config_key("default", name), None)

    def endpoint(self, name: str, identity: int, app: str) -> None:
        self.endpoints[name] = (identity, labels(app))
        self.sync.endpoints_changed()

    async def start(self) -> None:
        await self.sync.adopt_cidr()
        self.policies.on_synced()
        await self.sync.initial_sync()

    async def settle(self) -> None:
        await self.sync.settle()

    def ingress_peers(self, subject: int) -> set[int]:
        pol = self.writer.maps[subject]
        return {k.identity for k in pol.entries if k.direction == Direction.INGRESS}


def test_cookies_are_small_stable_and_name_their_rules() -> None:
    t = CookieTable()
    assert t(()) == 0 and t.rules(0) == []
    a = t(("default/web: spec.ingress[0]",))
    b = t(("default/web: spec.ingress[0]", "default/db: spec.ingress[1]"))
    assert (a, b) == (1, 2)
    assert t(("default/web: spec.ingress[0]",)) == 1
    assert t.rules(2) == ["default/web: spec.ingress[0]", "default/db: spec.ingress[1]"]
    assert t.rules(99) == [] and len(t) == 2


async def test_first_sync_programs_every_local_identity_once() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.identity(CLIENT, labels("client"))
    r.endpoint("web-1", WEB, "web")
    r.endpoint("web-2", WEB, "web")  # one identity, one subject
    r.endpoint("client", CLIENT, "client")
    r.put(cnp("web", WEB_FROM_CLIENT))
    assert r.writer.calls == []  # nothing before the first sync
    await r.start()
    assert r.writer.calls == [("sync_all", [WEB, CLIENT])]
    web = r.writer.maps[WEB]
    assert web.ingress_enforced and not web.egress_enforced
    assert CLIENT in r.ingress_peers(WEB)
    assert not r.writer.maps[CLIENT].ingress_enforced
    st = r.sync.status()
    assert st["started"] and st["policies"] == 1 and st["subjects"] == 2
    ok, msg, degraded = r.sync.summary()
    assert ok and not degraded and "1 policies" in msg
    # Every cookie written names the rules of its entry.
    for value in web.entries.values():
        assert r.sync.rules_for_cookie(r.sync.cookies(value.rules)) == list(value.rules)


async def test_a_burst_of_changes_programs_each_subject_once() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.identity(CLIENT, labels("client"))
    r.endpoint("web", WEB, "web")
    await r.start()
    r.writer.calls.clear()
    for i in range(5):
        spec = dict(WEB_FROM_CLIENT)
        spec["ingress"] = [{"toPorts": [{"ports": [{"port": str(8000 + i)}]}]}]
        r.put(cnp(f"p{i}", spec))
    await r.settle()
    assert r.writer.calls == [("apply", WEB)]
    assert r.sync.last.subjects == 1 and r.sync.last.latency_s < 1.0
    r.writer.calls.clear()
    for i in range(5):
        r.delete(f"p{i}")
    await r.settle()
    assert r.writer.calls == [("apply", WEB)]
    assert not r.writer.maps[WEB].ingress_enforced  # default allow again


async def test_peer_identities_come_and_go_remote_clusters_too() -> None:
    r = Rig()
    r.cache.add_source(C2)
    r.identity(WEB, labels("web"))
    r.endpoint("web", WEB, "web")
    r.put(cnp("web", WEB_FROM_CLIENT))
    r.put(cnp("remote", WEB_FROM_REMOTE))
    await r.start()
    assert CLIENT not in r.ingress_peers(WEB)
    r.identity(CLIENT, labels("client"))
    r.identity(REMOTE_CLIENT, labels("client", "c2"), cluster="c2")
    await r.settle()
    assert {CLIENT, REMOTE_CLIENT} <= r.ingress_peers(WEB)
    # A remote cluster cannot pass its identity off as ours by its labels.
    r.identity(REMOTE_CLIENT + 1, labels("client", "c1"), cluster="c2")
    await r.settle()
    assert REMOTE_CLIENT + 1 in r.ingress_peers(WEB)  # selected as c2's (WEB_FROM_REMOTE)
    r.delete("remote")
    await r.settle()
    assert r.ingress_peers(WEB) & {REMOTE_CLIENT, REMOTE_CLIENT + 1} == set()
    r.put(cnp("remote", WEB_FROM_REMOTE))
    await r.settle()
    assert REMOTE_CLIENT in r.ingress_peers(WEB)
    r.cache.remove_source("c2")  # its identities leave with it
    await r.settle()
    assert r.ingress_peers(WEB) & {REMOTE_CLIENT, REMOTE_CLIENT + 1} == set()
    assert CLIENT in r.ingress_peers(WEB)
    key = keys.identity_id("c1", CLIENT)
    r.cache.tables["c1"].delete(key)
    await r.settle()
    assert CLIENT not in r.ingress_peers(WEB)


async def test_a_subject_leaves_with_its_last_endpoint() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.endpoint("web-1", WEB, "web")
    r.endpoint("web-2", WEB, "web")
    r.put(cnp("web", WEB_FROM_CLIENT))
    await r.start()
    r.writer.calls.clear()
    del r.endpoints["web-1"]
    r.sync.endpoints_changed()
    await r.settle()
    assert r.writer.calls == [] and WEB in r.writer.maps
    del r.endpoints["web-2"]
    r.sync.endpoints_changed()
    await r.settle()
    assert r.writer.calls == [("apply", WEB)] and WEB not in r.writer.maps
    assert r.sync.engine.subjects() == set()  # forgotten by the engine
    assert r.sync.status()["subjects"] == 0


async def test_a_new_identity_is_programmed_before_the_endpoint_carries_it() -> None:
    r = Rig()
    r.put(cnp("web", WEB_FROM_CLIENT))
    await r.start()
    await r.sync.identity_ready(WEB, labels("web"))
    assert r.writer.maps[WEB].ingress_enforced  # already, without waiting for a flush
    await r.sync.identity_ready(5, labels("web"))  # reserved (init): never a subject
    assert 5 not in r.writer.maps
    r.endpoint("web", WEB, "web")  # the endpoint manager's change after it
    await r.settle()
    assert r.writer.calls == [("sync_all", []), ("apply", WEB)]
    # A second endpoint of the identity while a change is pending: no waiting either.
    r.delete("web")
    assert r.writer.maps[WEB].ingress_enforced  # the flush is not due yet
    await r.sync.identity_ready(WEB, labels("web"))
    assert not r.writer.maps[WEB].ingress_enforced


async def test_untrusted_records_are_refused_one_by_one() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.identity(CLIENT, labels("client"))
    r.endpoint("web", WEB, "web")
    r.put(cnp("web", WEB_FROM_CLIENT))
    junk = policy_store.config_key("default", "junk")
    r.policies.on_upsert(junk, kv(junk, b"{not json"))
    foreign = cnp("foreign", WEB_FROM_CLIENT, cluster="c2")
    r.put(foreign)
    misplaced = policy_store.config_key("default", "elsewhere")
    r.policies.on_upsert(misplaced, kv(misplaced, codec.encode(cnp("x", WEB_FROM_CLIENT))))
    await r.start()
    st = r.sync.status()
    assert st["policies"] == 1 and st["rejected"] == 3
    assert "cluster 'c2'" in st["rejected_keys"][policy_store.config_key("default", "foreign")]
    assert "belongs at" in st["rejected_keys"][misplaced]
    ok, msg, degraded = r.sync.summary()
    assert ok and degraded and "3 record(s) rejected" in msg
    assert CLIENT in r.ingress_peers(WEB)  # the good one is enforced
    # A good record gone bad is no longer enforced.
    key = policy_store.config_key("default", "web")
    r.policies.on_upsert(key, kv(key, b"[]"))
    await r.settle()
    assert not r.writer.maps[WEB].ingress_enforced
    r.policies.on_delete(junk, None)
    assert r.sync.status()["rejected"] == 3  # junk gone; web now rejected


async def test_cidr_prefixes_get_identities_in_the_ipcache_and_keep_them() -> None:
    spec = {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "egress": [{"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}]}],
    }
    pinned = (1 << 24) | 7
    r = Rig(held_cidr={"192.0.2.0/24": pinned})
    r.identity(WEB, labels("web"))
    r.endpoint("web", WEB, "web")
    r.put(cnp("cidr", spec))
    await r.start()
    got = r.ipcache.sets[-1]
    assert got["192.0.2.0/24"] == pinned  # adopted across the restart
    assert set(got) == {"192.0.2.0/24", "192.0.2.128/25"}
    assert all(is_cidr_identity(i) for i in got.values())
    egress = {k.identity for k in r.writer.maps[WEB].entries if k.direction == Direction.EGRESS}
    assert pinned in egress and got["192.0.2.128/25"] not in egress
    assert r.sync.peer_labels(pinned) == ["cidr:192.0.2.0/24"]
    r.delete("cidr")
    await r.settle()
    assert r.ipcache.sets[-1] == {}
    assert not r.writer.maps[WEB].egress_enforced


async def test_a_refused_write_is_repaired_by_a_full_sync() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.endpoint("web", WEB, "web")
    await r.start()
    r.writer.fail = True
    r.put(cnp("web", WEB_FROM_CLIENT))
    await asyncio.sleep(0.05)
    ok, msg, degraded = r.sync.summary()
    assert ok and degraded and "map write(s) failed" in msg
    r.writer.fail = False
    for _ in range(100):
        await asyncio.sleep(0.01)
        if not r.sync.summary()[2]:
            break
    assert r.writer.maps[WEB].ingress_enforced
    assert r.writer.calls[-1] == ("sync_all", [WEB])
    await r.sync.stop()


async def test_a_subject_removed_while_writes_fail_is_removed_by_the_repair() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.endpoint("web", WEB, "web")
    r.put(cnp("web", WEB_FROM_CLIENT))
    await r.start()
    r.writer.fail = True
    del r.endpoints["web"]
    r.sync.endpoints_changed()
    await asyncio.sleep(0.05)
    assert WEB in r.writer.maps
    r.writer.fail = False
    for _ in range(100):
        await asyncio.sleep(0.01)
        if WEB not in r.writer.maps and not r.sync.pending:
            break
    assert WEB not in r.writer.maps and r.sync.engine.subjects() == set()
    await r.sync.stop()


async def test_an_unexpected_failure_is_logged_and_repaired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.endpoint("web", WEB, "web")
    await r.start()
    real = r.sync.engine.compute
    calls = {"n": 0}

    def flaky(lbls: Mapping[str, str]) -> EndpointPolicy:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug")
        return real(lbls)

    monkeypatch.setattr(r.sync.engine, "compute", flaky)
    r.put(cnp("web", WEB_FROM_CLIENT))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if WEB in r.writer.maps and r.writer.maps[WEB].ingress_enforced:
            break
    assert r.writer.maps[WEB].ingress_enforced
    assert r.sync.map_errors == 1 and "a bug" in (r.sync.last_map_error or "")
    await r.sync.stop()


def test_labels_of_peers_as_listings_show_them() -> None:
    sync = PolicySync("c1", FakeWriter(), run_dp)
    sync.identity_changed("c1", WEB, Identity(WEB, labels("web")))
    assert sync.peer_labels(0) == []
    assert sync.peer_labels(2) == ["reserved:world"]
    assert sync.peer_labels(1) == ["reserved:host"]
    assert "app=web" in sync.peer_labels(WEB)
    assert f"{CLUSTER_LABEL}=c1" in sync.peer_labels(WEB)


def _ep(name: str, ip: str, identity: int, ns: str = "default") -> Endpoint:
    return Endpoint(f"{name}cafe0123456789", ns, name, "c1", "n1", ip, identity, labels(name))


def test_an_endpoint_is_found_by_ip_name_container_or_identity() -> None:
    eps = [
        _ep("web", "10.1.0.5", WEB),
        _ep("web2", "10.1.0.6", WEB),
        _ep("client", "10.1.0.7", CLIENT),
        _ep("client", "10.1.0.8", OTHER, ns="shop"),
    ]
    names = lambda found: sorted(f"{e.namespace}/{e.name}" for e in found)  # noqa: E731
    # Every endpoint of the identity: they share its entries.
    assert names(find_endpoints(eps, "10.1.0.5")) == ["default/web", "default/web2"]
    assert names(find_endpoints(eps, "default/client")) == ["default/client"]
    assert names(find_endpoints(eps, "shop/client")) == ["shop/client"]
    assert names(find_endpoints(eps, "web2cafe")) == ["default/web", "default/web2"]
    assert names(find_endpoints(eps, str(CLIENT))) == ["default/client"]
    assert find_endpoints(eps, "10.1.0.99") == [] and find_endpoints(eps, "nope") == []
    with pytest.raises(ApiError, match="several endpoints"):
        find_endpoints(eps, "client")  # two namespaces, two identities


async def test_endpoint_view_shows_what_is_programmed() -> None:
    r = Rig()
    r.identity(WEB, labels("web"))
    r.endpoint("web", WEB, "web")
    r.put(cnp("web", WEB_FROM_CLIENT))
    await r.start()
    view = endpoint_view(r.sync, _ep("web", "10.1.0.5", WEB))
    assert view["ingress_enforced"] and not view["egress_enforced"]
    assert view["entries"] == len(r.writer.maps[WEB].entries) > 0
    other = endpoint_view(r.sync, _ep("client", "10.1.0.7", CLIENT))
    assert (other["ingress_enforced"], other["entries"]) == (False, 0)


async def test_a_policy_selecting_many_subjects_programs_them_in_one_batch() -> None:
    r = Rig()
    r.identity(CLIENT, labels("client"))
    for i in range(20):
        r.identity(WEB + 100 + i, {**labels("web"), "replica": str(i)})
        r.endpoint(f"web-{i}", WEB + 100 + i, "web")
        r.endpoints[f"web-{i}"] = (WEB + 100 + i, {**labels("web"), "replica": str(i)})
    r.sync.endpoints_changed()
    await r.start()
    r.writer.calls.clear()
    r.put(cnp("web", WEB_FROM_CLIENT))
    await r.settle()
    assert r.writer.calls[0] == ("apply_many", 20)
    peers = {frozenset(r.ingress_peers(WEB + 100 + i)) for i in range(20)}
    assert peers == {frozenset({CLIENT, 1})}, peers
