/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_ipcache_v1: where every known IP or prefix lives and which identity it
 * carries (all clusters of the mesh). Longest-prefix match. Written by the
 * agent from the kvstore; read to pick the tunnel endpoint. Python mirror:
 * glia.datapath.nodemaps.IPCacheMap. */
#ifndef GLIA_IPCACHE_H
#define GLIA_IPCACHE_H

#include "common.h"

#define GLIA_IPCACHE_MAX 524288

struct glia_ipcache_key {
	__u32 prefixlen;                 /* LPM prefix length in bits, 0..32 */
	__be32 ip;                       /* IPv4 prefix, network order */
};

struct glia_ipcache_entry {
	__u32 identity;                  /* security identity of the IP */
	__be32 tunnel_endpoint;          /* node IP hosting it, network order; 0 = not tunnelled */
	__u8 cluster_id;                 /* cluster the IP belongs to */
	__u8 flags;                      /* reserved, 0 */
	__u16 pad;                       /* explicit padding, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GLIA_IPCACHE_MAX);
	__type(key, struct glia_ipcache_key);
	__type(value, struct glia_ipcache_entry);
	__uint(map_flags, BPF_F_NO_PREALLOC);  /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_ipcache_v1 SEC(".maps");

static __always_inline const struct glia_ipcache_entry *glia_lookup_ipcache(__be32 ip)
{
	struct glia_ipcache_key key = { .prefixlen = 32, .ip = ip };

	return bpf_map_lookup_elem(&glia_ipcache_v1, &key);
}

#endif /* GLIA_IPCACHE_H */
