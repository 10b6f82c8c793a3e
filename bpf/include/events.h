/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_events_v1: a ring buffer of datapath events for `glia monitor`
 * (glia.datapath.events; the agent is its one reader and fans events out).
 * Every kind has the layout of struct glia_drop_event; `type` tells them
 * apart: drops (always), policy verdicts (denies always, allows of new
 * connections when GLIA_CFG_F_POLICY_VERDICTS is set) and traces of forwarded
 * packets (when GLIA_CFG_F_TRACE is set). Events are best effort: a full
 * buffer loses them, the metrics map still counts.
 *
 * rule_cookie, match and obs_point were added at the end (the record grew
 * from 48 to 56 bytes; ring records carry their size, readers take the
 * fields they know).
 *
 * tunnel_src was explicit padding (0) before the overlay trust checks used it:
 * same size and offsets, so no new map version; older readers ignore it. */
#ifndef GLIA_EVENTS_H
#define GLIA_EVENTS_H

#include "common.h"

#define GLIA_EVENTS_BYTES (256 * 1024)

enum glia_event_type {
	GLIA_EVENT_DROP = 1,
	GLIA_EVENT_POLICY_VERDICT = 2,
	GLIA_EVENT_TRACE = 3,
};

/* Where a trace event was taken (obs_point). */
enum glia_obs_point {
	GLIA_OBS_NONE = 0,
	GLIA_OBS_TO_ENDPOINT = 1,        /* delivered to a local endpoint */
	GLIA_OBS_TO_OVERLAY = 2,         /* sent into the tunnel to another node */
	GLIA_OBS_TO_STACK = 3,           /* handed to the node's IP stack */
	GLIA_OBS_TO_NETDEV = 4,          /* sent out of the node by its FIB route (forward.h) */
};

struct glia_drop_event {
	__u64 ts_ns;                     /* bpf_ktime_get_ns() at the drop */
	__u8 type;                       /* GLIA_EVENT_DROP */
	__u8 reason;                     /* enum glia_reason */
	__u8 direction;                  /* enum glia_direction */
	__u8 proto;                      /* IPv4 protocol, 0 when not IPv4 */
	__u32 ifindex;                   /* interface the packet came in on */
	__be32 saddr;                    /* IPv4 source, network order (0 when not IPv4) */
	__be32 daddr;                    /* IPv4 destination, network order */
	__be16 sport;                    /* TCP/UDP source port, network order, else 0 */
	__be16 dport;                    /* TCP/UDP destination port, network order, else 0 */
	__be16 l3_proto;                 /* ethertype, network order */
	__u16 pad;                       /* explicit padding, 0 */
	__u32 src_identity;              /* source identity if known, else 0 */
	__u32 dst_identity;              /* destination identity if known, else 0 */
	__u32 len;                       /* skb->len */
	__be32 tunnel_src;               /* overlay drops: outer (VXLAN) source, network order, else 0 */
	__u32 rule_cookie;               /* policy: the deciding entry's cookie (agent's rule table), else 0 */
	__u8 match;                      /* policy: enum glia_policy_match (policy.h), else 0 */
	__u8 obs_point;                  /* traces: enum glia_obs_point, else 0 */
	__u16 pad2;                      /* explicit padding, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GLIA_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_events_v1 SEC(".maps");

#endif /* GLIA_EVENTS_H */
