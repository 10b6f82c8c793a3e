"""EndpointManager: an endpoint's identity is made of its filtered runtime labels.

The manager runs with its real on-disk state (EndpointStore, LocalIPAM in a temp
dir) and in-memory stand-ins for the datapath, the kvstore publisher and the
identity allocator (one registry shared by "restarts", as etcd would be). The
endpoint enters through :meth:`EndpointManager.restore`, which adopts a record and
resolves its labels, as after an agent restart during ADD. The runtime's names
of the container (Docker's, read after Join) become the endpoint's DNS aliases.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from glia.datapath import netlink
from glia.dns.pods import PodNames
from glia.endpoint.hooks import RuntimeInfo
from glia.endpoint.manager import EndpointManager
from glia.endpoint.store import EndpointStore
from glia.identity.labelfilter import LabelFilter
from glia.ipam.local import LocalIPAM
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.endpoint import MAX_ALIASES, Endpoint, EndpointState, HostPort
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, ReservedIdentity
from glia.service.hostports import host_port_services
from glia.validate.bounds import ClusterBounds

CIDR = "10.1.0.0/24"
HOST_IF = netlink.HOST_PREFIX + "0001"
PODMAN_INFRA = {"app": "pweb", "io.buildah.version": "1.28.2", NAMESPACE_LABEL: "shop"}
IDENTITY_LABELS = {"app": "pweb", NAMESPACE_LABEL: "shop", CLUSTER_LABEL: "c1"}


class Registry:
    """The cluster's identities: one id per label set, as etcd's labels/<digest> keys."""

    def __init__(self) -> None:
        self.ids: dict[frozenset[tuple[str, str]], int] = {}


class FakeIdentities:
    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self.asked: list[dict[str, str]] = []

    async def allocate(self, labels: dict[str, str]) -> Any:
        self.asked.append(dict(labels))
        key = frozenset(labels.items())
        # In cluster 1's range, as the allocator gives them (records are checked in DNS).
        n = self._reg.ids.setdefault(key, (1 << 16) + 256 + len(self._reg.ids))
        return SimpleNamespace(id=n)

    async def release(self, numeric: int) -> None:
        pass

    async def prune_refs(self) -> int:
        return 0


class FakePublisher:
    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    async def publish_many(self, items: dict[str, bytes]) -> None:
        self.keys.update(items)

    async def withdraw_many(self, keys: Any) -> None:
        for k in keys:
            self.keys.pop(k, None)

    async def withdraw(self, key: str) -> None:
        self.keys.pop(key, None)

    def published(self) -> set[str]:
        return set(self.keys)


class FakeKV:
    async def list(self, prefix: str) -> tuple[list[Any], int]:
        return [], 1


class FakeMap:
    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}

    def upsert(self, ip: str, info: Any) -> None:
        self.entries[ip] = info

    def delete(self, ip: str) -> None:
        self.entries.pop(ip, None)

    def items(self) -> list[tuple[str, Any]]:
        return list(self.entries.items())


class FakeDatapath:
    def __init__(self) -> None:
        self.endpoints = FakeMap()

    def attach_endpoint(self, ifindex: int) -> None:
        pass


class RuntimeLabels:
    def __init__(self, labels: dict[str, str], aliases: tuple[str, ...] = ()) -> None:
        self._labels = labels
        self._aliases = aliases

    async def labels(self, container_id: str) -> RuntimeInfo:
        return RuntimeInfo(dict(self._labels), self._aliases)


async def run_dp(fn: Any) -> Any:
    return fn()


@pytest.fixture(autouse=True)
def one_veth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netlink, "list_links", lambda prefix: [(HOST_IF, 7)])


def _record(where: Path, **fields: Any) -> None:
    """An endpoint record and its address, as ADD leaves them (``fields`` changed)."""
    ipam = LocalIPAM(where / "ipam.json", CIDR)
    ip = ipam.allocate("pod/eth0")
    ep = Endpoint(
        "pod",
        "default",
        "pweb",
        "c1",
        "n1",
        ip,
        int(ReservedIdentity.INIT),
        labels={NAMESPACE_LABEL: "default", CLUSTER_LABEL: "c1"},
        host_ifname=HOST_IF,
        mac="02:00:00:00:00:01",
        host_mac="02:00:00:00:00:02",
    )
    EndpointStore(where).save(replace(ep, **fields))


async def _agent(
    state: Path,
    registry: Registry,
    runtime: dict[str, str],
    flt: LabelFilter | None = None,
    aliases: tuple[str, ...] = (),
    publisher: FakePublisher | None = None,
) -> tuple[EndpointManager, FakeIdentities]:
    """One agent run: restore, then wait until every endpoint has its identity."""
    ids = FakeIdentities(registry)
    mgr = EndpointManager(
        cluster="c1",
        cluster_id=1,
        node="n1",
        node_ip="198.18.1.1",
        mtu=1450,
        store=EndpointStore(state),
        ipam=LocalIPAM(state / "ipam.json", CIDR),
        identities=ids,  # type: ignore[arg-type]
        publisher=publisher or FakePublisher(),  # type: ignore[arg-type]
        kv=FakeKV(),  # type: ignore[arg-type]
        datapath=FakeDatapath(),  # type: ignore[arg-type]
        run_dp=run_dp,
        labels=RuntimeLabels(runtime, aliases),
        label_filter=flt,
    )
    await mgr.restore()
    for _ in range(200):
        if all(ep.state == EndpointState.READY for ep in mgr.all()):
            break
        await asyncio.sleep(0.01)
    await mgr.stop()
    return mgr, ids


def test_identity_leaves_out_image_labels_and_survives_a_restart(tmp_path: Path) -> None:
    _record(tmp_path)
    registry = Registry()
    mgr, ids = asyncio.run(_agent(tmp_path, registry, PODMAN_INFRA))
    (ep,) = mgr.all()
    assert ep.state == EndpointState.READY and ep.namespace == "shop"
    assert ids.asked == [IDENTITY_LABELS]
    assert ep.labels == IDENTITY_LABELS  # the record shows what the identity is made of
    (saved,) = EndpointStore(tmp_path).load_all()
    assert saved.labels == IDENTITY_LABELS and saved.identity == ep.identity

    # Another node's podman has another buildah: the same identity.
    other = tmp_path / "other"
    other.mkdir()
    _record(other)
    newer = {**PODMAN_INFRA, "io.buildah.version": "1.33.7"}
    elsewhere, _ = asyncio.run(_agent(other, registry, newer))
    assert elsewhere.all()[0].identity == ep.identity

    # Restarted agent: the record's labels give the same identity.
    again, ids = asyncio.run(_agent(tmp_path, registry, {}))
    assert ids.asked == [IDENTITY_LABELS]
    assert again.all()[0].identity == ep.identity


def test_a_record_with_unfiltered_labels_is_filtered_on_restore(tmp_path: Path) -> None:
    registry = Registry()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _record(fresh)
    want = asyncio.run(_agent(fresh, registry, PODMAN_INFRA))[0].all()[0].identity
    # What an agent before the filter wrote: every runtime label in the record.
    old = tmp_path / "old"
    old.mkdir()
    unfiltered = {**PODMAN_INFRA, CLUSTER_LABEL: "c1"}
    _record(old, state=EndpointState.READY, identity=999, labels=unfiltered, namespace="shop")
    mgr, ids = asyncio.run(_agent(old, registry, {}))
    assert ids.asked == [IDENTITY_LABELS]
    assert mgr.all()[0].identity == want
    assert EndpointStore(old).load_all()[0].labels == IDENTITY_LABELS


def test_the_configured_filter_is_used(tmp_path: Path) -> None:
    _record(tmp_path)
    flt = LabelFilter(exclude=())  # keep everything, as before the filter
    mgr, ids = asyncio.run(_agent(tmp_path, Registry(), PODMAN_INFRA, flt))
    assert ids.asked == [{**PODMAN_INFRA, CLUSTER_LABEL: "c1"}]
    assert mgr.all()[0].labels["io.buildah.version"] == "1.28.2"


def _dns(pub: FakePublisher) -> PodNames:
    """The cluster's DNS names from what the agent published (as glia.dns.pods reads them)."""
    names = PodNames(ClusterBounds.of("c1", 1, "10.1.0.0/16"))
    for key, value in pub.keys.items():
        if key.startswith(keys.ENDPOINTS):
            names.on_upsert(key, KeyValue(key, value, 1, 1, 1, 0))
    assert names.rejected == 0
    return names


def test_runtime_names_become_aliases_published_and_kept(tmp_path: Path) -> None:
    # A Docker endpoint: named after its endpoint id, its container's names read after Join.
    _record(tmp_path, name="b0b0b0b0b0b0")
    docker = ("glia-Web", "web_1", "DB", "c0ffee123456", "db", "B0B0B0B0B0B0", "-x", "a" * 64)
    pub = FakePublisher()
    mgr, _ = asyncio.run(
        _agent(tmp_path, Registry(), {"app": "web"}, aliases=docker, publisher=pub)
    )
    (ep,) = mgr.all()
    # Lower case, each once, never the endpoint's own name; what is not a DNS label
    # (web_1, -x, 64 characters) is left out and the endpoint is ready all the same.
    assert ep.aliases == ("glia-web", "db", "c0ffee123456")
    assert ep.name == "b0b0b0b0b0b0" and ep.state == EndpointState.READY
    assert EndpointStore(tmp_path).load_all()[0].aliases == ep.aliases
    names = _dns(pub)
    for name in ("glia-web", "db", "c0ffee123456", "b0b0b0b0b0b0"):
        assert names.lookup(name) == [("default", ep.ip)], name
    assert names.lookup("web_1") == []

    # Restarted agent: the record keeps them (dockerd is not asked again).
    pub = FakePublisher()
    again, _ = asyncio.run(_agent(tmp_path, Registry(), {}, publisher=pub))
    assert again.all()[0].aliases == ep.aliases
    assert _dns(pub).lookup("glia-web") == [("default", ep.ip)]


def test_add_aliases_stay_first_and_the_total_is_capped(tmp_path: Path) -> None:
    # A podman endpoint: aliases from ADD, none from its label source.
    _record(tmp_path, aliases=("db", "0123456789ab"))
    mgr, _ = asyncio.run(_agent(tmp_path, Registry(), PODMAN_INFRA))
    assert mgr.all()[0].aliases == ("db", "0123456789ab")
    # Names beyond MAX_ALIASES are left out, not an error.
    full = tmp_path / "full"
    full.mkdir()
    have = tuple(f"a{i}" for i in range(MAX_ALIASES - 1))
    _record(full, aliases=have)
    mgr, _ = asyncio.run(_agent(full, Registry(), PODMAN_INFRA, aliases=("a0", "x", "y")))
    (ep,) = mgr.all()
    assert ep.aliases == (*have, "x") and ep.state == EndpointState.READY


def test_a_restarted_agent_keeps_the_endpoints_host_ports(tmp_path: Path) -> None:
    ports = (HostPort(8080, 80), HostPort(5353, 53, "udp", "127.0.0.1"))
    _record(tmp_path, ports=ports)
    publisher = FakePublisher()
    mgr, _ = asyncio.run(_agent(tmp_path, Registry(), PODMAN_INFRA, publisher=publisher))
    (ep,) = mgr.all()
    assert ep.ports == ports  # what the agent hands the services before their first sync
    assert {s.cluster_ip for s in host_port_services(mgr.all(), "198.18.1.1", "c1", 1)} == {
        "198.18.1.1",
        "127.0.0.1",
    }
    (saved,) = EndpointStore(tmp_path).load_all()
    assert saved.ports == ports
    published = [codec.decode(Endpoint, v) for k, v in publisher.keys.items() if "/endpoints/" in k]
    assert [e.ports for e in published] == [ports]
