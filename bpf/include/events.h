/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_events_v1: a ring buffer of datapath events for `glia monitor`
 * (glia.datapath.events). Only drops so far; `type` leaves room for policy
 * verdicts and traces. Events are best effort: a full buffer loses them, the
 * metrics map still counts.
 *
 * tunnel_src was explicit padding (0) before the overlay trust checks used it:
 * same size and offsets, so no new map version; older readers ignore it. */
#ifndef GLIA_EVENTS_H
#define GLIA_EVENTS_H

#include "common.h"

#define GLIA_EVENTS_BYTES (256 * 1024)

enum glia_event_type {
	GLIA_EVENT_DROP = 1,
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
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GLIA_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_events_v1 SEC(".maps");

#endif /* GLIA_EVENTS_H */
