"""The pinned BPF maps' specs: name with layout version, type, key, value, size.

Each :class:`MapSpec` is the frozen description of one pinned map as declared
in bpf/include/<map>.h, its key and value being the mirrors in
glia.datapath.structs; handles in glia.datapath.maps check a loaded or pinned
map against its spec before using it. The loader creates, pins and retires
maps from :data:`ALL_MAPS` and :data:`RETIRED_MAPS`; a test compares them with
the compiled objects' map definitions.
"""

from __future__ import annotations

from ctypes import Structure, c_uint32, sizeof
from dataclasses import dataclass

from glia.datapath.drop import REASON_MAX, Direction
from glia.datapath.structs import (
    glia_config,
    glia_ct4_entry,
    glia_ct4_key,
    glia_endpoint,
    glia_endpoint_key,
    glia_ipcache_entry,
    glia_ipcache_key,
    glia_lb4_aff_key,
    glia_lb4_affinity,
    glia_lb4_affm,
    glia_lb4_affm_key,
    glia_lb4_backend,
    glia_lb4_key,
    glia_lb4_maglev,
    glia_lb4_revnat,
    glia_lb4_rsk_key,
    glia_lb4_service,
    glia_lb4_slot,
    glia_lb4_slot_key,
    glia_lb4_sock,
    glia_metrics,
    glia_policy_entry,
    glia_policy_key,
    glia_policy_subject,
)

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
