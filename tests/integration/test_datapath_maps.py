"""Loader, pinned maps and tc attachment against the real kernel.

Typed map operations (single, batch, iteration, LPM semantics), pins that
outlive a Datapath, stale or foreign pins refused with a clear error, pins of
retired map versions removed on upgrade, and the tc slot replaced in place and
detached.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import netns_util as nu
import pytest

from glia.datapath import libbpf, tc
from glia.datapath.errors import BPFError, DatapathError
from glia.datapath.loader import PROGS_SUBDIR, Datapath, ensure_bpffs, unpin
from glia.datapath.mapspecs import ALL_MAPS, CONFIG, CT4, ENDPOINTS, RETIRED_MAPS
from glia.datapath.nodemaps import EndpointInfo, EndpointMap, IPCacheInfo, NodeConfig

EP = EndpointInfo(
    ifindex=7, identity=0x10100, mac="02:00:00:00:00:01", node_mac="02:00:00:00:00:02"
)


@pytest.fixture
def pins(request: pytest.FixtureRequest) -> Iterator[Path]:
    nu.require_bpffs()
    nu.cleanup_stale()
    path = nu.pin_dir(request.node.name.replace("[", "-").rstrip("]")[:40])
    unpin(path)
    try:
        yield path
    finally:
        unpin(path)


@pytest.fixture
def dp(pins: Path) -> Iterator[Datapath]:
    with Datapath(pins, nu.bpf_objects()) as loaded:
        loaded.load()
        yield loaded


def test_load_pins_every_map_and_program(dp: Datapath) -> None:
    assert {p.name for p in dp.pin_dir.iterdir()} == {s.name for s in ALL_MAPS} | {PROGS_SUBDIR}
    assert {p.name for p in (dp.pin_dir / PROGS_SUBDIR).iterdir()} == {
        "from_endpoint",
        "from_overlay",
        "to_endpoint",
        "from_netdev",
        "glia_sock4_connect",
        "glia_sock4_sendmsg",
        "glia_sock4_recvmsg",
        "glia_sock4_getpeername",
    }
    assert dp.socket_lb_links() == []  # attached only when the agent is told a cgroup
    assert dp.metrics.read() == []
    assert dp.config.get() == NodeConfig("0.0.0.0", 0, 0)


def test_endpoint_map_operations(dp: Datapath) -> None:
    eps = dp.endpoints
    assert eps.get("10.1.1.5") is None
    eps.upsert("10.1.1.5", EP)
    assert eps.get("10.1.1.5") == EP
    moved = EndpointInfo(8, EP.identity, EP.mac, EP.node_mac)
    eps.upsert("10.1.1.5", moved)
    eps.upsert_many({f"10.1.1.{i}": EP for i in range(10, 200)})
    items = eps.items()
    assert len(items) == 191
    assert items[0] == ("10.1.1.5", moved)
    assert items[-1] == ("10.1.1.199", EP)
    assert eps.delete("10.1.1.5")
    assert not eps.delete("10.1.1.5")
    assert eps.get("10.1.1.5") is None


def test_ipcache_is_longest_prefix_match(dp: Datapath) -> None:
    ipc = dp.ipcache
    remote = IPCacheInfo(identity=6, tunnel_endpoint="198.18.0.2", cluster_id=2)
    pod = IPCacheInfo(identity=0x20105, tunnel_endpoint="198.18.0.3", cluster_id=2)
    ipc.upsert("10.2.0.0/16", remote)
    ipc.upsert("10.2.3.4", pod)
    assert ipc.lookup("10.2.9.9") == remote
    assert ipc.lookup("10.2.3.4") == pod
    assert ipc.lookup("10.3.0.1") is None
    assert ipc.items() == [("10.2.0.0/16", remote), ("10.2.3.4/32", pod)]
    assert ipc.delete("10.2.3.4/32")
    assert not ipc.delete("10.2.3.4")
    assert ipc.lookup("10.2.3.4") == remote
    world = IPCacheInfo(identity=2, tunnel_endpoint=None, cluster_id=0)
    ipc.upsert("0.0.0.0/0", world)
    assert ipc.lookup("192.0.2.1") == world
    with pytest.raises(ValueError, match="not an IPv4 prefix"):
        ipc.upsert("10.2.3.4/16", pod)


def test_ipcache_batch_of_ten_thousand(dp: Datapath) -> None:
    entries = {
        f"10.{1 + i // 65536}.{(i // 256) % 256}.{i % 256}": IPCacheInfo(
            0x10100 + i % 1000, "198.18.0.9", 1
        )
        for i in range(10_000)
    }
    dp.ipcache.upsert_many(entries)
    items = dict(dp.ipcache.items())
    assert len(items) == 10_000
    assert items["10.1.39.15/32"] == entries["10.1.39.15"]


def test_entries_outlive_the_datapath_object(pins: Path) -> None:
    objs = nu.bpf_objects()
    with Datapath(pins, objs) as first:
        first.load()
        first.configure(node_ip="198.18.0.1", vxlan_ifindex=4, cluster_id=3, vxlan_port=8472)
        first.endpoints.upsert("10.3.1.5", EP)
        first.ipcache.upsert("10.3.2.0/24", IPCacheInfo(6, "198.18.0.2", 3))
    with Datapath(pins, objs) as second:
        second.load()
        assert second.endpoints.items() == [("10.3.1.5", EP)]
        assert second.ipcache.items() == [("10.3.2.0/24", IPCacheInfo(6, "198.18.0.2", 3))]
        assert second.config.get() == NodeConfig("198.18.0.1", 4, 3, 8472)
    # Readers that do not load programs (the CLI) open the pins directly.
    endpoints = EndpointMap.open_pinned(pins)
    try:
        assert endpoints.get("10.3.1.5") == EP
    finally:
        endpoints.close()


def test_closed_datapath_refuses_use(pins: Path) -> None:
    dp = Datapath(pins, nu.bpf_objects())
    with pytest.raises(DatapathError, match="not loaded"):
        dp.endpoints.upsert("10.1.1.5", EP)
    dp.load()
    with pytest.raises(DatapathError, match="already loaded"):
        dp.load()
    dp.close()
    with pytest.raises(DatapathError, match="not loaded"):
        dp.ipcache.items()


def test_stale_pin_with_another_layout_is_refused(pins: Path) -> None:
    pins.mkdir(parents=True)
    # A map with this version's name but another value size, as an old build might leave.
    subprocess.run(
        ["bpftool", "map", "create", str(pins / ENDPOINTS.name), "type", "hash",
         "key", "4", "value", "8", "entries", "16", "name", ENDPOINTS.name],
        check=True,
    )  # fmt: skip
    with pytest.raises(BPFError, match="glia_endpts_v1") as failure:
        Datapath(pins, nu.bpf_objects()).load()
    assert "from_endpoint.bpf.o" in str(failure.value)
    with pytest.raises(DatapathError, match="stale pins"):
        EndpointMap.open_pinned(pins)


def test_pins_of_retired_map_versions_are_removed_on_load(pins: Path) -> None:
    """An upgrade: the previous version's glia_config_v1 (16-byte value, no VXLAN
    port) and glia_ct4_v1 are pinned; the new load creates their successors and
    drops the old pins, while whoever still holds the old map (an attached
    program of the previous version) keeps it until it is replaced."""
    pins.mkdir(parents=True)
    for name, kind, key, value in (
        ("glia_config_v1", "array", 4, 16),
        ("glia_ct4_v1", "lru_hash", 16, 24),
    ):
        subprocess.run(
            ["bpftool", "map", "create", str(pins / name), "type", kind, "key", str(key),
             "value", str(value), "entries", "1", "name", name],
            check=True,
        )  # fmt: skip
    assert set(RETIRED_MAPS) == {"glia_config_v1", "glia_ct4_v1"}
    old_config = libbpf.obj_get(str(pins / "glia_config_v1"))  # as an old program would
    try:
        with Datapath(pins, nu.bpf_objects()) as dp:
            dp.load()
            names = {p.name for p in pins.iterdir()}
            assert not names & set(RETIRED_MAPS)
            assert {CONFIG.name, CT4.name} <= names
            dp.configure(node_ip="198.18.0.1", vxlan_ifindex=4, cluster_id=3, vxlan_port=4789)
            assert dp.config.get() == NodeConfig("198.18.0.1", 4, 3, 4789)
        assert libbpf.map_info(old_config).value_size == 16  # the old map lives on
    finally:
        os.close(old_config)


def test_missing_objects_are_reported(pins: Path, tmp_path: Path) -> None:
    with pytest.raises(DatapathError, match="make bpf"):
        Datapath(pins, tmp_path).load()


def test_pin_dirs_must_be_glia_and_on_bpffs(tmp_path: Path) -> None:
    with pytest.raises(DatapathError, match="no 'glia' component"):
        unpin(Path("/sys/fs/bpf/other"))
    with pytest.raises(DatapathError, match="mount -t bpf"):
        ensure_bpffs(tmp_path / "glia-pins")
    with pytest.raises(DatapathError, match="not on a bpf filesystem"):
        Datapath(tmp_path / "glia-pins", nu.bpf_objects()).load()


def test_tc_slot_is_replaced_in_place_and_detached(dp: Datapath) -> None:
    ns = f"{nu.prefix()}-tc"
    try:
        nu.add_netns(ns)
        nu.run(["ip", "-n", ns, "link", "add", "gliaetc0", "type", "veth", "peer", "gliaetc1"])
        ifindex = json.loads(nu.run(["ip", "-n", ns, "-j", "link", "show", "gliaetc0"]).stdout)[0][
            "ifindex"
        ]
        assert nu.call_in(ns, tc.ingress_prog_id, ifindex) is None
        assert not nu.call_in(ns, dp.detach, ifindex)  # no clsact yet

        nu.call_in(ns, dp.attach_endpoint, ifindex)
        endpoint_prog = nu.call_in(ns, tc.ingress_prog_id, ifindex)
        nu.call_in(ns, dp.attach_endpoint, ifindex)  # again: idempotent
        nu.call_in(ns, dp.attach_overlay, ifindex)  # another program: replaced in place
        overlay_prog = nu.call_in(ns, tc.ingress_prog_id, ifindex)
        assert None not in (endpoint_prog, overlay_prog) and endpoint_prog != overlay_prog
        filters = nu.run(nu.in_node(ns, "tc", "filter", "show", "dev", "gliaetc0", "ingress"))
        assert filters.stdout.count("direct-action") == 1
        assert "from_overlay" in filters.stdout
        nu.call_in(ns, dp.attach_netdev, ifindex)  # the underlay's program, same slot
        filters = nu.run(nu.in_node(ns, "tc", "filter", "show", "dev", "gliaetc0", "ingress"))
        assert filters.stdout.count("direct-action") == 1
        assert "from_netdev" in filters.stdout

        assert nu.call_in(ns, dp.detach, ifindex)
        assert not nu.call_in(ns, dp.detach, ifindex)
        assert nu.call_in(ns, tc.ingress_prog_id, ifindex) is None
    finally:
        nu.del_netns(ns)
