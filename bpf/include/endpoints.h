/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_endpts_v1: the endpoints (pods) of this node, by IP. Written by the
 * agent when it plumbs an endpoint; read for anti-spoofing (source) and local
 * delivery (destination). Python mirror: glia.datapath.nodemaps.EndpointMap.
 *
 * Map names stay within 15 characters so the kernel's name (BPF_OBJ_NAME_LEN)
 * and the pin name agree, version suffix included. */
#ifndef GLIA_ENDPOINTS_H
#define GLIA_ENDPOINTS_H

#include "common.h"

#define GLIA_ENDPOINTS_MAX 16384

struct glia_endpoint_key {
	__be32 ip;                       /* endpoint IPv4, network order */
};

struct glia_endpoint {
	__u32 ifindex;                   /* host-side veth ifindex (node namespace) */
	__u32 identity;                  /* security identity of the endpoint */
	__u8 mac[GLIA_ETH_ALEN];         /* endpoint's own MAC (inside the pod) */
	__u8 node_mac[GLIA_ETH_ALEN];    /* host-side veth MAC: the pod's gateway MAC */
	__u32 flags;                     /* reserved, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_ENDPOINTS_MAX);
	__type(key, struct glia_endpoint_key);
	__type(value, struct glia_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_endpts_v1 SEC(".maps");

static __always_inline const struct glia_endpoint *glia_lookup_endpoint(__be32 ip)
{
	struct glia_endpoint_key key = { .ip = ip };

	return bpf_map_lookup_elem(&glia_endpts_v1, &key);
}

#endif /* GLIA_ENDPOINTS_H */
