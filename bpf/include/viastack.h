/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Replies through the node's stack, for connections the stack delivered.
 *
 * A host port (`podman run -p`, the portmap plugin: docs/hostport.md) is the
 * kernel's DNAT in the node's namespace: a pod connecting to NODE_IP:HOSTPORT
 * reaches the stack, which rewrites the destination to the backend pod and
 * routes the packet to its veth (to_endpoint). The backend's replies are
 * addressed to the client pod; delivered pod to pod (redirect_peer, VXLAN)
 * they would skip the stack, the NAT would never be undone and the client
 * would get an answer from an address it never asked. So to_endpoint notes
 * every connection from a pod that the stack delivers (GLIA_CT_VIA_STACK,
 * keyed by its reply tuple) and from_endpoint hands packets of such tuples
 * to the stack instead of to the pod. Pods never reach pods through the stack
 * otherwise (from_endpoint delivers them), so only NATed connections are
 * noted; connections from the node or from outside the mesh answer through
 * the stack anyway.
 */
#ifndef GLIA_VIASTACK_H
#define GLIA_VIASTACK_H

#include "common.h"
#include "ct.h"
#include "policy.h"

/* to_endpoint: `skb` (from the stack, to a pod) belongs to a connection from
 * a pod; note its reply tuple. */
static __always_inline void glia_via_stack_note(struct __sk_buff *skb)
{
	struct glia_ct4_entry entry = {}, *e;
	struct glia_ct4_key t, key;
	__u8 tcp_flags;
	__u64 now;

	if (glia_policy_tuple(skb, &t, &tcp_flags) < 0)
		return;
	key.saddr = t.daddr;
	key.daddr = t.saddr;
	key.sport = t.dport;
	key.dport = t.sport;
	key.proto = t.proto;
	key.dir = GLIA_CT_VIA_STACK;
	key.pad = 0;
	now = bpf_ktime_get_ns();
	e = bpf_map_lookup_elem(&glia_ct4_v2, &key);
	if (e && e->expires_ns > now) {
		glia_ct_touch_one(e, t.proto, tcp_flags, 0, now);
		return;
	}
	if (tcp_flags & (GLIA_TCP_FIN | GLIA_TCP_RST))
		entry.flags = GLIA_CT_F_CLOSING;
	entry.expires_ns = now + glia_ct_lifetime(t.proto, entry.flags);
	bpf_map_update_elem(&glia_ct4_v2, &key, &entry, BPF_ANY);
}

/* from_endpoint: 1 when `skb` (a pod's packet to a pod) answers a connection
 * the stack delivered, so it must go back through the stack. */
static __always_inline int glia_via_stack(struct __sk_buff *skb)
{
	struct glia_ct4_entry *e;
	struct glia_ct4_key t;
	__u8 tcp_flags;
	__u64 now;

	if (glia_policy_tuple(skb, &t, &tcp_flags) < 0)
		return 0;
	t.dir = GLIA_CT_VIA_STACK;
	e = bpf_map_lookup_elem(&glia_ct4_v2, &t);
	if (!e)
		return 0;
	now = bpf_ktime_get_ns();
	if (e->expires_ns <= now)
		return 0;
	glia_ct_touch_one(e, t.proto, tcp_flags, GLIA_CT_F_SEEN_REPLY, now);
	return 1;
}

#endif /* GLIA_VIASTACK_H */
