"""Python mirrors of the BPF maps' structs (bpf/include/*.h) and the map specs.

Each class mirrors one C struct, named and laid out as in C (fields commented
there); a test compares sizes and field offsets with the compiled objects' BTF.
Each :class:`MapSpec` is the frozen description of one pinned map (name with
its layout version, type, key and value); handles in glia.datapath.maps check
a loaded or pinned map against its spec before using it.

``__be32`` fields are held as ``c_uint32`` whose memory is in network order:
convert with :func:`ip_to_be32` / :func:`be32_to_ip`.
"""

from __future__ import annotations

import socket
import struct
from ctypes import Structure, c_uint8, c_uint16, c_uint32, c_uint64, sizeof
from dataclasses import dataclass

from glia.datapath.drop import REASON_MAX, Direction

ETH_ALEN = 6
MacBytes = c_uint8 * ETH_ALEN

# enum bpf_map_type values used by glia
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_SK_STORAGE = 24
BPF_MAP_TYPE_RINGBUF = 27
BPF_F_NO_PREALLOC = 1
BPF_F_NO_COMMON_LRU = 2

# bpf/include/lb.h
LB_MAGLEV_M = 16381  # GLIA_LB_MAGLEV_M: slots of a Maglev table in the map

# enum glia_event_type (bpf/include/events.h)
GLIA_EVENT_DROP = 1
GLIA_EVENT_POLICY_VERDICT = 2
GLIA_EVENT_TRACE = 3
# enum glia_config_flags (bpf/include/config.h)
GLIA_CFG_F_POLICY_VERDICTS = 1
GLIA_CFG_F_TRACE = 2
# bpf/include/policy.h
GLIA_POLICY_F_DENY = 1
GLIA_POLICY_F_L4 = 2
POLICY_L3_PREFIX = 72  # subject, peer, direction: every protocol and port
POLICY_FULL_PREFIX = 96
GLIA_SIGNAL_REFUSED = 1  # bpf/include/signals.h


class glia_endpoint_key(Structure):
    _fields_ = [("ip", c_uint32)]


class glia_endpoint(Structure):
    _fields_ = [
        ("ifindex", c_uint32),
        ("identity", c_uint32),
        ("mac", MacBytes),
        ("node_mac", MacBytes),
        ("flags", c_uint32),
    ]


class glia_ipcache_key(Structure):
    _fields_ = [("prefixlen", c_uint32), ("ip", c_uint32)]


class glia_ipcache_entry(Structure):
    _fields_ = [
        ("identity", c_uint32),
        ("tunnel_endpoint", c_uint32),
        ("cluster_id", c_uint8),
        ("flags", c_uint8),
        ("pad", c_uint16),
    ]


class glia_metrics(Structure):
    _fields_ = [("packets", c_uint64), ("bytes", c_uint64)]


class glia_config(Structure):
    _fields_ = [
        ("node_ip", c_uint32),
        ("vxlan_ifindex", c_uint32),
        ("cluster_id", c_uint32),
        ("flags", c_uint32),
        ("vxlan_port", c_uint16),
        ("pad", c_uint16),
    ]


class glia_drop_event(Structure):
    _fields_ = [
        ("ts_ns", c_uint64),
        ("type", c_uint8),
        ("reason", c_uint8),
        ("direction", c_uint8),
        ("proto", c_uint8),
        ("ifindex", c_uint32),
        ("saddr", c_uint32),
        ("daddr", c_uint32),
        ("sport", c_uint16),
        ("dport", c_uint16),
        ("l3_proto", c_uint16),
        ("pad", c_uint16),
        ("src_identity", c_uint32),
        ("dst_identity", c_uint32),
        ("len", c_uint32),
        ("tunnel_src", c_uint32),
        ("rule_cookie", c_uint32),
        ("match", c_uint8),
        ("obs_point", c_uint8),
        ("pad2", c_uint16),
    ]


# --- policy.h --------------------------------------------------------------


class glia_policy_key(Structure):
    _fields_ = [
        ("prefixlen", c_uint32),
        ("subject", c_uint32),  # host order
        ("peer", c_uint32),  # host order; 0: any
        ("direction", c_uint8),
        ("proto", c_uint8),
        ("dport", c_uint16),  # network order
    ]


class glia_policy_entry(Structure):
    _fields_ = [
        ("flags", c_uint8),
        ("pad1", c_uint8),
        ("pad2", c_uint16),
        ("cookie", c_uint32),
    ]


class glia_policy_subject(Structure):
    _fields_ = [("enforced", c_uint32), ("pad", c_uint32)]


# --- signals.h -------------------------------------------------------------


class glia_signal(Structure):
    _fields_ = [
        ("ts_ns", c_uint64),
        ("type", c_uint8),
        ("pad", c_uint8 * 3),
        ("addr", c_uint32),
        ("peer", c_uint32),
        ("port", c_uint16),
        ("peer_port", c_uint16),
    ]


# --- lb.h ------------------------------------------------------------------


class glia_lb4_key(Structure):
    _fields_ = [("vip", c_uint32), ("port", c_uint16), ("proto", c_uint8), ("pad", c_uint8)]


class glia_lb4_service(Structure):
    _fields_ = [
        ("svc_id", c_uint32),
        ("count", c_uint16),
        ("flags", c_uint8),
        ("pad", c_uint8),
        ("affinity_timeout", c_uint32),
    ]


class glia_lb4_slot_key(Structure):
    _fields_ = [("svc_id", c_uint32), ("slot", c_uint32)]


class glia_lb4_slot(Structure):
    _fields_ = [("backend_id", c_uint32)]


class glia_lb4_backend(Structure):
    _fields_ = [("ip", c_uint32), ("port", c_uint16), ("proto", c_uint8), ("flags", c_uint8)]


class glia_lb4_revnat(Structure):
    _fields_ = [("vip", c_uint32), ("port", c_uint16), ("pad", c_uint16)]


class glia_lb4_sock(Structure):
    _fields_ = [
        ("backend", c_uint32),
        ("backend_port", c_uint16),
        ("pad", c_uint16),
        ("vip", c_uint32),
        ("vip_port", c_uint16),
        ("pad2", c_uint16),
    ]


class glia_lb4_rsk_key(Structure):
    _fields_ = [("cookie", c_uint64), ("addr", c_uint32), ("port", c_uint16), ("pad", c_uint16)]


class glia_lb4_maglev(Structure):
    _fields_ = [("backend_ids", c_uint32 * LB_MAGLEV_M)]


class glia_lb4_aff_key(Structure):
    _fields_ = [("client", c_uint32), ("svc_id", c_uint32)]


class glia_lb4_affinity(Structure):
    _fields_ = [("last_used_ns", c_uint64), ("backend_id", c_uint32), ("pad", c_uint32)]


class glia_lb4_affm_key(Structure):
    _fields_ = [("backend_id", c_uint32), ("svc_id", c_uint32)]


class glia_lb4_affm(Structure):
    _fields_ = [("flags", c_uint32)]


# --- ct.h ------------------------------------------------------------------


class glia_ct4_key(Structure):
    _fields_ = [
        ("saddr", c_uint32),
        ("daddr", c_uint32),
        ("sport", c_uint16),
        ("dport", c_uint16),
        ("proto", c_uint8),
        ("dir", c_uint8),
        ("pad", c_uint16),
    ]


class glia_ct4_entry(Structure):
    _fields_ = [
        ("expires_ns", c_uint64),
        ("nat_addr", c_uint32),
        ("nat_port", c_uint16),
        ("flags", c_uint8),
        ("tcp_flags", c_uint8),
        ("svc_id", c_uint32),
        ("pad", c_uint32),
    ]


class sk_buff(Structure):
    """``struct __sk_buff``: the context passed to BPF_PROG_TEST_RUN."""

    _fields_ = [
        ("len", c_uint32),
        ("pkt_type", c_uint32),
        ("mark", c_uint32),
        ("queue_mapping", c_uint32),
        ("protocol", c_uint32),
        ("vlan_present", c_uint32),
        ("vlan_tci", c_uint32),
        ("vlan_proto", c_uint32),
        ("priority", c_uint32),
        ("ingress_ifindex", c_uint32),
        ("ifindex", c_uint32),
        ("tc_index", c_uint32),
        ("cb", c_uint32 * 5),
        ("hash", c_uint32),
        ("tc_classid", c_uint32),
        ("data", c_uint32),
        ("data_end", c_uint32),
        ("napi_id", c_uint32),
        ("family", c_uint32),
        ("remote_ip4", c_uint32),
        ("local_ip4", c_uint32),
        ("remote_ip6", c_uint32 * 4),
        ("local_ip6", c_uint32 * 4),
        ("remote_port", c_uint32),
        ("local_port", c_uint32),
        ("data_meta", c_uint32),
        ("flow_keys", c_uint64),
        ("tstamp", c_uint64),
        ("wire_len", c_uint32),
        ("gso_segs", c_uint32),
        ("sk", c_uint64),
        ("gso_size", c_uint32),
        ("tstamp_type", c_uint8),
        ("_pad_tstamp_type", c_uint8 * 3),
        ("hwtstamp", c_uint64),
    ]


# Every mirror and its C struct name, for the BTF comparison test.
MIRRORS: dict[type[Structure], str] = {
    glia_endpoint_key: "glia_endpoint_key",
    glia_endpoint: "glia_endpoint",
    glia_ipcache_key: "glia_ipcache_key",
    glia_ipcache_entry: "glia_ipcache_entry",
    glia_metrics: "glia_metrics",
    glia_config: "glia_config",
    glia_drop_event: "glia_drop_event",
    glia_signal: "glia_signal",
    glia_lb4_key: "glia_lb4_key",
    glia_lb4_service: "glia_lb4_service",
    glia_lb4_slot_key: "glia_lb4_slot_key",
    glia_lb4_slot: "glia_lb4_slot",
    glia_lb4_backend: "glia_lb4_backend",
    glia_lb4_revnat: "glia_lb4_revnat",
    glia_lb4_rsk_key: "glia_lb4_rsk_key",
    glia_lb4_sock: "glia_lb4_sock",
    glia_lb4_maglev: "glia_lb4_maglev",
    glia_lb4_aff_key: "glia_lb4_aff_key",
    glia_lb4_affinity: "glia_lb4_affinity",
    glia_lb4_affm_key: "glia_lb4_affm_key",
    glia_lb4_affm: "glia_lb4_affm",
    glia_ct4_key: "glia_ct4_key",
    glia_ct4_entry: "glia_ct4_entry",
    sk_buff: "__sk_buff",
}


@dataclass(frozen=True, slots=True)
class MapSpec:
    """One pinned map as declared in bpf/include/<map>.h."""

    name: str  # pin and kernel name, <= 15 characters, versioned
    map_type: int
    key: type[Structure] | type[c_uint32] | None  # None for the ring buffer
    value: type[Structure] | None
    max_entries: int
    percpu: bool = False
    flags: int = 0  # map_flags (BPF_F_NO_PREALLOC)

    @property
    def key_size(self) -> int:
        return 0 if self.key is None else sizeof(self.key)

    @property
    def value_size(self) -> int:
        return 0 if self.value is None else sizeof(self.value)


ENDPOINTS = MapSpec("glia_endpts_v1", BPF_MAP_TYPE_HASH, glia_endpoint_key, glia_endpoint, 16384)
IPCACHE = MapSpec(
    "glia_ipcache_v1",
    BPF_MAP_TYPE_LPM_TRIE,
    glia_ipcache_key,
    glia_ipcache_entry,
    524288,
    flags=BPF_F_NO_PREALLOC,
)
METRICS = MapSpec(
    "glia_metrics_v1",
    BPF_MAP_TYPE_PERCPU_ARRAY,
    c_uint32,
    glia_metrics,
    REASON_MAX * len(Direction),
    percpu=True,
)
CONFIG = MapSpec("glia_config_v2", BPF_MAP_TYPE_ARRAY, c_uint32, glia_config, 1)
EVENTS = MapSpec("glia_events_v1", BPF_MAP_TYPE_RINGBUF, None, None, 256 * 1024)
SIGNALS = MapSpec("glia_signals_v1", BPF_MAP_TYPE_RINGBUF, None, None, 64 * 1024)
POLICY = MapSpec(
    "glia_policy_v1",
    BPF_MAP_TYPE_LPM_TRIE,
    glia_policy_key,
    glia_policy_entry,
    1048576,
    flags=BPF_F_NO_PREALLOC,
)
POLICY_SUBJECTS = MapSpec(
    "glia_polsub_v1",
    BPF_MAP_TYPE_HASH,
    c_uint32,
    glia_policy_subject,
    16384,
    flags=BPF_F_NO_PREALLOC,
)


def _lb_hash(
    name: str, key: type[Structure] | type[c_uint32], value: type[Structure], n: int
) -> MapSpec:
    return MapSpec(name, BPF_MAP_TYPE_HASH, key, value, n, flags=BPF_F_NO_PREALLOC)


LB_SERVICES = _lb_hash("glia_lb4_svc_v1", glia_lb4_key, glia_lb4_service, 262144)
LB_SLOTS = _lb_hash("glia_lb4_slt_v1", glia_lb4_slot_key, glia_lb4_slot, 524288)
LB_MAGLEV = _lb_hash("glia_lb4_mgl_v1", c_uint32, glia_lb4_maglev, 2048)
LB_BACKENDS = _lb_hash("glia_lb4_be_v1", c_uint32, glia_lb4_backend, 131072)
LB_REVNAT = _lb_hash("glia_lb4_rev_v1", c_uint32, glia_lb4_revnat, 262144)
LB_AFFINITY = MapSpec(
    "glia_lb4_aff_v1", BPF_MAP_TYPE_LRU_HASH, glia_lb4_aff_key, glia_lb4_affinity, 65536
)
LB_AFFMATCH = _lb_hash("glia_lb4_afm_v1", glia_lb4_affm_key, glia_lb4_affm, 262144)
# Per-CPU LRU lists: with the common list every insert (and the delete of a
# stale reply entry on a pod SYN) takes a global lock, which showed as the p99
# tail of short connections (bench/services.py).
CT4 = MapSpec(
    "glia_ct4_v2",
    BPF_MAP_TYPE_LRU_HASH,
    glia_ct4_key,
    glia_ct4_entry,
    262144,
    flags=BPF_F_NO_COMMON_LRU,
)
# Socket-level LB's reverse index (sock.bpf.c): per socket, like conntrack;
# socket-local storage for connected sockets (no max_entries: one per socket),
# an LRU keyed by socket cookie for unconnected UDP.
LB_SOCK = MapSpec(
    "glia_lb4_sks_v1", BPF_MAP_TYPE_SK_STORAGE, c_uint32, glia_lb4_sock, 0, flags=BPF_F_NO_PREALLOC
)
LB_RSK = MapSpec(
    "glia_lb4_rsk_v1",
    BPF_MAP_TYPE_LRU_HASH,
    glia_lb4_rsk_key,
    glia_lb4_revnat,
    262144,
    flags=BPF_F_NO_COMMON_LRU,
)
LB_MAPS = (LB_SERVICES, LB_SLOTS, LB_MAGLEV, LB_BACKENDS, LB_REVNAT, LB_AFFINITY, LB_AFFMATCH)
ALL_MAPS = (
    ENDPOINTS,
    IPCACHE,
    METRICS,
    CONFIG,
    EVENTS,
    SIGNALS,
    *LB_MAPS,
    CT4,
    LB_SOCK,
    LB_RSK,
    POLICY,
    POLICY_SUBJECTS,
)
# Pins of earlier layout versions, which no program of this version uses: the
# loader removes them (programs of the old version still attached keep their
# maps until they are replaced, since a pin is only one reference).
RETIRED_MAPS = ("glia_config_v1", "glia_ct4_v1")


def ip_to_be32(ip: str) -> int:
    """An IPv4 address as the c_uint32 whose memory holds it in network order."""
    try:
        packed = socket.inet_pton(socket.AF_INET, ip)  # strict dotted quad, and fast
    except (OSError, TypeError):
        raise ValueError(f"{ip!r} is not an IPv4 address") from None
    return int(struct.unpack("=I", packed)[0])


def prefix_to_key(prefix: str) -> tuple[int, int]:
    """("10.2.0.0/16" or "10.2.3.4") -> (prefix length, network as be32); host bits refused."""
    ip, slash, length = prefix.partition("/")
    try:
        if slash and not length.isdigit():
            raise ValueError(length)
        prefixlen = int(length) if slash else 32
        packed = socket.inet_pton(socket.AF_INET, ip)
    except (OSError, ValueError):
        raise ValueError(f"{prefix!r} is not an IPv4 prefix") from None
    if not 0 <= prefixlen <= 32:
        raise ValueError(f"{prefix!r} is not an IPv4 prefix: length must be 0..32")
    host_bits = int.from_bytes(packed, "big") & ((1 << (32 - prefixlen)) - 1)
    if host_bits:
        raise ValueError(f"{prefix!r} is not an IPv4 prefix: it has host bits set")
    return prefixlen, int(struct.unpack("=I", packed)[0])


def be32_to_ip(value: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", value))


def int_to_be16(value: int) -> int:
    """A port number as the c_uint16 whose memory holds it in network order."""
    return int(struct.unpack("=H", struct.pack("!H", value))[0])


def be16_to_int(value: int) -> int:
    """A ``__be16`` read as a native c_uint16, back to its numeric value."""
    return int(struct.unpack("!H", struct.pack("=H", value))[0])


def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raw = b""
    if len(parts) != ETH_ALEN or len(raw) != ETH_ALEN or any(len(p) != 2 for p in parts):
        raise ValueError(f"{mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    return raw


def mac_to_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)
