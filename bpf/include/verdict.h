/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The two verdicts that end a program without forwarding: drop (counted and
 * reported on the ring buffer) and pass to the node's stack (counted). */
#ifndef GLIA_VERDICT_H
#define GLIA_VERDICT_H

#include "common.h"
#include "drop.h"
#include "events.h"
#include "metrics.h"

/* Not inlined: drops are the cold path, and this signature is what puts the
 * event struct and both enums into each object's BTF, where the Python mirror
 * test reads them. The caller fills the identities; the rest comes from skb. */
static __noinline int glia_drop(struct __sk_buff *skb, struct glia_drop_event *ev,
				enum glia_reason reason, enum glia_direction direction)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	__be16 ports[2];

	glia_count(reason, direction, skb->len);
	ev->ts_ns = bpf_ktime_get_ns();
	ev->type = GLIA_EVENT_DROP;
	ev->reason = reason;
	ev->direction = direction;
	ev->ifindex = skb->ingress_ifindex;
	ev->l3_proto = (__be16)skb->protocol;
	ev->len = skb->len;
	if (skb->protocol == bpf_htons(ETH_P_IP) && (void *)(ip4 + 1) <= data_end) {
		ev->saddr = ip4->saddr;
		ev->daddr = ip4->daddr;
		ev->proto = ip4->protocol;
		if ((ip4->protocol == IPPROTO_TCP || ip4->protocol == IPPROTO_UDP) &&
		    bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip4->ihl * 4, ports,
				       sizeof(ports)) == 0) {
			ev->sport = ports[0];
			ev->dport = ports[1];
		}
	}
	bpf_ringbuf_output(&glia_events_v1, ev, sizeof(*ev), 0);
	return TC_ACT_SHOT;
}

static __always_inline int glia_drop_flow(struct __sk_buff *skb, enum glia_reason reason,
					  enum glia_direction direction, __u32 src_identity,
					  __u32 dst_identity)
{
	struct glia_drop_event ev;

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.src_identity = src_identity;
	ev.dst_identity = dst_identity;
	return glia_drop(skb, &ev, reason, direction);
}

static __always_inline int glia_to_stack(struct __sk_buff *skb, enum glia_direction direction)
{
	glia_count(GLIA_REASON_TO_STACK, direction, skb->len);
	return TC_ACT_OK;
}

#endif /* GLIA_VERDICT_H */
