"""Python mirrors of the BPF maps' structs (bpf/include/*.h) and the constants shared with C.

Each class mirrors one C struct, named and laid out as in C (fields commented
there); a test compares sizes and field offsets with the compiled objects' BTF
(:data:`MIRRORS`). The maps these structs are keys and values of are described
in glia.datapath.mapspecs.

``__be32`` fields are held as ``c_uint32`` whose memory is in network order:
convert with glia.datapath.addrs (``ip_to_be32`` / ``be32_to_ip``).
"""

from __future__ import annotations

from ctypes import Structure, c_uint8, c_uint16, c_uint32, c_uint64

from glia.datapath.addrs import ETH_ALEN

MacBytes = c_uint8 * ETH_ALEN

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
