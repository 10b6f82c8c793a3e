/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Network policy at L3/L4 (docs/policy.md). The agent computes each local
 * endpoint's entries (glia.policy.engine) and programs two maps; Python
 * mirror: glia.datapath.policymap.
 *
 * glia_polsub_v1: per subject (the identity of a local endpoint: endpoints
 *   with one identity have one label set, hence one policy), the directions in
 *   which it is default-deny. No entry: open both ways.
 * glia_policy_v1: LPM trie of entries keyed (subject, peer identity,
 *   direction, protocol, destination port). A 72-bit prefix covers subject,
 *   peer and direction: every protocol and port. 80 + n bits add the protocol
 *   and the first n bits of the port (a port range is programmed as its
 *   aligned blocks, glia.policy.entries.port_prefixes). The longest prefix
 *   wins, which is exactly "the (peer, protocol) entry whose range holds the
 *   port, else the (peer, every protocol) entry" of EndpointPolicy.lookup.
 *
 * Lookup: not enforced -> allow; the peer's identity, then peer 0 (any);
 * the first entry found decides; nothing found -> deny.
 *
 * Conntrack (ct.h, GLIA_CT_EGRESS / GLIA_CT_INGRESS) runs before the lookup:
 * packets of a connection already allowed on this side, and replies to one,
 * pass without it; policy judges the first packet of a connection only.
 */
#ifndef GLIA_POLICY_H
#define GLIA_POLICY_H

#include "common.h"
#include "config.h"
#include "ct.h"
#include "drop.h"
#include "identity.h"
#include "verdict.h"

#define GLIA_POLICY_MAX 1048576
#define GLIA_POLICY_SUBJECTS_MAX 16384
#define GLIA_POLICY_L3_PREFIX 72  /* subject, peer, direction */
#define GLIA_POLICY_FULL_PREFIX 96

struct glia_policy_key {
	__u32 prefixlen;                 /* LPM prefix length over the fields below */
	__u32 subject;                   /* identity of the local endpoint (host order) */
	__u32 peer;                      /* identity of the other end (host order); 0: any */
	__u8 direction;                  /* enum glia_direction */
	__u8 proto;                      /* IPPROTO_TCP / IPPROTO_UDP; 0 in a 72-bit entry */
	__be16 dport;                    /* destination port, network order (prefix bits) */
};

enum glia_policy_entry_flags {
	GLIA_POLICY_F_DENY = 1,          /* deny (else allow) */
	GLIA_POLICY_F_L4 = 2,            /* the entry names a protocol (and ports) */
};

struct glia_policy_entry {
	__u8 flags;                      /* enum glia_policy_entry_flags */
	__u8 pad1;                       /* explicit padding, 0 */
	__u16 pad2;                      /* explicit padding, 0 */
	__u32 cookie;                    /* the agent's number for the entry's rules (events), 0: none */
};

struct glia_policy_subject {
	__u32 enforced;                  /* bit 1 << enum glia_direction: default deny that way */
	__u32 pad;                       /* explicit padding, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, GLIA_POLICY_MAX);
	__type(key, struct glia_policy_key);
	__type(value, struct glia_policy_entry);
	__uint(map_flags, BPF_F_NO_PREALLOC);  /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_policy_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_POLICY_SUBJECTS_MAX);
	__type(key, __u32);
	__type(value, struct glia_policy_subject);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_polsub_v1 SEC(".maps");

/* How a verdict was reached (events' `match`; glia.datapath.drop.PolicyMatch). */
enum glia_policy_match {
	GLIA_MATCH_NONE = 0,             /* no entry: default deny */
	GLIA_MATCH_L3 = 1,               /* the peer's entry for every port */
	GLIA_MATCH_L4 = 2,               /* the peer's entry for this protocol and port */
	GLIA_MATCH_ANY_L3 = 3,           /* the any-peer entry for every port */
	GLIA_MATCH_ANY_L4 = 4,           /* the any-peer entry for this protocol and port */
	GLIA_MATCH_NOT_ENFORCED = 5,     /* the endpoint is open in this direction */
	GLIA_MATCH_HAIRPIN = 6,          /* an endpoint reaching itself through a Service */
};

/* The verdict of the policy map for the first packet of a connection:
 * 1 allow, 0 deny; *match and *cookie say how. */
static __always_inline int glia_policy_lookup(__u32 subject, __u32 peer, __u8 direction,
					      __u8 proto, __be16 dport, __u8 *match,
					      __u32 *cookie)
{
	const struct glia_policy_subject *sub;
	const struct glia_policy_entry *e;
	struct glia_policy_key key;

	*cookie = 0;
	sub = bpf_map_lookup_elem(&glia_polsub_v1, &subject);
	if (!sub || !(sub->enforced & (1U << direction))) {
		*match = GLIA_MATCH_NOT_ENFORCED;
		return 1;
	}
	key.prefixlen = GLIA_POLICY_FULL_PREFIX;
	key.subject = subject;
	key.peer = peer;
	key.direction = direction;
	key.proto = proto;
	key.dport = dport;
	e = bpf_map_lookup_elem(&glia_policy_v1, &key);
	if (e) {
		*match = (e->flags & GLIA_POLICY_F_L4) ? GLIA_MATCH_L4 : GLIA_MATCH_L3;
	} else {
		key.peer = 0;
		e = bpf_map_lookup_elem(&glia_policy_v1, &key);
		if (!e) {
			*match = GLIA_MATCH_NONE;
			return 0;
		}
		*match = (e->flags & GLIA_POLICY_F_L4) ? GLIA_MATCH_ANY_L4 : GLIA_MATCH_ANY_L3;
	}
	*cookie = e->cookie;
	return !(e->flags & GLIA_POLICY_F_DENY);
}

/* The connection tuple of a packet for policy conntrack: TCP/UDP with their
 * ports, any other protocol (ICMP) and later fragments with ports 0, so they
 * are one "connection" per address pair and protocol. */
static __always_inline int glia_policy_tuple(struct __sk_buff *skb, struct glia_ct4_key *t,
					     __u8 *tcp_flags)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	struct glia_l4 l4;

	if ((void *)(ip4 + 1) > data_end)
		return -1;
	t->saddr = ip4->saddr;
	t->daddr = ip4->daddr;
	t->proto = ip4->protocol;
	t->pad = 0;
	*tcp_flags = 0;
	if (glia_parse_l4(skb, ip4, &l4) == 0) {
		t->sport = l4.sport;
		t->dport = l4.dport;
		*tcp_flags = l4.tcp_flags;
	} else {
		t->sport = 0;
		t->dport = 0;
	}
	return 0;
}

/* Policy for the packet in `skb` on one side: `subject` is the local
 * endpoint's identity, `peer` the other end's; at egress the endpoint sends,
 * at ingress it receives. Returns 0 to go on, or TC_ACT_SHOT (dropped,
 * counted, reported). With the conntrack flags of the connection: `mark` is ORed into
 * this side's entry (found or created); *seen_flags gets the flags of the
 * entry that let the packet pass without a lookup (this side's, or the other
 * side's for a reply), 0 for a packet judged now. */
static __always_inline int glia_policy_ct(struct __sk_buff *skb, __u32 subject, __u32 peer,
					  enum glia_direction direction, __u8 mark,
					  __u8 *seen_flags)
{
	__u32 src_identity = direction == GLIA_DIR_EGRESS ? subject : peer;
	__u32 dst_identity = direction == GLIA_DIR_EGRESS ? peer : subject;
	const struct glia_config *cfg;
	struct glia_ct4_key tuple;
	__u8 tcp_flags, match;
	__u32 cookie;
	__u64 now;

	if (glia_policy_tuple(skb, &tuple, &tcp_flags) < 0)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, direction, src_identity,
				      dst_identity);
	now = bpf_ktime_get_ns();
	*seen_flags = 0;
	if (glia_ct_policy_seen(&tuple, direction, tcp_flags, now, mark, seen_flags))
		return 0;
	if (!glia_policy_lookup(subject, peer, direction, tuple.proto, tuple.dport, &match,
				&cookie))
		return glia_drop_policy(skb, direction, src_identity, dst_identity, match, cookie);
	glia_ct_policy_create(&tuple, direction, tcp_flags, now, mark);
	cfg = glia_get_config();
	if (cfg && (cfg->flags & GLIA_CFG_F_POLICY_VERDICTS))
		glia_policy_verdict_event(skb, direction, src_identity, dst_identity, match, cookie);
	return 0;
}

/* glia_policy_ct without the flags. */
static __always_inline int glia_policy(struct __sk_buff *skb, __u32 subject, __u32 peer,
				       enum glia_direction direction)
{
	__u8 seen_flags;

	return glia_policy_ct(skb, subject, peer, direction, 0, &seen_flags);
}

#endif /* GLIA_POLICY_H */
