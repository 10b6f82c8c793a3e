"""Pure parts of glia.datapath: conversions, names, enums, event decoding."""

from __future__ import annotations

import ctypes
import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glia.datapath.addrs import (
    be16_to_int,
    be32_to_ip,
    int_to_be16,
    ip_to_be32,
    mac_to_bytes,
    mac_to_str,
    prefix_to_key,
)
from glia.datapath.drop import REASON_MAX, Direction, Reason, direction_c_name, reason_c_name
from glia.datapath.errors import DatapathError
from glia.datapath.events import DropEvent
from glia.datapath.mapspecs import ALL_MAPS, METRICS, RETIRED_MAPS
from glia.datapath.netlink import HOST_PREFIX, IFNAMSIZ, VXLAN_NAME, host_ifname_for
from glia.datapath.nodemaps import EndpointInfo, IPCacheInfo, NodeConfig
from glia.datapath.structs import glia_drop_event
from glia.model.identity import MAX_LOCAL, MIN_LOCAL, ReservedIdentity


@given(st.ip_addresses(v=4))
def test_be32_round_trip_keeps_network_order_in_memory(addr: ipaddress.IPv4Address) -> None:
    value = ip_to_be32(str(addr))
    assert bytes(ctypes.c_uint32(value)) == addr.packed
    assert be32_to_ip(value) == str(addr)


@pytest.mark.parametrize("bad", ["10.1.1", "10.1.1.256", "::1", "", "10.1.1.1/32"])
def test_bad_ipv4_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IPv4 address"):
        ip_to_be32(bad)


def test_be16_reads_network_order() -> None:
    raw = ctypes.c_uint16.from_buffer_copy(b"\x1f\x90").value  # 8080 on the wire
    assert be16_to_int(raw) == 8080


@given(st.binary(min_size=6, max_size=6))
def test_mac_round_trip(raw: bytes) -> None:
    assert mac_to_bytes(mac_to_str(raw)) == raw


@pytest.mark.parametrize(
    "bad", ["", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:fg", "aabb.ccdd.eeff", "a:b:c:d:e:f"]
)
def test_bad_mac_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a MAC address"):
        mac_to_bytes(bad)


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=15))
def test_host_ifname_is_deterministic_short_and_prefixed(cid: str, ifname: str) -> None:
    name = host_ifname_for(cid, ifname)
    assert name == host_ifname_for(cid, ifname)
    assert len(name) == IFNAMSIZ and name.startswith(HOST_PREFIX)
    assert all(c in "0123456789abcdef" for c in name[len(HOST_PREFIX) :])


def test_host_ifnames_differ_per_container_and_interface() -> None:
    names = {host_ifname_for(f"c{i}", ifname) for i in range(500) for ifname in ("eth0", "eth1")}
    assert len(names) == 1000
    assert not VXLAN_NAME.startswith(HOST_PREFIX)


def test_reason_names_and_labels() -> None:
    assert max(Reason) < REASON_MAX
    assert reason_c_name(Reason.FORWARDED) == "GLIA_REASON_FORWARDED"
    assert reason_c_name(Reason.DROP_INVALID_SOURCE) == "GLIA_DROP_INVALID_SOURCE"
    assert Reason.DROP_INVALID_SOURCE.label == "invalid-source"
    assert Reason.TO_STACK.label == "to-stack" and not Reason.TO_STACK.is_drop
    assert direction_c_name(Direction.EGRESS) == "GLIA_DIR_EGRESS"
    assert METRICS.max_entries == REASON_MAX * len(Direction)


def test_map_names_fit_the_kernel_and_carry_a_version() -> None:
    for spec in ALL_MAPS:
        assert len(spec.name) <= 15 and spec.name.startswith("glia_"), spec.name
        assert spec.name.rsplit("_", 1)[1].startswith("v"), spec.name


def test_retired_map_names_are_not_in_use() -> None:
    assert not {spec.name for spec in ALL_MAPS} & set(RETIRED_MAPS)


def test_identity_header_mirrors_the_model() -> None:
    """bpf/include/identity.h's constants are glia.model.identity's numbers."""
    header = Path(__file__).resolve().parents[2] / "bpf" / "include" / "identity.h"
    defines = {
        m.group(1): int(m.group(2), 0)
        for m in re.finditer(r"^#define (GLIA_ID_\w+) (\w+)", header.read_text(), re.M)
    }
    assert defines == {
        "GLIA_ID_HOST": ReservedIdentity.HOST,
        "GLIA_ID_WORLD": ReservedIdentity.WORLD,
        "GLIA_ID_INIT": ReservedIdentity.INIT,
        "GLIA_ID_REMOTE_NODE": ReservedIdentity.REMOTE_NODE,
        "GLIA_ID_MIN_LOCAL": MIN_LOCAL,
        "GLIA_ID_CLUSTER_SHIFT": 16,
        "GLIA_ID_LOCAL_MASK": MAX_LOCAL,
    }


def test_node_config_is_validated() -> None:
    assert NodeConfig("198.18.0.1", 4, 3, 8472).vxlan_port == 8472
    with pytest.raises(ValueError, match="VXLAN port 70000"):
        NodeConfig("198.18.0.1", 4, 3, 70000)
    with pytest.raises(ValueError, match="not an IPv4 address"):
        NodeConfig("node-1", 4, 3, 8472)


@given(st.integers(0, 0xFFFF))
def test_be16_round_trip_keeps_network_order_in_memory(port: int) -> None:
    value = int_to_be16(port)
    assert bytes(ctypes.c_uint16(value)) == port.to_bytes(2, "big")
    assert be16_to_int(value) == port


def test_endpoint_info_is_validated() -> None:
    with pytest.raises(ValueError, match="MAC"):
        EndpointInfo(3, 1, "nope", "02:00:00:00:00:01")
    with pytest.raises(ValueError, match="ifindex"):
        EndpointInfo(0, 1, "02:00:00:00:00:01", "02:00:00:00:00:02")


def test_ipcache_info_is_validated() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        IPCacheInfo(6, "node-2", 1)
    with pytest.raises(ValueError, match="cluster id"):
        IPCacheInfo(6, "198.18.0.2", 256)


def _event(**fields: int) -> bytes:
    ev = glia_drop_event(
        ts_ns=123,
        type=1,
        reason=int(Reason.DROP_INVALID_SOURCE),
        direction=int(Direction.EGRESS),
        proto=6,
        ifindex=5,
        saddr=ip_to_be32("10.1.1.99"),
        daddr=ip_to_be32("10.1.1.6"),
        sport=ctypes.c_uint16.from_buffer_copy(b"\x9c\x40").value,
        dport=ctypes.c_uint16.from_buffer_copy(b"\x00\x50").value,
        l3_proto=ctypes.c_uint16.from_buffer_copy(b"\x08\x00").value,
        src_identity=0,
        dst_identity=65837,
        len=74,
    )
    for name, value in fields.items():
        setattr(ev, name, value)
    return bytes(ev)


def test_drop_event_decodes() -> None:
    ev = DropEvent.from_bytes(_event())
    assert ev == DropEvent(
        ts_ns=123,
        reason=Reason.DROP_INVALID_SOURCE,
        direction="egress",
        ifindex=5,
        proto=6,
        saddr="10.1.1.99",
        daddr="10.1.1.6",
        sport=40000,
        dport=80,
        l3_proto=0x0800,
        src_identity=0,
        dst_identity=65837,
        length=74,
    )
    assert ev.summary() == (
        "drop invalid-source egress ifindex 5 tcp 10.1.1.99:40000 -> 10.1.1.6:80 "
        "identity 0 -> 65837 len 74"
    )


def test_overlay_drop_event_names_the_outer_source() -> None:
    raw = _event(
        reason=int(Reason.DROP_UNKNOWN_NODE),
        direction=int(Direction.INGRESS),
        tunnel_src=ip_to_be32("198.18.0.99"),
    )
    ev = DropEvent.from_bytes(raw)
    assert (ev.reason, ev.tunnel_src) == (Reason.DROP_UNKNOWN_NODE, "198.18.0.99")
    assert ev.summary() == (
        "drop unknown-node ingress ifindex 5 tcp 10.1.1.99:40000 -> 10.1.1.6:80 "
        "via 198.18.0.99 identity 0 -> 65837 len 74"
    )


def test_drop_event_errors_are_specific() -> None:
    with pytest.raises(DatapathError, match="truncated"):
        DropEvent.from_bytes(_event()[:20])
    with pytest.raises(DatapathError, match="unknown reason 63"):
        DropEvent.from_bytes(_event(reason=63))


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        ("10.2.3.4", (32, "10.2.3.4")),
        ("10.2.0.0/16", (16, "10.2.0.0")),
        ("0.0.0.0/0", (0, "0.0.0.0")),
    ],
)
def test_prefix_to_key(prefix: str, key: tuple[int, str]) -> None:
    prefixlen, be32 = prefix_to_key(prefix)
    assert (prefixlen, be32_to_ip(be32)) == key


@pytest.mark.parametrize(
    "bad", ["10.2.3.4/16", "10.2.0.0/33", "10.2/16", "10.2.0.0/ 16", "10.2.0.0/", "x/8", ""]
)
def test_bad_prefix_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an IPv4 prefix"):
        prefix_to_key(bad)


# --- lb4 and conntrack packing: struct packers agree with the ctypes mirrors ---


def test_lb4_packers_lay_out_fields_like_the_mirrors() -> None:
    from glia.datapath import lbmaps
    from glia.datapath.structs import (
        glia_lb4_affinity,
        glia_lb4_backend,
        glia_lb4_key,
        glia_lb4_revnat,
        glia_lb4_service,
    )

    key = glia_lb4_key.from_buffer_copy(lbmaps._ADDR_PORT.pack(bytes([10, 96, 0, 10]), 8080, 17, 0))
    assert (be32_to_ip(key.vip), be16_to_int(key.port), key.proto) == ("10.96.0.10", 8080, 17)
    be = glia_lb4_backend.from_buffer_copy(lbmaps._ADDR_PORT.pack(bytes([10, 1, 1, 5]), 53, 6, 0))
    assert (be32_to_ip(be.ip), be16_to_int(be.port), be.proto) == ("10.1.1.5", 53, 6)
    svc = glia_lb4_service.from_buffer_copy(lbmaps._SERVICE.pack(7, 3, 2, 0, 10800))
    assert (svc.svc_id, svc.count, svc.flags, svc.affinity_timeout) == (7, 3, 2, 10800)
    rev = glia_lb4_revnat.from_buffer_copy(lbmaps._REVNAT.pack(bytes([10, 96, 0, 1]), 443, 0))
    assert (be32_to_ip(rev.vip), be16_to_int(rev.port)) == ("10.96.0.1", 443)
    aff = glia_lb4_affinity.from_buffer_copy(lbmaps._AFFINITY.pack(123456789, 9, 0))
    assert (aff.last_used_ns, aff.backend_id) == (123456789, 9)


def test_conntrack_rows_decode_the_mirror_layout() -> None:
    from glia.datapath import ct
    from glia.datapath.structs import glia_ct4_entry, glia_ct4_key

    key = glia_ct4_key(
        saddr=ip_to_be32("10.1.1.5"), daddr=ip_to_be32("10.96.0.10"), proto=6, dir=ct.CT_SERVICE
    )
    key.sport, key.dport = (
        ctypes.c_uint16.from_buffer_copy(port.to_bytes(2, "big")).value for port in (40000, 80)
    )
    entry = glia_ct4_entry(
        expires_ns=5 * 10**9,
        nat_addr=ip_to_be32("10.1.2.9"),
        flags=ct.CT_F_CLOSING,
        tcp_flags=0x11,
        svc_id=4,
    )
    entry.nat_port = ctypes.c_uint16.from_buffer_copy((8080).to_bytes(2, "big")).value
    row = ct._decode(bytes(key), bytes(entry))
    assert row == ct.CTRow(
        "service",
        6,
        "10.1.1.5",
        40000,
        "10.96.0.10",
        80,
        "10.1.2.9",
        8080,
        4,
        5 * 10**9,
        ct.CT_F_CLOSING,
        0x11,
    )
    shown = row.to_dict(now_ns=10**9)
    assert shown["expires_in"] == 4.0 and shown["tcp_flags"] == ["FIN", "ACK"]
    assert (shown["src"], shown["nat"], shown["closing"]) == (
        "10.1.1.5:40000",
        "10.1.2.9:8080",
        True,
    )
