"""ServiceMapSync against real pinned maps: speed, restarts, failures, rows.

Each test gets its own pin directory with the programs loaded (maps created
as the agent's would be); no traffic here (test_datapath_lb_traffic.py has it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import netns_util as nu
import pytest

from glia.datapath.errors import DatapathError
from glia.datapath.lbtypes import IPPROTO_TCP, LB_F_HOSTPORT, Frontend, MapChanges, MapContents
from glia.datapath.loader import Datapath, unpin
from glia.model.endpoint import Endpoint, HostPort
from glia.model.service import Backend, ClusterService, LBAlgorithm, Protocol, ServicePort
from glia.service.hostports import host_port_services
from glia.service.lbsync import ServiceMapSync

T = TypeVar("T")


async def run_dp(fn: Callable[[], T]) -> T:
    return fn()


def services(n: int, *, backends: int = 3, start: int = 0) -> list[ClusterService]:
    out = []
    for i in range(start, start + n):
        vip = f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}"
        bes = [
            Backend(
                f"10.1.{j}.{i % 250 + 2}",
                8080,
                Protocol.TCP,
                "",
                80,
                f"n{j}",
                "c1",
                f"default/p{i}-{j}",
                True,
            )
            for j in range(backends)
        ]
        out.append(ClusterService("default", f"s{i}", "c1", 1, vip, [ServicePort(80, 8080)], bes))
    return out


@pytest.fixture
def dp(request: pytest.FixtureRequest) -> Iterator[Datapath]:
    nu.require_bpffs()
    nu.cleanup_stale()
    pins = nu.pin_dir(f"lbsync-{request.node.name[:30]}")
    unpin(pins)
    loaded = Datapath(pins, nu.bpf_objects())
    try:
        loaded.load()
        yield loaded
    finally:
        loaded.close()
        unpin(pins)


def restart(dp: Datapath) -> Datapath:
    """An agent restart: the old handles go, a new load reuses the pins."""
    pins, objs = dp.pin_dir, dp.obj_dir
    dp.close()
    again = Datapath(pins, objs)
    again.load()
    return again


def test_ten_thousand_services_are_programmed_and_diffed(dp: Datapath) -> None:
    # How fast this is, is measured by bench/services.py, not asserted here.
    wanted = services(10_000)
    sync = ServiceMapSync(dp, run_dp)
    asyncio.run(sync.set_services(wanted))
    held = dp.lb.read()
    assert (len(held.services), len(held.slots), len(held.revnat)) == (10_000, 30_000, 10_000)
    assert sync.status()["ok"] and sync.last_changes["services+"] == 10_000
    # Nothing to do the second time; one changed service is one small diff.
    asyncio.run(sync.set_services(wanted))
    assert set(sync.last_changes.values()) == {0}
    changed = dataclasses.replace(wanted[7], backends=wanted[7].backends[:1])
    asyncio.run(sync.upsert(changed))
    assert sync.last_changes["slots-"] == 2 and sync.last_changes["services+"] == 1


def test_a_restarted_agent_adopts_the_maps(dp: Datapath) -> None:
    first = services(50)
    sync = ServiceMapSync(dp, run_dp)
    asyncio.run(sync.set_services(first))
    assert sync.state is not None
    ids = {f: fp.svc_id for f, fp in sync.state.frontends.items()}
    backend_ids = dict(sync.state.backend_ids)

    dp = restart(dp)
    try:
        again = ServiceMapSync(dp, run_dp)
        # 40 of them are still wanted, 10 more are new.
        asyncio.run(again.set_services(first[:40] + services(10, start=100)))
        assert again.state is not None
        for f, fp in again.state.frontends.items():
            if f in ids:
                assert fp.svc_id == ids[f]
        assert {a: i for a, i in again.state.backend_ids.items() if a in backend_ids} == {
            a: backend_ids[a] for a in again.state.backend_ids if a in backend_ids
        }
        changes = again.last_changes
        assert (changes["services+"], changes["services-"]) == (10, 10)
        held = dp.lb.read()
        assert set(held.services) == set(again.state.frontends)
        assert held == again.state.contents()
        # New frontends did not take the ids of the removed ones at once.
        removed = {ids[f] for f in ids if f not in again.state.frontends}
        assert removed.isdisjoint(fp.svc_id for fp in again.state.frontends.values())
    finally:
        dp.close()


def test_an_upsert_before_the_full_set_drops_nothing(dp: Datapath) -> None:
    asyncio.run(ServiceMapSync(dp, run_dp).set_services(services(5)))
    fresh = ServiceMapSync(dp, run_dp)
    (new,) = services(1, start=9)
    asyncio.run(fresh.upsert(new))
    assert len(dp.lb.read().services) == 6
    asyncio.run(fresh.set_services([new]))
    assert list(dp.lb.read().services) == [Frontend(new.cluster_ip, 80, IPPROTO_TCP)]


def test_a_failed_write_is_retried_until_the_maps_match(
    dp: Datapath, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = dp.lb.apply
    calls: list[int] = []

    def flaky(changes: MapChanges) -> None:
        calls.append(1)
        if len(calls) == 1:  # half of the work lands, then it breaks
            real_apply(MapChanges(upsert=MapContents(slots=changes.upsert.slots)))
            raise DatapathError("batch update of glia_lb4_be_v1: No space left on device")
        real_apply(changes)

    monkeypatch.setattr(dp.lb, "apply", flaky)
    wanted = services(20)

    async def scenario() -> None:
        sync = ServiceMapSync(dp, run_dp)
        await sync.set_services(wanted)
        assert "No space left" in sync.last_error and sync.state is None
        assert not sync.status()["ok"]
        deadline = time.monotonic() + 10
        while sync.state is None:
            assert time.monotonic() < deadline, "no successful retry"
            await asyncio.sleep(0.05)
        assert sync.last_error == "" and sync.status()["ok"]
        await sync.stop()

    asyncio.run(scenario())
    assert len(calls) == 2
    held = dp.lb.read()
    assert len(held.services) == 20 and len(held.backends) == 60


def test_rows_read_back_the_maps(dp: Datapath) -> None:
    web = ClusterService(
        "default",
        "web",
        "c1",
        1,
        "10.96.0.10",
        [ServicePort(80, 8080)],
        [
            Backend("10.1.1.5", 8080, Protocol.TCP, "", 80, "n1", "c1", "default/a", True),
            Backend("10.1.2.5", 8080, Protocol.TCP, "", 80, "n2", "c1", "default/b", False),
        ],
        lb_algorithm=LBAlgorithm.MAGLEV,
    )
    sync = ServiceMapSync(dp, run_dp)
    asyncio.run(sync.set_services([web]))
    (row,) = sync.lb_rows()
    assert (row["frontend"], row["service"], row["algorithm"], row["in_sync"]) == (
        "10.96.0.10:80/TCP",
        "default/web",
        "maglev",
        True,
    )
    assert [(b["address"], b["state"], b["node"]) for b in row["backends"]] == [
        ("10.1.1.5:8080", "ready", "n1"),
        ("10.1.2.5:8080", "not-ready", "n2"),
    ]
    assert sum(dp.lb.memory().values()) > 0


def test_a_hundred_thousand_services_fit(dp: Datapath) -> None:
    wanted = services(100_000)
    sync = ServiceMapSync(dp, run_dp)
    asyncio.run(sync.set_services(wanted))
    assert sum(dp.lb.memory().values()) > 0
    assert sync.status()["ok"] and sync.last_changes["services+"] == 100_000
    assert len(dp.lb.services.items_raw()[0]) == 100_000 * dp.lb.services.spec.key_size


def test_rows_without_a_plan_still_list_the_maps(dp: Datapath) -> None:
    asyncio.run(ServiceMapSync(dp, run_dp).set_services(services(3)))
    rows = ServiceMapSync(dp, run_dp).lb_rows()  # a fresh agent, before its first sync
    assert [r["service"] for r in rows] == ["", "", ""]
    assert all(len(r["backends"]) == 3 and not r["in_sync"] for r in rows)


def test_host_port_frontends_carry_the_flag_through_the_maps_and_a_restart(dp: Datapath) -> None:
    # Host ports (docs/hostport.md): GLIA_LB_F_HOSTPORT in the map's flags, read back.
    port = (HostPort(8080, 80),)
    ep = Endpoint("cid", "default", "web", "c1", "n1", "10.1.0.5", 65836, ports=port)
    hp = host_port_services([ep], "198.18.1.1", "c1", 1)
    user = services(1)
    sync = ServiceMapSync(dp, run_dp)
    asyncio.run(sync.set_services([*hp, *user]))
    contents = dp.lb.read()
    flags = {f: e.flags for f, e in contents.services.items()}
    assert flags[Frontend("198.18.1.1", 8080, IPPROTO_TCP)] & LB_F_HOSTPORT
    assert flags[Frontend("127.0.0.1", 8080, IPPROTO_TCP)] & LB_F_HOSTPORT
    assert not flags[Frontend(user[0].cluster_ip, 80, IPPROTO_TCP)] & LB_F_HOSTPORT
    rows = {r["frontend"]: r for r in sync.lb_rows()}
    assert rows["198.18.1.1:8080/TCP"]["host_port"] and rows["198.18.1.1:8080/TCP"]["in_sync"]

    again = restart(dp)
    try:
        sync2 = ServiceMapSync(again, run_dp)
        asyncio.run(sync2.set_services([*hp, *user]))
        assert not any(sync2.last_changes.values()), sync2.last_changes  # adopted as they were
    finally:
        again.close()
