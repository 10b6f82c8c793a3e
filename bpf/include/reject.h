/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Refusing a connection at once, from BPF: the packet that came from a pod is
 * turned into the answer a host without a listener would give, and sent
 * straight back into the pod (bpf_redirect_peer on the veth it came from).
 * TCP: a RST (RFC 9293 3.10.7.1: seq = the segment's ACK if it had one, else
 * RST|ACK acknowledging it). UDP: ICMP port unreachable quoting the IP header
 * and the first 8 bytes of the datagram (RFC 792), so the client's connected
 * socket gets ECONNREFUSED. Used by glia_lb4 for services without a ready
 * backend; the caller has counted and reported the packet already.
 *
 * Cold path: not inlined, so the fast path stays small for the verifier.
 */
#ifndef GLIA_REJECT_H
#define GLIA_REJECT_H

#include <linux/icmp.h>

#include "common.h"
#include "nat.h"

#define GLIA_REPLY_TTL 64
#define GLIA_IP_DF 0x4000
#define GLIA_QUOTE_MAX (60 + 8)  /* longest IPv4 header + 8 bytes of payload */

struct glia_rst4 {
	struct iphdr ip;
	struct tcphdr tcp;
};

struct glia_icmp4 {
	struct iphdr ip;
	struct icmphdr icmp;
};

struct glia_pseudo4 {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

static __always_inline void glia_reply_ip(struct iphdr *out, const struct iphdr *in, __u8 proto,
					  __u16 tot_len)
{
	out->version = 4;
	out->ihl = 5;
	out->ttl = GLIA_REPLY_TTL;
	out->protocol = proto;
	out->tot_len = bpf_htons(tot_len);
	out->frag_off = bpf_htons(GLIA_IP_DF);
	out->saddr = in->daddr;
	out->daddr = in->saddr;
	out->check = glia_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)out, sizeof(*out), 0));
}

/* Swap the MACs: the reply comes from the pod's gateway (host-side veth). */
static __always_inline int glia_reply_eth(struct __sk_buff *skb, const struct ethhdr *eth)
{
	__u8 macs[2 * GLIA_ETH_ALEN];

	__builtin_memcpy(macs, eth->h_source, GLIA_ETH_ALEN);
	__builtin_memcpy(macs + GLIA_ETH_ALEN, eth->h_dest, GLIA_ETH_ALEN);
	return (int)bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0);
}

static __noinline int glia_reject_tcp(struct __sk_buff *skb, __u32 l4_off)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip4 = (void *)(eth + 1);
	struct glia_rst4 out;
	struct glia_pseudo4 ph;
	struct tcphdr in;
	__u32 payload;
	__s64 sum;

	if ((void *)(ip4 + 1) > data_end)
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, l4_off, &in, sizeof(in)) < 0 || in.rst)
		return TC_ACT_SHOT;  /* never answer a RST */
	__builtin_memset(&out, 0, sizeof(out));
	__builtin_memset(&ph, 0, sizeof(ph));
	glia_reply_ip(&out.ip, ip4, IPPROTO_TCP, sizeof(out));
	out.tcp.source = in.dest;
	out.tcp.dest = in.source;
	out.tcp.doff = sizeof(out.tcp) / 4;
	out.tcp.rst = 1;
	if (in.ack) {
		out.tcp.seq = in.ack_seq;
	} else {
		payload = bpf_ntohs(ip4->tot_len) - ip4->ihl * 4 - in.doff * 4;
		out.tcp.ack = 1;
		out.tcp.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + payload + in.syn + in.fin);
	}
	ph.saddr = out.ip.saddr;
	ph.daddr = out.ip.daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(out.tcp));
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&out.tcp, sizeof(out.tcp), (__wsum)sum);
	out.tcp.check = glia_csum_fold(sum);

	if (glia_reply_eth(skb, eth) < 0)
		return TC_ACT_SHOT;
	/* The segment held at least these 40 bytes; then cut what followed. */
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, sizeof(struct ethhdr) + sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	return (int)bpf_redirect_peer(skb->ingress_ifindex, 0);
}

static __noinline int glia_reject_udp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip4 = (void *)(eth + 1);
	__u8 quote[GLIA_QUOTE_MAX];
	struct glia_icmp4 out;
	__u32 quote_len;
	__s64 sum;

	if ((void *)(ip4 + 1) > data_end)
		return TC_ACT_SHOT;
	quote_len = ip4->ihl * 4 + 8;
	if (quote_len > GLIA_QUOTE_MAX)
		return TC_ACT_SHOT;
	__builtin_memset(quote, 0, sizeof(quote));
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), quote, quote_len) < 0)
		return TC_ACT_SHOT;
	__builtin_memset(&out, 0, sizeof(out));
	glia_reply_ip(&out.ip, ip4, IPPROTO_ICMP, sizeof(out) + quote_len);
	out.icmp.type = ICMP_DEST_UNREACH;
	out.icmp.code = ICMP_PORT_UNREACH;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&out.icmp, sizeof(out.icmp), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)quote, quote_len, (__wsum)sum);
	out.icmp.checksum = glia_csum_fold(sum);

	if (glia_reply_eth(skb, eth) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_change_tail(skb, sizeof(struct ethhdr) + sizeof(out) + quote_len, 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &out, sizeof(out), 0) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + sizeof(out), quote, quote_len, 0) < 0)
		return TC_ACT_SHOT;
	return (int)bpf_redirect_peer(skb->ingress_ifindex, 0);
}

#endif /* GLIA_REJECT_H */
