"""Planning the lb4 maps (glia.service.lbplan), diffing plans (lbdiff) and reading them back as
rows (lbsync.lb_rows).

The central property: applying ``diff(old, new)`` to the content of ``old``
gives exactly the content of ``new``, whatever the two service sets, and the
result does not depend on whether the new set came in one full plan or as a
series of incremental updates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from glia.datapath.lbtypes import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    LB_F_AFFINITY,
    LB_F_MAGLEV,
    BackendAddr,
    Frontend,
    MapChanges,
    MapContents,
    RevNat,
    ServiceEntry,
)
from glia.model.service import Backend, ClusterService, LBAlgorithm, Protocol, ServicePort
from glia.service.lbdiff import diff
from glia.service.lbplan import plan, update
from glia.service.lbstate import LBState
from glia.service.lbsync import lb_rows

M = 13  # a small prime table keeps Maglev cases fast


def be(
    ip: str,
    port: int = 8080,
    *,
    fport: int = 80,
    ready: bool = True,
    proto: Protocol = Protocol.TCP,
    node: str = "n1",
) -> Backend:
    return Backend(ip, port, proto, "", fport, node, "c1", f"default/{ip}", ready)


def svc(
    name: str, vip: str, backends: list[Backend], ports: list[ServicePort] | None = None, **kw: Any
) -> ClusterService:
    return ClusterService(
        "default", name, "c1", 1, vip, ports or [ServicePort(80, 8080)], backends, **kw
    )


def apply_to(contents: MapContents, ch: MapChanges) -> MapContents:
    """What LBMaps.apply does to the maps, on plain dicts."""
    out = dataclasses.replace(
        contents,
        services=dict(contents.services),
        slots=dict(contents.slots),
        backends=dict(contents.backends),
        revnat=dict(contents.revnat),
        maglev=dict(contents.maglev),
        affinity_match=set(contents.affinity_match),
    )
    u = ch.upsert
    out.services.update(u.services)
    out.slots.update(u.slots)
    out.backends.update(u.backends)
    out.revnat.update(u.revnat)
    out.maglev.update(u.maglev)
    out.affinity_match |= u.affinity_match
    for f in ch.delete_services:
        del out.services[f]
    for k in ch.delete_slots:
        del out.slots[k]
    for b in ch.delete_backends:
        del out.backends[b]
    for s in ch.delete_revnat:
        del out.revnat[s]
    for s in ch.delete_maglev:
        del out.maglev[s]
    for pair in ch.delete_affinity_match:
        out.affinity_match.remove(pair)
    return out


def normal(contents: MapContents) -> dict[Frontend, Any]:
    """Content with ids replaced by what they stand for (ids differ between plan paths)."""
    out: dict[Frontend, Any] = {}
    for f, e in contents.services.items():
        slots = [contents.backends[contents.slots[(e.svc_id, i)]] for i in range(e.ready_count)]
        table = contents.maglev.get(e.svc_id)
        out[f] = (
            e.flags,
            e.affinity_timeout,
            slots,
            [contents.backends[b] for b in table] if table else None,
            contents.revnat[e.svc_id],
            sorted(contents.backends[b] for b, s in contents.affinity_match if s == e.svc_id),
        )
    return out


def check_consistent(contents: MapContents) -> None:
    """Every reference resolves; nothing is left over."""
    ids = {e.svc_id for e in contents.services.values()}
    assert len(ids) == len(contents.services)
    assert set(contents.revnat) == ids
    assert {s for s, _ in contents.slots} <= ids
    assert set(contents.slots.values()) == set(contents.backends)
    assert set(contents.maglev) <= ids
    for e in contents.services.values():
        assert all((e.svc_id, i) in contents.slots for i in range(e.ready_count))
    assert {s for _, s in contents.affinity_match} <= ids


# --- basics -------------------------------------------------------------------


def test_a_service_becomes_frontends_slots_and_backends() -> None:
    s = svc(
        "web",
        "10.96.0.10",
        [
            be("10.1.1.7"),
            be("10.1.1.5"),
            be("10.1.2.9", ready=False),
            be("10.1.1.5", 5353, fport=53, proto=Protocol.UDP),
        ],
        [ServicePort(80, 8080), ServicePort(53, 5353, Protocol.UDP)],
    )
    state = plan([s])
    tcp = state.frontends[Frontend("10.96.0.10", 80, IPPROTO_TCP)]
    udp = state.frontends[Frontend("10.96.0.10", 53, IPPROTO_UDP)]
    assert tcp.svc_id != udp.svc_id and min(tcp.svc_id, udp.svc_id) >= 1
    assert [a.ip for a in tcp.addrs] == ["10.1.1.5", "10.1.1.7"]  # ready only, by address
    assert [(v.addr.ip, v.ready) for v in tcp.backends][-1] == ("10.1.2.9", False)
    assert udp.addrs == (BackendAddr("10.1.1.5", 5353, IPPROTO_UDP),)
    c = state.contents()
    check_consistent(c)
    assert c.services[tcp.frontend] == ServiceEntry(tcp.svc_id, 2, 0, 0)
    assert c.revnat[udp.svc_id] == RevNat("10.96.0.10", 53)
    assert len(c.backends) == 3  # 10.1.1.5:8080, 10.1.1.7:8080, 10.1.1.5:5353/udp
    assert BackendAddr("10.1.2.9", 8080, IPPROTO_TCP) not in state.backend_ids
    assert diff(None, state).upsert.services == c.services


def test_backends_are_shared_between_frontends() -> None:
    shared = [be("10.1.1.5"), be("10.1.1.6")]
    state = plan([svc(f"s{i}", f"10.96.0.{i}", shared) for i in range(1, 50)])
    assert len(state.backend_ids) == 2
    assert state.backend_refs[BackendAddr("10.1.1.5", 8080, IPPROTO_TCP)] == 49


def test_ids_are_stable_and_reused_only_after_release() -> None:
    a, b, c = (svc(n, f"10.96.0.{i}", [be(f"10.1.1.{i}")]) for i, n in enumerate("abc", 1))
    first = plan([a, b, c])
    ids = {f: fp.svc_id for f, fp in first.frontends.items()}
    assert sorted(ids.values()) == [1, 2, 3]
    again = plan([c, a, b], first)
    assert {f: fp.svc_id for f, fp in again.frontends.items()} == ids
    assert diff(first, again).is_empty()
    # b goes and d comes in the same plan: d gets a fresh id, not b's.
    d = svc("d", "10.96.0.4", [be("10.1.1.4")])
    second = plan([a, c, d], again)
    b_id = ids[Frontend("10.96.0.2", 80, IPPROTO_TCP)]
    assert second.frontends[Frontend("10.96.0.4", 80, IPPROTO_TCP)].svc_id == 4
    b_backend = first.backend_ids[BackendAddr("10.1.1.2", 8080, IPPROTO_TCP)]
    assert b_backend not in second.backend_ids.values()
    assert second.frontends[Frontend("10.96.0.4", 80, IPPROTO_TCP)].slots != (b_backend,)
    # ...and the next one reuses b's.
    e = svc("e", "10.96.0.5", [be("10.1.1.2")])
    third = plan([a, c, d, e], second)
    assert third.frontends[Frontend("10.96.0.5", 80, IPPROTO_TCP)].svc_id == b_id
    assert third.backend_ids[BackendAddr("10.1.1.2", 8080, IPPROTO_TCP)] == b_backend


def test_readiness_changes_touch_only_that_frontend() -> None:
    bes = [be("10.1.1.5"), be("10.1.1.6"), be("10.1.1.7")]
    other = svc("other", "10.96.0.99", [be("10.1.9.9")])
    old = plan([svc("web", "10.96.0.10", bes), other])
    withdrawn = [be("10.1.1.5"), be("10.1.1.6", ready=False), be("10.1.1.7")]
    new = plan([svc("web", "10.96.0.10", withdrawn), other], old)
    assert (
        new.frontends[Frontend("10.96.0.99", 80, IPPROTO_TCP)]
        is (old.frontends[Frontend("10.96.0.99", 80, IPPROTO_TCP)])
    )
    ch = diff(old, new)
    web = new.frontends[Frontend("10.96.0.10", 80, IPPROTO_TCP)]
    gone = old.backend_ids[BackendAddr("10.1.1.6", 8080, IPPROTO_TCP)]
    assert ch.upsert.services == {web.frontend: ServiceEntry(web.svc_id, 2, 0, 0)}
    assert ch.upsert.slots == {(web.svc_id, 1): web.slots[1]}
    assert ch.delete_slots == [(web.svc_id, 2)]
    assert ch.delete_backends == [gone]
    assert not (ch.upsert.backends or ch.upsert.revnat or ch.delete_services)


def test_all_backends_gone_leaves_a_frontend_that_refuses() -> None:
    state = plan([svc("web", "10.96.0.10", [be("10.1.1.5", ready=False)])])
    c = state.contents()
    (entry,) = c.services.values()
    assert entry.ready_count == 0 and c.slots == {} and c.backends == {}


def test_affinity_and_maglev_flags() -> None:
    bes = [be(f"10.1.1.{i}") for i in range(1, 4)]
    s = svc(
        "web",
        "10.96.0.10",
        bes,
        session_affinity=True,
        affinity_timeout=600,
        lb_algorithm=LBAlgorithm.MAGLEV,
    )
    state = plan([s], m=M)
    fp = next(iter(state.frontends.values()))
    assert fp.entry == ServiceEntry(fp.svc_id, 3, LB_F_MAGLEV | LB_F_AFFINITY, 600)
    assert fp.maglev is not None and len(fp.maglev) == M and set(fp.maglev) == set(fp.slots)
    c = state.contents()
    assert c.affinity_match == {(b, fp.svc_id) for b in fp.slots}
    # Unchanged backends: the table is reused, not recomputed.
    again = plan([dataclasses.replace(s, affinity_timeout=700)], state, m=M)
    assert next(iter(again.frontends.values())).maglev is fp.maglev
    # Affinity off: its entries are purged from the LRU as well.
    off = plan([dataclasses.replace(s, session_affinity=False)], again, m=M)
    ch = diff(again, off)
    assert ch.flush_affinity == {fp.svc_id}
    assert sorted(ch.delete_affinity_match) == sorted(c.affinity_match)
    # Random services get no table.
    rnd = plan([dataclasses.replace(s, lb_algorithm=LBAlgorithm.RANDOM)], off, m=M)
    assert diff(off, rnd).delete_maglev == [fp.svc_id]


def test_a_contested_frontend_stays_with_its_holder() -> None:
    a = svc("a", "10.96.0.10", [be("10.1.1.1")])
    z = svc("z", "10.96.0.10", [be("10.1.1.2")])
    f = Frontend("10.96.0.10", 80, IPPROTO_TCP)
    first = plan([z])
    both = plan([a, z], first)  # z held it; a sorts first but does not take it
    assert both.frontends[f].service == "default/z"
    assert both.conflicts == {"default/a": (f,)}
    # Changing both at once does not hand it over either.
    a2 = dataclasses.replace(a, backends=[be("10.1.1.3")])
    z2 = dataclasses.replace(z, backends=[be("10.1.1.4")])
    assert plan([a2, z2], both).frontends[f].service == "default/z"
    # Once z goes, a gets it (incrementally too), with z's id.
    after = update(both, deletes=["default/z"])
    assert after.frontends[f].service == "default/a"
    assert after.frontends[f].svc_id == both.frontends[f].svc_id
    assert after.conflicts == {}


def test_invalid_services_are_skipped_and_reported() -> None:
    good = svc("good", "10.96.0.1", [be("10.1.1.1")])
    bad = svc("bad", "10.96.0.300", [be("10.1.1.1")])
    worse = svc("worse", "10.96.0.2", [be("10.1.1.x")])
    state = plan([good, bad, worse])
    assert list(state.frontends) == [Frontend("10.96.0.1", 80, IPPROTO_TCP)]
    assert set(state.errors) == {"default/bad", "default/worse"}
    assert "clusterIP" in state.errors["default/bad"]
    with pytest.raises(ValueError, match="listed twice"):
        plan([good, good])
    # Fixed, or deleted, it is no longer reported.
    fixed = update(state, [dataclasses.replace(bad, cluster_ip="10.96.0.3")], ["default/worse"])
    assert fixed.errors == {}
    assert Frontend("10.96.0.3", 80, IPPROTO_TCP) in fixed.frontends


def test_a_port_listed_twice_is_one_frontend() -> None:
    s = svc("web", "10.96.0.1", [be("10.1.1.1")], [ServicePort(80, 8080), ServicePort(80, 8080)])
    state = plan([s])
    assert list(state.frontends) == [Frontend("10.96.0.1", 80, IPPROTO_TCP)]
    assert state.conflicts == {}


# --- adoption -------------------------------------------------------------------


def test_adopting_the_maps_keeps_ids_and_changes_nothing() -> None:
    services = [
        svc("web", "10.96.0.10", [be("10.1.1.5"), be("10.1.1.6")], session_affinity=True),
        svc("mag", "10.96.0.11", [be("10.1.1.5"), be("10.1.1.7")], lb_algorithm=LBAlgorithm.MAGLEV),
    ]
    before = plan(services, m=M)
    adopted = LBState.from_maps(before.contents())
    assert {f: fp.svc_id for f, fp in adopted.frontends.items()} == {
        f: fp.svc_id for f, fp in before.frontends.items()
    }
    again = plan(services, adopted, m=M)
    assert diff(adopted, again).is_empty()
    assert again.backend_ids == before.backend_ids


def test_adoption_removes_leftovers_and_does_not_reuse_their_ids_at_once() -> None:
    kept = svc("kept", "10.96.0.10", [be("10.1.1.5")])
    state = plan([kept, svc("old", "10.96.0.11", [be("10.1.1.6")])])
    maps = state.contents()
    maps.slots[(77, 0)] = 55  # debris of an interrupted run
    maps.revnat[78] = RevNat("10.96.9.9", 1)
    maps.backends[55] = BackendAddr("10.1.9.9", 1, IPPROTO_TCP)
    adopted = LBState.from_maps(maps)
    new = plan([kept, svc("new", "10.96.0.12", [be("10.1.1.7")])], adopted)
    result = apply_to(maps, diff(adopted, new))
    assert result == new.contents()
    check_consistent(result)
    used = {e.svc_id for e in result.services.values()}
    assert used.isdisjoint({77, 78}) and 55 not in result.backends
    old_id = state.frontends[Frontend("10.96.0.11", 80, IPPROTO_TCP)].svc_id
    assert new.frontends[Frontend("10.96.0.12", 80, IPPROTO_TCP)].svc_id != old_id
    later = plan([kept, svc("n2", "10.96.0.13", [be("10.1.1.8")])], new)
    assert later.frontends[Frontend("10.96.0.13", 80, IPPROTO_TCP)].svc_id in {old_id, 77, 78}


def test_update_before_a_full_set_keeps_adopted_frontends() -> None:
    first = plan([svc("a", "10.96.0.1", [be("10.1.1.1")]), svc("b", "10.96.0.2", [be("10.1.1.2")])])
    adopted = LBState.from_maps(first.contents())
    changed = update(adopted, [svc("a", "10.96.0.1", [be("10.1.1.3")])])
    assert set(changed.frontends) == set(first.frontends)
    assert changed.frontends[Frontend("10.96.0.1", 80, IPPROTO_TCP)].service == "default/a"
    assert changed.frontends[Frontend("10.96.0.2", 80, IPPROTO_TCP)].service == ""
    assert set(plan([], changed).frontends) == set()


def test_a_stale_maglev_table_is_recomputed_on_adoption() -> None:
    s = svc("m", "10.96.0.1", [be("10.1.1.1"), be("10.1.1.2")], lb_algorithm=LBAlgorithm.MAGLEV)
    state = plan([s], m=M)
    maps = state.contents()
    (svc_id,) = maps.maglev
    maps.maglev[svc_id] = (maps.slots[(svc_id, 0)],) * M  # half-written before a crash
    adopted = LBState.from_maps(maps)
    ch = diff(adopted, plan([s], adopted, m=M))
    assert ch.upsert.maglev == {svc_id: state.contents().maglev[svc_id]}


# --- properties ---------------------------------------------------------------

ips = st.sampled_from([f"10.1.{n}.{h}" for n in (1, 2) for h in range(1, 7)])
vips = st.sampled_from([f"10.96.0.{i}" for i in range(1, 6)])
backend_st = st.builds(
    lambda ip, ready, port: be(ip, 8080, fport=port, ready=ready),
    ips,
    st.booleans(),
    st.sampled_from([80, 443]),
)
service_st = st.builds(
    lambda name, vip, backends, ports, affinity, maglev: svc(
        name,
        vip,
        backends,
        [ServicePort(p, 8080) for p in ports],
        session_affinity=affinity,
        affinity_timeout=30,
        lb_algorithm=LBAlgorithm.MAGLEV if maglev else LBAlgorithm.RANDOM,
    ),
    st.sampled_from(["a", "b", "c", "d"]),
    vips,
    st.lists(backend_st, max_size=5),
    st.lists(st.sampled_from([80, 443]), min_size=1, max_size=2, unique=True),
    st.booleans(),
    st.booleans(),
)
service_sets = st.lists(service_st, max_size=4, unique_by=lambda s: s.name)


@settings(max_examples=150, deadline=None)
@given(st.lists(service_sets, min_size=1, max_size=5))
def test_diffs_replay_every_plan_exactly(steps: list[list[ClusterService]]) -> None:
    state: LBState | None = None
    maps = MapContents()
    for services in steps:
        new = plan(services, state, m=M)
        maps = apply_to(maps, diff(state, new))
        assert maps == new.contents()
        check_consistent(maps)
        state = new


@settings(max_examples=100, deadline=None)
@given(service_sets, service_sets)
def test_incremental_updates_reach_what_a_full_plan_gives(
    first: list[ClusterService], second: list[ClusterService]
) -> None:
    # Who wins a contested frontend depends on history (the holder keeps it).
    assume(len({s.cluster_ip for s in second}) == len(second))
    start = plan(first, m=M)
    full = plan(second, start, m=M)
    inc = start
    names = {s.name for s in second}
    for s in second:
        inc = update(inc, [s], m=M)
    inc = update(inc, deletes=[f"default/{s.name}" for s in first if s.name not in names], m=M)
    assert normal(inc.contents()) == normal(full.contents())
    # A frontend its service holds throughout keeps its id on both paths.
    for f, fp in start.frontends.items():
        if f in full.frontends and full.frontends[f].service == fp.service:
            assert inc.frontends[f].svc_id == full.frontends[f].svc_id == fp.svc_id


@settings(max_examples=60, deadline=None)
@given(service_sets, service_sets)
def test_adoption_then_plan_reaches_the_plan(
    first: list[ClusterService], second: list[ClusterService]
) -> None:
    maps = plan(first, m=M).contents()
    adopted = LBState.from_maps(maps)
    new = plan(second, adopted, m=M)
    assert apply_to(maps, diff(adopted, new)) == new.contents()


# --- rows -----------------------------------------------------------------------


def test_rows_name_services_and_show_not_ready_backends() -> None:
    s = svc(
        "web",
        "10.96.0.10",
        [be("10.1.1.6", node="n2"), be("10.1.1.5", ready=False)],
        session_affinity=True,
        affinity_timeout=60,
    )
    state = plan([s])
    (row,) = lb_rows(state.contents(), state)
    assert row["frontend"] == "10.96.0.10:80/TCP" and row["service"] == "default/web"
    assert (row["algorithm"], row["affinity_timeout"], row["count"], row["in_sync"]) == (
        "random",
        60,
        1,
        True,
    )
    assert [(b["address"], b["state"], b["node"], b["slot"]) for b in row["backends"]] == [
        ("10.1.1.6:8080", "ready", "n2", 0),
        ("10.1.1.5:8080", "not-ready", "n1", None),
    ]
    assert {b["cluster"] for b in row["backends"]} == {"c1"}
    # Read back without a plan (a restarted agent, before its first sync).
    (bare,) = lb_rows(state.contents(), None)
    assert bare["service"] == "" and not bare["in_sync"]
    assert [b["state"] for b in bare["backends"]] == ["ready"]


def test_rows_show_a_global_services_backend_cluster_and_side() -> None:
    local = replace(be("10.1.1.6"), preferred=True)
    remote = replace(be("10.2.0.5", node="n1"), cluster="c2", stale=True, standby=True, ready=False)
    state = plan([svc("web", "10.96.0.10", [local, remote])])
    (row,) = lb_rows(state.contents(), state)
    assert [(b["address"], b["cluster"], b["node"], b["flags"]) for b in row["backends"]] == [
        ("10.1.1.6:8080", "c1", "n1", ["preferred"]),
        ("10.2.0.5:8080", "c2", "n1", ["stale", "standby"]),
    ]
