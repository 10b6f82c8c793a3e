/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The two verdicts that end a program without forwarding: drop (counted and
 * reported on the ring buffer) and pass to the node's stack (counted). */
#ifndef GLIA_VERDICT_H
#define GLIA_VERDICT_H

#include "common.h"
#include "config.h"
#include "drop.h"
#include "events.h"
#include "metrics.h"

/* Fills what comes from skb (addresses, ports, interface, length) and puts
 * the event on the ring; the caller set type, reason, direction, identities. */
static __noinline void glia_event_output(struct __sk_buff *skb, struct glia_drop_event *ev)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	__be16 ports[2];

	ev->ts_ns = bpf_ktime_get_ns();
	ev->ifindex = skb->ingress_ifindex;
	ev->l3_proto = (__be16)skb->protocol;
	ev->len = skb->len;
	if (skb->protocol == bpf_htons(ETH_P_IP) && (void *)(ip4 + 1) <= data_end) {
		ev->saddr = ip4->saddr;
		ev->daddr = ip4->daddr;
		ev->proto = ip4->protocol;
		if ((ip4->protocol == IPPROTO_TCP || ip4->protocol == IPPROTO_UDP) &&
		    !(ip4->frag_off & bpf_htons(0x1FFF)) &&
		    bpf_skb_load_bytes(skb, sizeof(struct ethhdr) + ip4->ihl * 4, ports,
				       sizeof(ports)) == 0) {
			ev->sport = ports[0];
			ev->dport = ports[1];
		}
	}
	bpf_ringbuf_output(&glia_events_v1, ev, sizeof(*ev), 0);
}

/* Not inlined: drops are the cold path, and this signature is what puts the
 * event struct and both enums into each object's BTF, where the Python mirror
 * test reads them. The caller fills the identities; the rest comes from skb. */
static __noinline int glia_drop(struct __sk_buff *skb, struct glia_drop_event *ev,
				enum glia_reason reason, enum glia_direction direction)
{
	glia_count(reason, direction, skb->len);
	ev->type = GLIA_EVENT_DROP;
	ev->reason = reason;
	ev->direction = direction;
	glia_event_output(skb, ev);
	return TC_ACT_SHOT;
}

/* An event of `type` with what the caller knows; glia_event_output adds the rest. */
static __always_inline void glia_event_init(struct glia_drop_event *ev, __u8 type,
					    enum glia_reason reason, enum glia_direction direction,
					    __u32 src_identity, __u32 dst_identity)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->reason = reason;
	ev->direction = direction;
	ev->src_identity = src_identity;
	ev->dst_identity = dst_identity;
}

static __always_inline int glia_drop_flow(struct __sk_buff *skb, enum glia_reason reason,
					  enum glia_direction direction, __u32 src_identity,
					  __u32 dst_identity)
{
	struct glia_drop_event ev;

	glia_event_init(&ev, GLIA_EVENT_DROP, reason, direction, src_identity, dst_identity);
	return glia_drop(skb, &ev, reason, direction);
}

/* A policy verdict on the first packet of a connection (policy.h): `reason`
 * is GLIA_REASON_FORWARDED for an allow, GLIA_DROP_POLICY for a deny. */
static __always_inline void glia_policy_event(struct __sk_buff *skb, enum glia_reason reason,
					      enum glia_direction direction, __u32 src_identity,
					      __u32 dst_identity, __u8 match, __u32 cookie)
{
	struct glia_drop_event ev;

	glia_event_init(&ev, GLIA_EVENT_POLICY_VERDICT, reason, direction, src_identity,
			dst_identity);
	ev.match = match;
	ev.rule_cookie = cookie;
	glia_event_output(skb, &ev);
}

static __always_inline void glia_policy_verdict_event(struct __sk_buff *skb,
						      enum glia_direction direction,
						      __u32 src_identity, __u32 dst_identity,
						      __u8 match, __u32 cookie)
{
	glia_policy_event(skb, GLIA_REASON_FORWARDED, direction, src_identity, dst_identity, match,
			  cookie);
}

/* Denied by policy: a verdict event and a drop event (with the match), as
 * `cilium monitor` shows both. */
static __always_inline int glia_drop_policy(struct __sk_buff *skb, enum glia_direction direction,
					    __u32 src_identity, __u32 dst_identity, __u8 match,
					    __u32 cookie)
{
	struct glia_drop_event ev;

	glia_policy_event(skb, GLIA_DROP_POLICY, direction, src_identity, dst_identity, match,
			  cookie);
	glia_event_init(&ev, GLIA_EVENT_DROP, GLIA_DROP_POLICY, direction, src_identity,
			dst_identity);
	ev.match = match;
	ev.rule_cookie = cookie;
	return glia_drop(skb, &ev, GLIA_DROP_POLICY, direction);
}

/* A forwarded packet, when a `glia monitor --type trace` asked for them. */
static __always_inline void glia_trace(struct __sk_buff *skb, enum glia_obs_point point,
				       enum glia_reason reason, enum glia_direction direction,
				       __u32 src_identity, __u32 dst_identity)
{
	const struct glia_config *cfg = glia_get_config();
	struct glia_drop_event ev;

	if (!cfg || !(cfg->flags & GLIA_CFG_F_TRACE))
		return;
	glia_event_init(&ev, GLIA_EVENT_TRACE, reason, direction, src_identity, dst_identity);
	ev.obs_point = point;
	glia_event_output(skb, &ev);
}

static __always_inline int glia_to_stack(struct __sk_buff *skb, enum glia_direction direction)
{
	glia_count(GLIA_REASON_TO_STACK, direction, skb->len);
	glia_trace(skb, GLIA_OBS_TO_STACK, GLIA_REASON_TO_STACK, direction, 0, 0);
	return TC_ACT_OK;
}

#endif /* GLIA_VERDICT_H */
