/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_config_v2: the node's settings, one entry written by the agent
 * (Datapath.configure), so a restarted agent reconfigures without reloading
 * programs. A zeroed entry (not configured yet) disables tunnelling and the
 * VXLAN port guard.
 *
 * v2 added vxlan_port (v1 had node_ip, vxlan_ifindex, cluster_id, flags: 16
 * bytes). Programs of the previous version keep their v1 map until the agent
 * attaches the new ones; the loader removes the v1 pin (RETIRED_MAPS). */
#ifndef GLIA_CONFIG_H
#define GLIA_CONFIG_H

#include "common.h"

/* Set by the agent while a `glia monitor` asks for these events (events.h). */
enum glia_config_flags {
	GLIA_CFG_F_POLICY_VERDICTS = 1,  /* report allowed new connections, not only denies */
	GLIA_CFG_F_TRACE = 2,            /* report every forwarded packet */
};

struct glia_config {
	__be32 node_ip;       /* this node's underlay IP, network order: the tunnel endpoint */
	__u32 vxlan_ifindex;  /* ifindex of glia_vxlan in the node namespace; 0 = no tunnel */
	__u32 cluster_id;     /* this node's cluster id (1..255) */
	__u32 flags;          /* enum glia_config_flags */
	__be16 vxlan_port;    /* UDP port of glia_vxlan, network order: pods may not send to it */
	__u16 pad;            /* explicit padding, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct glia_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_config_v2 SEC(".maps");

static __always_inline const struct glia_config *glia_get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&glia_config_v2, &zero);
}

#endif /* GLIA_CONFIG_H */
