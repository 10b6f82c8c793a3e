/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L4 parsing and address/port rewriting with checksum fix-ups, shared by
 * service DNAT (lb.h) and reverse NAT on delivery (forward.h).
 *
 * Every rewrite goes through the kernel's checksum helpers, so it is correct
 * whatever the skb's checksum state: CHECKSUM_PARTIAL (pods' TCP with offload:
 * only the pseudo-header part is in the field), COMPLETE or NONE. UDP's
 * "no checksum" (0) stays 0 (BPF_F_MARK_MANGLED_0). Helpers that change the
 * packet invalidate packet pointers: callers reload them afterwards.
 */
#ifndef GLIA_NAT_H
#define GLIA_NAT_H

#include <stddef.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "common.h"

#define GLIA_TCP_FIN 0x01
#define GLIA_TCP_SYN 0x02
#define GLIA_TCP_RST 0x04
#define GLIA_TCP_ACK 0x10
#define GLIA_IP_OFFSET 0x1FFF  /* fragment offset bits of frag_off (host order) */

/* The transport ports of an IPv4 packet, as read from the skb. */
struct glia_l4 {
	__u32 off;                       /* L4 header offset from the frame start */
	__be16 sport;                    /* source port, network order */
	__be16 dport;                    /* destination port, network order */
	__u8 proto;                      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 tcp_flags;                  /* TCP flags byte (0 for UDP) */
	__u16 pad;
};

/* skb->data / skb->data_end loaded by one instruction each, from the context
 * pointer itself: with more plain C reads of them in a program, clang hoists
 * `skb + offset` into a register, which the verifier refuses to dereference
 * ("dereference of modified ctx ptr"). */
#define GLIA_SKB_LOAD(skb, field)                                                         \
	({                                                                                \
		void *_p;                                                                 \
		asm volatile("%0 = *(u32 *)(%1 + %2)"                                     \
			     : "=r"(_p)                                                   \
			     : "r"(skb), "i"(offsetof(struct __sk_buff, field)));         \
		_p;                                                                       \
	})

#define GLIA_L4_OFF_MAX (sizeof(struct ethhdr) + 60)  /* IHL 15 */

/* 0 and *l4 filled for a TCP or UDP packet that carries its ports (not a
 * later fragment); -1 otherwise (no load-balancing or NAT applies). Read
 * straight from the packet when the L4 header is in the linear area (every
 * packet a pod sends), else through bpf_skb_load_bytes: several parts of a
 * program parse each packet, so this is on every packet's path a few times. */
static __always_inline int glia_parse_l4(struct __sk_buff *skb, const struct iphdr *ip4,
					 struct glia_l4 *l4)
{
	void *data, *data_end;
	__be16 ports[2];
	__u8 *l4h;
	__u32 off;

	if (ip4->protocol != IPPROTO_TCP && ip4->protocol != IPPROTO_UDP)
		return -1;
	if (ip4->frag_off & bpf_htons(GLIA_IP_OFFSET))
		return -1;
	off = sizeof(struct ethhdr) + ip4->ihl * 4;
	l4->off = off;
	l4->proto = ip4->protocol;
	l4->tcp_flags = 0;
	data = GLIA_SKB_LOAD(skb, data);
	data_end = GLIA_SKB_LOAD(skb, data_end);
	if (off <= GLIA_L4_OFF_MAX && data + off + 14 <= data_end) {
		l4h = data + off;
		l4->sport = *(__be16 *)l4h;
		l4->dport = *(__be16 *)(l4h + 2);
		if (l4->proto == IPPROTO_TCP)
			l4->tcp_flags = l4h[13];
		return 0;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
		return -1;
	l4->sport = ports[0];
	l4->dport = ports[1];
	if (l4->proto == IPPROTO_TCP && bpf_skb_load_bytes(skb, off + 13, &l4->tcp_flags, 1) < 0)
		return -1;
	return 0;
}

/* The IPv4 header checksum after one 32-bit word of the header changed from
 * `from` to `to` (RFC 1624 incremental update; the one's complement sum does
 * not depend on byte order, so raw network-order words go in as they are). */
static __always_inline __sum16 glia_csum_replace4(__sum16 check, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~check;

	sum += (~from >> 16) & 0xFFFF;
	sum += ~from & 0xFFFF;
	sum += to >> 16;
	sum += to & 0xFFFF;
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__sum16)~sum;
}

/* Rewrite the source (is_src) or destination address and port, with the IP
 * header checksum and the L4 checksum (pseudo-header included) fixed up.
 * 0 on success, -1 if a helper refused (the caller drops).
 *
 * When the IP header and the ports are in the linear area (every packet a pod
 * sends), they are written directly and the IP checksum is updated inline:
 * two helper calls (the L4 checksum, which depends on the skb's checksum
 * state) instead of five, on every packet of every service connection. */
static __always_inline int glia_nat4(struct __sk_buff *skb, const struct glia_l4 *l4, int is_src,
				     __be32 old_addr, __be32 new_addr, __be16 old_port,
				     __be16 new_port)
{
	void *data = GLIA_SKB_LOAD(skb, data);
	void *data_end = GLIA_SKB_LOAD(skb, data_end);
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	__u32 addr_off = sizeof(struct ethhdr) +
			 (is_src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u32 off = l4->off;
	__u32 port_off = off + (is_src ? 0 : 2);
	__be16 *ports;
	__u32 csum_off;
	__u64 mangled = 0;

	if (l4->proto == IPPROTO_TCP) {
		csum_off = off + offsetof(struct tcphdr, check);
	} else {
		csum_off = off + offsetof(struct udphdr, check);
		mangled = BPF_F_MARK_MANGLED_0;
	}
	if (off <= GLIA_L4_OFF_MAX && (void *)(ip4 + 1) <= data_end &&
	    data + off + 2 * sizeof(__be16) <= data_end) {
		ports = data + off;
		if (old_addr != new_addr) {
			if (is_src)
				ip4->saddr = new_addr;
			else
				ip4->daddr = new_addr;
			ip4->check = glia_csum_replace4(ip4->check, old_addr, new_addr);
		}
		if (old_port != new_port)
			ports[is_src ? 0 : 1] = new_port;
	} else {
		if (old_addr != new_addr &&
		    (bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, check),
					 old_addr, new_addr, sizeof(new_addr)) < 0 ||
		     bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0))
			return -1;
		if (old_port != new_port &&
		    bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
			return -1;
	}
	if (old_addr != new_addr &&
	    bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr,
				mangled | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
		return -1;
	if (old_port != new_port &&
	    bpf_l4_csum_replace(skb, csum_off, old_port, new_port, mangled | sizeof(new_port)) < 0)
		return -1;
	return 0;
}

/* Fold a bpf_csum_diff() sum into the 16-bit one's complement checksum. */
static __always_inline __sum16 glia_csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xFFFFFFFF) + (s >> 32);
	s = (s & 0xFFFF) + (s >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	s = (s & 0xFFFF) + (s >> 16);
	return (__sum16)~s;
}

#endif /* GLIA_NAT_H */
