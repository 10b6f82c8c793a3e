/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_ct4_v2: connection tracking, on the node where an endpoint sends or
 * receives. Python mirror: glia.datapath.ct (listing and garbage collection).
 *
 * The first packet of a connection to a VIP creates two entries:
 * - SERVICE, keyed by the client's tuple to the VIP, holds the chosen
 *   backend's address and port: later packets follow it even when the backend
 *   leaves the service's slots or the backends map (withdrawn backends keep
 *   their connections; nothing is cut).
 * - REPLY, keyed by the backend -> client tuple, holds the VIP and port: the
 *   reverse NAT applied when a reply is delivered to the client
 *   (glia_deliver_local, from both from_endpoint and from_overlay).
 * Every connection of an endpoint (policy.h) also gets one entry per side
 * where it is judged, keyed by the tuple of its first packet:
 * - EGRESS, where the sending endpoint let it out;
 * - INGRESS, where the receiving endpoint let it in.
 * A packet whose tuple has the entry of its side belongs to an allowed
 * connection; one whose reversed tuple has the entry of the other side is a
 * reply. Either passes without a policy lookup, so replies of allowed
 * connections pass and a policy change leaves open connections alone.
 * Service connections are judged after DNAT (the backend), so their EGRESS
 * entry and the backend's INGRESS entry hold the backend's address.
 * An INGRESS entry of a connection from a pod that the node's stack handed
 * to a pod (a kernel DNAT, e.g. a chained portmap) carries GLIA_CT_F_VIA_STACK: the replies,
 * which find that entry anyway, go back through the stack, which undoes the
 * NAT (policy.h).
 * An INGRESS entry of a connection from_netdev load-balanced to a pod (a host
 * port in eBPF, lb.h) carries GLIA_CT_F_HOSTPORT: from_endpoint reverse-NATs
 * the replies (REPLY entry: source back to address:host port) and sends them
 * out itself (fib lookup; the node's stack would drop them as martians, their
 * source being the node's own address).
 * All carry an expiry (bpf_ktime_get_ns, CLOCK_MONOTONIC); the datapath
 * treats an expired entry as absent, glia.datapath.ct.ct_gc deletes them, and
 * the LRU evicts the oldest when full.
 */
#ifndef GLIA_CT_H
#define GLIA_CT_H

#include "common.h"
#include "drop.h"
#include "nat.h"

#define GLIA_CT_MAX 262144

#define GLIA_NSEC 1000000000ULL
#define GLIA_CT_LIFETIME_TCP (21600 * GLIA_NSEC)   /* established TCP (reply seen) */
#define GLIA_CT_LIFETIME_SYN (60 * GLIA_NSEC)      /* TCP before any reply */
#define GLIA_CT_LIFETIME_NONTCP (60 * GLIA_NSEC)   /* UDP, since the last packet */
#define GLIA_CT_LIFETIME_CLOSE (10 * GLIA_NSEC)    /* TCP after FIN or RST */
/* Expiries move forward at most this often, so busy flows do not write their
 * entries (and bounce their cache lines between CPUs) on every packet. */
#define GLIA_CT_REFRESH (1 * GLIA_NSEC)

enum glia_ct_dir {
	GLIA_CT_SERVICE = 1,             /* client -> VIP; value: the backend */
	GLIA_CT_REPLY = 2,               /* backend -> client; value: the VIP */
	GLIA_CT_EGRESS = 3,              /* first packet's tuple, allowed out of its sender */
	GLIA_CT_INGRESS = 4,             /* first packet's tuple, allowed into its receiver */
	/* 5 was VIA_STACK (a separate entry per host-port connection), now a flag of
	 * INGRESS entries; left unused so old entries of a pinned map mean nothing. */
};

enum glia_ct_flags {
	GLIA_CT_F_SEEN_REPLY = 1,        /* a reply was delivered to the client */
	GLIA_CT_F_CLOSING = 2,           /* TCP FIN or RST seen: short lifetime */
	GLIA_CT_F_HAIRPIN = 4,           /* the client is its own backend (see below) */
	GLIA_CT_F_VIA_STACK = 8,         /* INGRESS: from a pod, delivered by the node's stack
					  * (a host port's DNAT): replies go through the stack */
	GLIA_CT_F_HOSTPORT = 16,         /* INGRESS: from outside the node to a host port,
					  * DNATed by from_netdev: replies reverse-NATed and
					  * sent out by from_endpoint */
};

/* Hairpin: a pod whose connection to a VIP lands on itself would see its own
 * address as the source, which its IP stack refuses as martian. Such
 * connections are also SNATed to this link-local address (Cilium's choice);
 * the pod answers it through its default route, and from_endpoint hands the
 * reply back with VIP:port as source. */
#define GLIA_HAIRPIN_IP 0xA9FE2A01  /* 169.254.42.1, host order */

struct glia_ct4_key {
	__be32 saddr;                    /* source IPv4, network order */
	__be32 daddr;                    /* destination IPv4, network order */
	__be16 sport;                    /* source port, network order */
	__be16 dport;                    /* destination port, network order */
	__u8 proto;                      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;                        /* enum glia_ct_dir */
	__u16 pad;                       /* explicit padding, 0 */
};

struct glia_ct4_entry {
	__u64 expires_ns;                /* bpf_ktime_get_ns() after which the entry is dead */
	__be32 nat_addr;                 /* SERVICE: backend IP; REPLY: the VIP (network order) */
	__be16 nat_port;                 /* SERVICE: backend port; REPLY: the VIP's port */
	__u8 flags;                      /* enum glia_ct_flags */
	__u8 tcp_flags;                  /* TCP flags seen in this direction, ORed */
	__u32 svc_id;                    /* service id (reverse-NAT index) of the frontend */
	__u32 pad;                       /* explicit padding, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GLIA_CT_MAX);
	/* per-CPU LRU lists: no global lock on every insert (v2: v1 had the
	 * common list, which made the p99 of short connections) */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct glia_ct4_key);
	__type(value, struct glia_ct4_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_ct4_v2 SEC(".maps");

static __always_inline __u64 glia_ct_lifetime(__u8 proto, __u8 flags)
{
	if (proto != IPPROTO_TCP)
		return GLIA_CT_LIFETIME_NONTCP;
	if (flags & GLIA_CT_F_CLOSING)
		return GLIA_CT_LIFETIME_CLOSE;
	if (flags & GLIA_CT_F_SEEN_REPLY)
		return GLIA_CT_LIFETIME_TCP;
	return GLIA_CT_LIFETIME_SYN;
}

/* A packet of the connection went by: update flags and expiry of `e`. 1 when
 * its flags or expiry changed (then a twin entry needs the same); the TCP
 * flags seen are this direction's own, so new ones alone do not touch the
 * twin. Nothing is written when nothing changes. */
static __always_inline int glia_ct_touch_one(struct glia_ct4_entry *e, __u8 proto, __u8 tcp_flags,
					     __u8 add_flags, __u64 now)
{
	__u8 flags = e->flags | add_flags;
	__u64 expires;

	if (tcp_flags & ~e->tcp_flags)
		e->tcp_flags |= tcp_flags;
	if (tcp_flags & (GLIA_TCP_FIN | GLIA_TCP_RST))
		flags |= GLIA_CT_F_CLOSING;
	expires = now + glia_ct_lifetime(proto, flags);
	if (flags == e->flags && expires < e->expires_ns + GLIA_CT_REFRESH)
		return 0;
	e->flags = flags;
	e->expires_ns = expires;
	return 1;
}

/* glia_ct_touch_one, and when that changes flags or expiry, the same flags and expiry
 * for its twin entry (`twin` is its key), so both directions live and die
 * together. */
static __always_inline void glia_ct_touch(struct glia_ct4_entry *e, const struct glia_ct4_key *twin,
					  __u8 proto, __u8 tcp_flags, __u8 add_flags, __u64 now)
{
	struct glia_ct4_entry *other;

	if (!glia_ct_touch_one(e, proto, tcp_flags, add_flags, now))
		return;
	other = bpf_map_lookup_elem(&glia_ct4_v2, twin);
	if (other) {
		other->flags = e->flags;
		other->expires_ns = e->expires_ns;
	}
}

/* Policy conntrack (policy.h): 1 when the packet with tuple `t` (dir ignored)
 * belongs to a connection already allowed on this side (`direction`, enum
 * glia_direction), or is a reply to one allowed on the other side. A TCP SYN
 * on a closing entry starts a new connection: judged again. */
static __always_inline int glia_ct_policy_seen(const struct glia_ct4_key *t, __u32 direction,
					       __u8 tcp_flags, __u64 now, __u8 mark,
					       __u8 *seen_flags)
{
	struct glia_ct4_entry *e;
	struct glia_ct4_key key;

	key = *t;
	key.dir = direction == GLIA_DIR_EGRESS ? GLIA_CT_EGRESS : GLIA_CT_INGRESS;
	e = bpf_map_lookup_elem(&glia_ct4_v2, &key);
	if (e && e->expires_ns > now &&
	    !((e->flags & GLIA_CT_F_CLOSING) &&
	      (tcp_flags & (GLIA_TCP_SYN | GLIA_TCP_ACK)) == GLIA_TCP_SYN)) {
		glia_ct_touch_one(e, t->proto, tcp_flags, mark, now);
		*seen_flags = e->flags;
		return 1;
	}
	key.saddr = t->daddr;
	key.daddr = t->saddr;
	key.sport = t->dport;
	key.dport = t->sport;
	key.dir = direction == GLIA_DIR_EGRESS ? GLIA_CT_INGRESS : GLIA_CT_EGRESS;
	e = bpf_map_lookup_elem(&glia_ct4_v2, &key);
	if (e && e->expires_ns > now) {
		glia_ct_touch_one(e, t->proto, tcp_flags, GLIA_CT_F_SEEN_REPLY, now);
		*seen_flags = e->flags;
		return 1;
	}
	return 0;
}

static __always_inline void glia_ct_policy_create(const struct glia_ct4_key *t, __u32 direction,
						  __u8 tcp_flags, __u64 now, __u8 mark)
{
	struct glia_ct4_entry entry = {};
	struct glia_ct4_key key;

	key = *t;
	key.dir = direction == GLIA_DIR_EGRESS ? GLIA_CT_EGRESS : GLIA_CT_INGRESS;
	entry.flags = mark;
	if (tcp_flags & (GLIA_TCP_FIN | GLIA_TCP_RST))
		entry.flags |= GLIA_CT_F_CLOSING;
	entry.tcp_flags = tcp_flags;
	entry.expires_ns = now + glia_ct_lifetime(t->proto, entry.flags);
	bpf_map_update_elem(&glia_ct4_v2, &key, &entry, BPF_ANY);
}

/* Reverse NAT before delivery to a local endpoint: a reply from a backend to
 * a client of this node gets the VIP and port back as its source. 0 when done
 * or not applicable; -1 when a helper failed (the caller drops). Packet
 * pointers are invalid afterwards. */
static __always_inline int glia_ct_reply_nat(struct __sk_buff *skb)
{
	__be32 client;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	struct glia_ct4_key key, twin;
	struct glia_ct4_entry *ct;
	struct glia_l4 l4;
	__u64 now;

	if ((void *)(ip4 + 1) > data_end)
		return 0;
	if (glia_parse_l4(skb, ip4, &l4) < 0)
		return 0;
	key.saddr = ip4->saddr;
	key.daddr = ip4->daddr;
	key.sport = l4.sport;
	key.dport = l4.dport;
	key.proto = l4.proto;
	key.dir = GLIA_CT_REPLY;
	key.pad = 0;
	ct = bpf_map_lookup_elem(&glia_ct4_v2, &key);
	if (!ct)
		return 0;
	now = bpf_ktime_get_ns();
	if (ct->expires_ns <= now)
		return 0;
	client = (ct->flags & GLIA_CT_F_HAIRPIN) ? key.saddr : key.daddr;
	twin.saddr = client;
	twin.daddr = ct->nat_addr;
	twin.sport = key.dport;
	twin.dport = ct->nat_port;
	twin.proto = key.proto;
	twin.dir = GLIA_CT_SERVICE;
	twin.pad = 0;
	glia_ct_touch(ct, &twin, l4.proto, l4.tcp_flags, GLIA_CT_F_SEEN_REPLY, now);
	if (glia_nat4(skb, &l4, 1, key.saddr, ct->nat_addr, key.sport, ct->nat_port) < 0)
		return -1;
	if (client != key.daddr)  /* hairpin: back from 169.254.42.1 to the pod itself */
		return glia_nat4(skb, &l4, 0, key.daddr, client, key.dport, key.dport);
	return 0;
}

/* A TCP SYN that is not for a service (a direct connection to a pod IP) may
 * reuse the ports of a service connection whose REPLY entry is still alive;
 * that entry would rewrite the new connection's replies, so it goes. */
static __always_inline void glia_ct_forget_reply(const struct iphdr *ip4, const struct glia_l4 *l4)
{
	struct glia_ct4_key key;

	if (l4->proto != IPPROTO_TCP ||
	    (l4->tcp_flags & (GLIA_TCP_SYN | GLIA_TCP_ACK)) != GLIA_TCP_SYN)
		return;
	key.saddr = ip4->daddr;
	key.daddr = ip4->saddr;
	key.sport = l4->dport;
	key.dport = l4->sport;
	key.proto = IPPROTO_TCP;
	key.dir = GLIA_CT_REPLY;
	key.pad = 0;
	bpf_map_delete_elem(&glia_ct4_v2, &key);
}

#endif /* GLIA_CT_H */
