"""Merging a global Service's backends across clusters (glia.service.merge): every rule,
their combinations as a table, and properties over random meshes (hypothesis)."""

# ruff: noqa: E501  (the tables of cases read best one case per line)

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.model import codec
from glia.model.service import (
    Backend,
    ClusterService,
    HealthCheck,
    LBAlgorithm,
    ProbeType,
    Protocol,
    ServicePort,
)
from glia.service.merge import RemoteRecord, merge_service

US = "c1"
TCP, UDP = Protocol.TCP, Protocol.UDP
HTTP = ServicePort(port=80, target_port=8080, protocol=TCP, name="http")
DNS = ServicePort(port=53, target_port=5353, protocol=UDP, name="dns")


def cid(cluster: str) -> int:
    return int(cluster[1:])


def be(cluster: str, n: int, ready: bool = True, port: ServicePort = HTTP, ip: str = "") -> Backend:
    return Backend(
        ip=ip or f"10.{cid(cluster)}.0.{n}",
        port=int(port.target_port),
        protocol=port.protocol,
        port_name=port.name,
        frontend_port=port.port,
        node=f"n{n % 2 + 1}",
        cluster=cluster,
        endpoint=f"shop/web-{n}",
        ready=ready,
    )


def bes(cluster: str, spec: str, port: ServicePort = HTTP) -> list[Backend]:
    """Backends from a short spec: "1 2-" is 10.<id>.0.1 (ready) and 10.<id>.0.2 (not ready)."""
    return [be(cluster, int(w.rstrip("-")), not w.endswith("-"), port) for w in spec.split()]


def svc(
    cluster: str,
    backends: str | list[Backend] = "",
    *,
    ports: tuple[ServicePort, ...] = (HTTP,),
    global_: bool = True,
    shared: bool = True,
    affinity: str = "",
    min_ready: int = 0,
) -> ClusterService:
    return ClusterService(
        namespace="shop",
        name="web",
        cluster=cluster,
        cluster_id=cid(cluster),
        cluster_ip=f"100.{63 + cid(cluster)}.0.10",
        ports=list(ports),
        backends=bes(cluster, backends) if isinstance(backends, str) else backends,
        global_=global_,
        shared=shared,
        affinity=affinity,
        affinity_min_ready=min_ready,
    )


def L(backends: str | list[Backend] = "", **kw: Any) -> ClusterService:
    return svc(US, backends, **kw)


def fresh(cluster: str, backends: str | list[Backend] = "", **kw: Any) -> RemoteRecord:
    return RemoteRecord(svc(cluster, backends, **kw), stale=False)


def stale(cluster: str, backends: str | list[Backend] = "", **kw: Any) -> RemoteRecord:
    return RemoteRecord(svc(cluster, backends, **kw), stale=True)


def mesh(*records: RemoteRecord) -> dict[str, RemoteRecord]:
    return {r.service.cluster: r for r in records}


def show(b: Backend) -> str:
    """One output backend: cluster, address, frontend, what it gets, its display flags."""
    state = "ready" if b.ready else "standby" if b.standby else "down"
    where = f"{b.cluster} {b.ip}:{b.frontend_port}" + ("/UDP" if b.protocol is UDP else "")
    return " ".join([where, state] + ["preferred"] * b.preferred + ["stale"] * b.stale)


def merged(local: ClusterService | None, remotes: Mapping[str, RemoteRecord]) -> list[str]:
    out = merge_service(US, local, remotes)
    assert out is not None
    return [show(b) for b in out.backends]


# -- the rules, alone and combined ----------------------------------------------------

CASES = [
    # rule 4: who contributes
    pytest.param(L("1 2-"), mesh(fresh("c2", "1 2"), fresh("c3", "1-")),
                 ["c1 10.1.0.1:80 ready", "c1 10.1.0.2:80 down", "c2 10.2.0.1:80 ready", "c2 10.2.0.2:80 ready", "c3 10.3.0.1:80 down"],
                 id="no affinity: the ready backends of every cluster"),
    pytest.param(L("1", affinity="none"), mesh(fresh("c2", "1")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="affinity none: the same, nothing preferred"),
    pytest.param(L("1"), mesh(fresh("c2", "1", global_=False), fresh("c3", "1")),
                 ["c1 10.1.0.1:80 ready", "c3 10.3.0.1:80 ready"],
                 id="a remote that is not global contributes nothing"),
    pytest.param(L("1"), mesh(fresh("c2", "1", shared=False), fresh("c3", "1")),
                 ["c1 10.1.0.1:80 ready", "c3 10.3.0.1:80 ready"],
                 id="a remote that does not share contributes nothing"),
    pytest.param(L("1", shared=False), mesh(fresh("c2", "1")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="not sharing ours, we still use the others'"),
    pytest.param(L(""), mesh(fresh("c2", "1 2-")),
                 ["c2 10.2.0.1:80 ready", "c2 10.2.0.2:80 down"],
                 id="no local backend: the remote ones"),
    pytest.param(L("1"), mesh(fresh("c2", "")),
                 ["c1 10.1.0.1:80 ready"],
                 id="a remote without backends"),
    # rule 6b: affinity local / remote
    pytest.param(L("1 2-", affinity="local"), mesh(fresh("c2", "1 2-")),
                 ["c1 10.1.0.1:80 ready preferred", "c1 10.1.0.2:80 down preferred", "c2 10.2.0.1:80 standby", "c2 10.2.0.2:80 down"],
                 id="affinity local, a local backend ready: remote ones on standby"),
    pytest.param(L("1-", affinity="local"), mesh(fresh("c2", "1"), fresh("c3", "1")),
                 ["c1 10.1.0.1:80 down preferred", "c2 10.2.0.1:80 ready", "c3 10.3.0.1:80 ready"],
                 id="affinity local, no local backend ready: remote ones take over"),
    pytest.param(L("", affinity="local"), mesh(fresh("c2", "1")),
                 ["c2 10.2.0.1:80 ready"],
                 id="affinity local, no local backend at all"),
    pytest.param(L("1-", affinity="local"), mesh(fresh("c2", "1-")),
                 ["c1 10.1.0.1:80 down preferred", "c2 10.2.0.1:80 down"],
                 id="affinity local, nothing ready anywhere"),
    pytest.param(L("1", affinity="remote"), mesh(fresh("c2", "1"), fresh("c3", "1-")),
                 ["c1 10.1.0.1:80 standby", "c2 10.2.0.1:80 ready preferred", "c3 10.3.0.1:80 down preferred"],
                 id="affinity remote, a remote backend ready: local ones on standby"),
    pytest.param(L("1", affinity="remote"), mesh(fresh("c2", "1-")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 down preferred"],
                 id="affinity remote, no remote backend ready: local ones take over"),
    # rule 6b: affinity-min-ready
    pytest.param(L("1 2 3-", affinity="local", min_ready=3), mesh(fresh("c2", "1 2")),
                 ["c1 10.1.0.1:80 ready preferred", "c1 10.1.0.2:80 ready preferred", "c1 10.1.0.3:80 down preferred", "c2 10.2.0.1:80 ready", "c2 10.2.0.2:80 ready"],
                 id="min-ready 3, two local ready: remote ones share the load"),
    pytest.param(L("1 2", affinity="local", min_ready=2), mesh(fresh("c2", "1")),
                 ["c1 10.1.0.1:80 ready preferred", "c1 10.1.0.2:80 ready preferred", "c2 10.2.0.1:80 standby"],
                 id="min-ready 2, two local ready: local ones alone"),
    pytest.param(L("1", affinity="local", min_ready=1), mesh(fresh("c2", "1")),
                 ["c1 10.1.0.1:80 ready preferred", "c2 10.2.0.1:80 standby"],
                 id="min-ready 1 is plain affinity"),
    pytest.param(L("1 2- 3-", affinity="local", min_ready=2), mesh(fresh("c2", "1")),
                 ["c1 10.1.0.1:80 ready preferred", "c1 10.1.0.2:80 down preferred", "c1 10.1.0.3:80 down preferred", "c2 10.2.0.1:80 ready"],
                 id="min-ready counts ready preferred backends, not all of them"),
    pytest.param(L("1", affinity="remote", min_ready=3), mesh(fresh("c2", "1"), fresh("c3", "1")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready preferred", "c3 10.3.0.1:80 ready preferred"],
                 id="affinity remote, min-ready 3, two remote ready: ours share"),
    pytest.param(L("1", affinity="remote", min_ready=3), mesh(fresh("c2", "1"), fresh("c3", "1 2")),
                 ["c1 10.1.0.1:80 standby", "c2 10.2.0.1:80 ready preferred", "c3 10.3.0.1:80 ready preferred", "c3 10.3.0.2:80 ready preferred"],
                 id="affinity remote, min-ready 3 counts over every remote cluster"),
    pytest.param(L("1", min_ready=5), mesh(fresh("c2", "1")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="min-ready without affinity changes nothing"),
    # rule 6a: staleness
    pytest.param(L("1"), mesh(stale("c2", "1")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 standby stale"],
                 id="a stale cluster's backends wait while a fresh one is ready"),
    pytest.param(L("1-"), mesh(stale("c2", "1 2-")),
                 ["c1 10.1.0.1:80 down", "c2 10.2.0.1:80 ready stale", "c2 10.2.0.2:80 down stale"],
                 id="a stale cluster serves when no fresh backend is ready"),
    pytest.param(L(""), mesh(stale("c2", "1"), fresh("c3", "1")),
                 ["c2 10.2.0.1:80 standby stale", "c3 10.3.0.1:80 ready"],
                 id="a fresh remote beats a stale remote"),
    pytest.param(L("1-"), mesh(stale("c2", "1"), stale("c3", "1")),
                 ["c1 10.1.0.1:80 down", "c2 10.2.0.1:80 ready stale", "c3 10.3.0.1:80 ready stale"],
                 id="stale clusters share when they are all there is"),
    pytest.param(L("1"), mesh(stale("c2", "1", global_=False)),
                 ["c1 10.1.0.1:80 ready"],
                 id="a stale cluster that is not global contributes nothing"),
    # 6a with 6b: staleness is decided first
    pytest.param(L("1", affinity="remote"), mesh(stale("c2", "1")),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 standby preferred stale"],
                 id="affinity remote, the preferred cluster stale: ours serve"),
    pytest.param(L("1", affinity="remote"), mesh(stale("c2", "1"), fresh("c3", "1")),
                 ["c1 10.1.0.1:80 standby", "c2 10.2.0.1:80 standby preferred stale", "c3 10.3.0.1:80 ready preferred"],
                 id="affinity remote: a fresh remote over a stale one and ours"),
    pytest.param(L("1-", affinity="remote"), mesh(stale("c2", "1")),
                 ["c1 10.1.0.1:80 down", "c2 10.2.0.1:80 ready preferred stale"],
                 id="affinity remote, ours down: the stale preferred cluster serves"),
    pytest.param(L("1", affinity="local", min_ready=3), mesh(stale("c2", "1")),
                 ["c1 10.1.0.1:80 ready preferred", "c2 10.2.0.1:80 standby stale"],
                 id="below min-ready a stale cluster does not share"),
    pytest.param(L("1", affinity="local", min_ready=3), mesh(stale("c2", "1"), fresh("c3", "1")),
                 ["c1 10.1.0.1:80 ready preferred", "c2 10.2.0.1:80 standby stale", "c3 10.3.0.1:80 ready"],
                 id="below min-ready a fresh cluster shares, a stale one does not"),
    pytest.param(L("1-", affinity="local"), mesh(stale("c2", "1")),
                 ["c1 10.1.0.1:80 down preferred", "c2 10.2.0.1:80 ready stale"],
                 id="affinity local, nothing local ready: a stale cluster serves"),
    # rule 8: identity
    pytest.param(L([be(US, 1, False), be(US, 1, True), be(US, 1, False)]), {},
                 ["c1 10.1.0.1:80 ready"],
                 id="one backend listed three times: once, healthy wins"),
    pytest.param(L("2 1"), mesh(fresh("c2", "1"), fresh("b7", "1")),
                 ["c1 10.1.0.1:80 ready", "c1 10.1.0.2:80 ready", "b7 10.7.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="order: ours first, then remote clusters by name, then address"),
    pytest.param(L([be(US, 1, ip="10.9.0.1")]), mesh(fresh("c2", [be("c2", 1, ip="10.9.0.1")])),
                 ["c1 10.9.0.1:80 ready", "c2 10.9.0.1:80 ready"],
                 id="the same address in two clusters: two backends"),
    pytest.param(L("1"), mesh(fresh("c2", [be("c2", 1), be("c3", 1)])),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="a backend of another cluster inside a record is left out"),
    pytest.param(L("1", ports=(HTTP, DNS)), mesh(fresh("c2", [be("c2", 1), be("c2", 2, port=DNS)])),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="a backend serving a port its record does not list is left out"),
    pytest.param(L("1"), mesh(fresh("c2", [dataclasses.replace(be("c2", 1), preferred=True, stale=True, standby=True)])),
                 ["c1 10.1.0.1:80 ready", "c2 10.2.0.1:80 ready"],
                 id="display flags of the input are ignored"),
]  # fmt: skip


@pytest.mark.parametrize(("local", "remotes", "expected"), CASES)
def test_merge_rules(
    local: ClusterService, remotes: dict[str, RemoteRecord], expected: list[str]
) -> None:
    assert merged(local, remotes) == expected


# -- rules 5 (ports), 1, 2, 3, and the contract ---------------------------------------


def test_ports_a_remote_contributes_only_to_the_ports_it_shares() -> None:
    both = (HTTP, DNS)
    local = L([be(US, 1), be(US, 1, port=DNS)], ports=both, affinity="local")
    dns_tcp = ServicePort(port=53, target_port=5353, protocol=TCP, name="dns")
    other = ServicePort(port=8080, target_port=8080, protocol=TCP, name="alt")
    remotes = mesh(
        fresh("c2", [be("c2", 1, port=HTTP)], ports=(HTTP,)),  # 80 only
        fresh("c3", [be("c3", 1, port=dns_tcp), be("c3", 2, port=other)], ports=(dns_tcp, other)),
        fresh("c4", [be("c4", 1, False), be("c4", 1, port=DNS)], ports=both),
    )
    assert merged(local, remotes) == [
        "c1 10.1.0.1:53/UDP ready preferred",
        "c4 10.4.0.1:53/UDP standby",
        "c1 10.1.0.1:80 ready preferred",
        "c2 10.2.0.1:80 standby",
        "c4 10.4.0.1:80 down",
    ]


def test_ports_affinity_is_decided_for_each_port() -> None:
    local = L([be(US, 1), be(US, 1, False, port=DNS)], ports=(HTTP, DNS), affinity="local")
    remotes = mesh(fresh("c2", [be("c2", 1), be("c2", 1, port=DNS)], ports=(HTTP, DNS)))
    assert merged(local, remotes) == [
        "c1 10.1.0.1:53/UDP down preferred",
        "c2 10.2.0.1:53/UDP ready",
        "c1 10.1.0.1:80 ready preferred",
        "c2 10.2.0.1:80 standby",
    ]


def test_ports_the_merged_backends_carry_our_port_name() -> None:
    theirs = dataclasses.replace(HTTP, name="web", target_port=9090)
    remote = RemoteRecord(svc("c2", [be("c2", 1, port=theirs)], ports=(theirs,)))
    out = merge_service(US, L("1"), {"c2": remote})
    assert out is not None
    assert [(b.cluster, b.port, b.port_name) for b in out.backends] == [
        ("c1", 8080, "http"),
        ("c2", 9090, "http"),  # their target port, our port's name
    ]


def test_no_local_record_no_service() -> None:
    assert merge_service(US, None, mesh(fresh("c2", "1"), stale("c3", "1"))) is None
    assert merge_service(US, None, {}) is None


def test_not_global_is_our_record_exactly() -> None:
    local = L("1 2-", global_=False, affinity="local")
    remotes = mesh(fresh("c2", "1"), stale("c3", "1"))
    assert merge_service(US, local, remotes) is local


def test_settings_ours_win() -> None:
    local = dataclasses.replace(
        L("1", affinity="local", min_ready=2),
        session_affinity=True,
        affinity_timeout=60,
        health=HealthCheck(type=ProbeType.HTTP, path="/healthz"),
    )
    theirs = dataclasses.replace(
        svc("c2", "1", affinity="remote", min_ready=9, ports=(HTTP, DNS)),
        lb_algorithm=LBAlgorithm.MAGLEV,
        health=HealthCheck(type=ProbeType.NONE),
    )
    out = merge_service(US, local, {"c2": RemoteRecord(theirs)})
    assert out is not None
    assert dataclasses.replace(out, backends=[]) == dataclasses.replace(local, backends=[])
    # min-ready 2 is ours: one local backend ready, so the remote one shares
    assert [show(b) for b in out.backends] == [
        "c1 10.1.0.1:80 ready preferred",
        "c2 10.2.0.1:80 ready",
    ]


@pytest.mark.parametrize(
    ("local", "remotes", "message"),
    [
        (svc("c2", "1"), {}, "our record is of cluster 'c2', we are 'c1'"),
        (L("1"), {"c1": fresh("c1", "1")}, "our own cluster name 'c1'"),
        (L("1"), {"c2": fresh("c3", "1")}, "cluster 'c3' under the name 'c2'"),
        (L("1"), {"c2": RemoteRecord(dataclasses.replace(svc("c2"), name="api"))}, "shop/api, shop/web"),
        (None, {"c2": fresh("c2"), "c3": RemoteRecord(dataclasses.replace(svc("c3"), namespace="x"))}, "shop/web, x/web"),
    ],
)  # fmt: skip
def test_a_broken_contract_is_an_error(
    local: ClusterService | None, remotes: dict[str, RemoteRecord], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        merge_service(US, local, remotes)


# -- properties -----------------------------------------------------------------------

PORTS = (HTTP, DNS, ServicePort(port=443, target_port=8443, protocol=TCP, name="https"))
CLUSTERS = ("c1", "c2", "c3", "c4")


@st.composite
def records(draw: st.DrawFn, cluster: str) -> ClusterService:
    ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=3, unique=True))
    flags = st.fixed_dictionaries({k: st.booleans() for k in ("preferred", "stale", "standby")})
    backends = [
        # display flags set at random: the merge must ignore them in its input
        dataclasses.replace(be(cluster, n, draw(st.booleans()), port), **draw(flags))
        for port in ports
        for n in draw(st.lists(st.integers(1, 5), max_size=4))
    ]
    affinity = draw(st.sampled_from(["", "none", "local", "remote"]))
    return svc(
        cluster,
        backends,
        ports=tuple(ports),
        global_=draw(st.booleans()),
        shared=draw(st.booleans()),
        affinity=affinity,
        min_ready=draw(st.integers(0, 4)),
    )


@st.composite
def meshes(draw: st.DrawFn) -> tuple[ClusterService, dict[str, RemoteRecord]]:
    local = draw(records(US))
    if draw(st.integers(0, 3)):  # mostly global, or there is little to merge
        local = dataclasses.replace(local, global_=True)
    names = draw(st.lists(st.sampled_from(CLUSTERS[1:]), unique=True))
    remotes = {n: RemoteRecord(draw(records(n)), draw(st.booleans())) for n in names}
    return local, remotes


def _contributes(record: RemoteRecord) -> bool:
    return record.service.global_ and record.service.shared


def _per_port(out: ClusterService) -> dict[tuple[int, Protocol], list[Backend]]:
    groups: dict[tuple[int, Protocol], list[Backend]] = {}
    for b in out.backends:
        groups.setdefault((b.frontend_port, b.protocol), []).append(b)
    return groups


def _healthy_inputs(
    local: ClusterService, remotes: dict[str, RemoteRecord], key: tuple[int, Protocol]
) -> dict[tuple[str, str, int], bool]:
    """Every healthy backend that may serve one of our ports: (cluster, ip, port) -> stale."""
    found = {
        (US, b.ip, b.port): False
        for b in local.backends
        if b.ready and (b.frontend_port, b.protocol) == key
    }
    for name, r in remotes.items():
        if _contributes(r) and key in {(p.port, p.protocol) for p in r.service.ports}:
            found |= {
                (name, b.ip, b.port): r.stale
                for b in r.service.backends
                if b.ready and (b.frontend_port, b.protocol) == key
            }
    return found


@given(meshes())
@settings(max_examples=400, deadline=None)
def test_property_who_may_appear(m: tuple[ClusterService, dict[str, RemoteRecord]]) -> None:
    local, remotes = m
    out = merge_service(US, local, remotes)
    assert out is not None
    if not local.global_:
        assert codec.encode(out) == codec.encode(local)
        return
    assert dataclasses.replace(out, backends=[]) == dataclasses.replace(local, backends=[])
    ours = {(p.port, p.protocol) for p in local.ports}
    for b in out.backends:
        assert (b.frontend_port, b.protocol) in ours
        if b.cluster != US:
            record = remotes[b.cluster]
            assert record.service.global_, "a backend of a non-global remote"
            assert record.service.shared, "a backend of a non-shared remote"
            assert (b.frontend_port, b.protocol) in {
                (p.port, p.protocol) for p in record.service.ports
            }
            assert b.stale == record.stale
        else:
            assert not b.stale
    idents = [(b.frontend_port, b.protocol, b.cluster, b.ip, b.port) for b in out.backends]
    assert len(idents) == len(set(idents))
    # every backend that may contribute is there, exactly once
    expected = {
        (b.frontend_port, b.protocol, b.cluster, b.ip, b.port)
        for r in [RemoteRecord(local), *[r for r in remotes.values() if _contributes(r)]]
        for b in r.service.backends
        if (b.frontend_port, b.protocol) in ours
        and (b.frontend_port, b.protocol) in {(p.port, p.protocol) for p in r.service.ports}
    }
    assert set(idents) == expected


@given(meshes())
@settings(max_examples=400, deadline=None)
def test_property_who_gets_new_connections(
    m: tuple[ClusterService, dict[str, RemoteRecord]],
) -> None:
    local, remotes = m
    local = dataclasses.replace(local, global_=True)
    out = merge_service(US, local, remotes)
    assert out is not None
    prefer = local.affinity if local.affinity in ("local", "remote") else ""
    enough = max(1, local.affinity_min_ready)

    def on_preferred_side(cluster: str) -> bool:
        return bool(prefer) and (cluster == US) == (prefer == "local")

    for key, group in _per_port(out).items():
        healthy = _healthy_inputs(local, remotes, key)
        ready = {(b.cluster, b.ip, b.port) for b in group if b.ready}
        for b in group:
            ident = (b.cluster, b.ip, b.port)
            assert b.standby == (not b.ready and ident in healthy)
            assert b.preferred == on_preferred_side(b.cluster)
        # never an unhealthy backend, and never nothing while something is healthy
        assert ready <= healthy.keys()
        assert bool(ready) == bool(healthy)
        # staleness: whenever a fresh healthy backend exists, no stale one gets new connections
        fresh = {h for h, is_stale in healthy.items() if not is_stale}
        if fresh:
            assert not any(healthy[h] for h in ready)
        pool = fresh or set(healthy)
        preferred = {h for h in pool if on_preferred_side(h[0])}
        if prefer and len(preferred) >= enough:
            # affinity: with at least max(1, N) preferred candidates, only they
            assert ready == preferred
        else:
            # no affinity, or too few preferred: every candidate
            assert ready == pool


@given(meshes())
@settings(max_examples=200, deadline=None)
def test_property_affinity_local_with_enough_local_ready_uses_no_remote(
    m: tuple[ClusterService, dict[str, RemoteRecord]],
) -> None:
    local, remotes = m
    local = dataclasses.replace(local, global_=True, affinity="local")
    out = merge_service(US, local, remotes)
    assert out is not None
    for key, group in _per_port(out).items():
        local_ready = {
            (b.ip, b.port)
            for b in local.backends
            if b.ready and (b.frontend_port, b.protocol) == key
        }
        if len(local_ready) >= max(1, local.affinity_min_ready):
            assert all(b.cluster == US for b in group if b.ready)


@given(meshes())
@settings(max_examples=200, deadline=None)
def test_property_stale_only_when_no_fresh_ready(
    m: tuple[ClusterService, dict[str, RemoteRecord]],
) -> None:
    local, remotes = m
    out = merge_service(US, dataclasses.replace(local, global_=True), remotes)
    assert out is not None
    for group in _per_port(out).values():
        fresh_healthy = any(not b.stale and (b.ready or b.standby) for b in group)
        if fresh_healthy:
            assert not any(b.stale and b.ready for b in group)


@given(meshes(), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_property_independent_of_the_order_of_remotes(
    m: tuple[ClusterService, dict[str, RemoteRecord]], rnd: random.Random
) -> None:
    local, remotes = m
    items = list(remotes.items())
    rnd.shuffle(items)
    shuffled = {
        name: RemoteRecord(
            dataclasses.replace(
                r.service, backends=rnd.sample(r.service.backends, len(r.service.backends))
            ),
            r.stale,
        )
        for name, r in items
    }
    local2 = dataclasses.replace(local, backends=rnd.sample(local.backends, len(local.backends)))
    a, b = merge_service(US, local, remotes), merge_service(US, local2, shuffled)
    assert a is not None and b is not None
    if local.global_:  # a non-global result is our record as given, order included
        assert codec.encode(a) == codec.encode(b)


@given(meshes())
@settings(max_examples=100, deadline=None)
def test_property_the_result_survives_the_codec(
    m: tuple[ClusterService, dict[str, RemoteRecord]],
) -> None:
    out = merge_service(US, *m)
    assert out is not None
    assert codec.decode(ClusterService, codec.encode(out)) == out
