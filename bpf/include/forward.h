/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding without the node's IP stack: to a local endpoint through its veth
 * peer, to another node through the VXLAN device, or out of the node by the
 * route the kernel's FIB gives (glia_redirect_fib). Each counts as a hop
 * (TTL decrement), as kernel routing would. */
#ifndef GLIA_FORWARD_H
#define GLIA_FORWARD_H

#include "common.h"
#include "ct.h"
#include "endpoints.h"
#include "policy.h"
#include "verdict.h"

/* glia_deliver_local's flags. */
#define GLIA_DELIVER_POLICY 1     /* judge the endpoint's ingress policy first */
/* The service LB has just DNATed the packet: a request of a service
 * connection, never the reply of one, so the reverse-NAT lookup is skipped
 * (one conntrack lookup less per packet of a service connection). */
#define GLIA_DELIVER_NO_REVNAT 2
/* from_netdev's host port DNAT: the INGRESS policy conntrack entry gets
 * GLIA_CT_F_HOSTPORT, which sends the replies back out by from_endpoint (ct.h). */
#define GLIA_DELIVER_HOSTPORT 4

/* AF_INET for bpf_fib_lookup / bpf_redirect_neigh (no libc headers here). */
#define GLIA_AF_INET 2

/* Delivery to an endpoint of this node, from a local pod (from_endpoint) or
 * through the tunnel (from_overlay): the one ingress point of pod traffic
 * (to_endpoint judges what the node's stack delivers). With
 * GLIA_DELIVER_POLICY in `flags` the endpoint's ingress policy judges the packet first, on its tuple before
 * reverse NAT (the backend's address, as the client's egress entry holds it).
 * A reply of a service connection whose client is this endpoint gets its
 * reverse NAT here (VIP:port as source), so both paths share it. The MACs are set as the pod expects from its gateway:
 * source = host-side veth, destination = pod. */
static __always_inline int glia_deliver_local(struct __sk_buff *skb,
					      const struct glia_endpoint *ep, __u32 src_identity,
					      enum glia_direction direction, int flags)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *ip4;
	__u8 seen_flags;
	long ret;

	if (flags & GLIA_DELIVER_POLICY) {
		ret = glia_policy_ct(skb, ep->identity, src_identity, GLIA_DIR_INGRESS,
				     (flags & GLIA_DELIVER_HOSTPORT) ? GLIA_CT_F_HOSTPORT : 0,
				     &seen_flags);
		if (ret)
			return (int)ret;
	}
	if (!(flags & GLIA_DELIVER_NO_REVNAT) && glia_ct_reply_nat(skb) < 0)
		return glia_drop_flow(skb, GLIA_DROP_NAT_FAILED, direction, src_identity,
				      ep->identity);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, direction, src_identity,
				      ep->identity);
	if (ip4->ttl <= 1)
		return glia_drop_flow(skb, GLIA_DROP_TTL_EXCEEDED, direction, src_identity,
				      ep->identity);
	glia_ip_decrease_ttl(ip4);
	__builtin_memcpy(eth->h_source, ep->node_mac, GLIA_ETH_ALEN);
	__builtin_memcpy(eth->h_dest, ep->mac, GLIA_ETH_ALEN);
	/* Decapsulated frames carry the sending node's MACs, so the VXLAN device
	 * marked them OTHERHOST; redirect_peer keeps pkt_type and the pod's IP
	 * stack would discard them. */
	if (skb->pkt_type != PACKET_HOST)
		bpf_skb_change_type(skb, PACKET_HOST);
	glia_trace(skb, GLIA_OBS_TO_ENDPOINT, GLIA_REASON_FORWARDED, direction, src_identity,
		   ep->identity);
	ret = bpf_redirect_peer(ep->ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return glia_drop_flow(skb, GLIA_DROP_REDIRECT_FAILED, direction, src_identity,
				      ep->identity);
	glia_count(GLIA_REASON_FORWARDED, direction, skb->len);
	return (int)ret;
}

/* VNI = source identity, so the receiving node knows who sent the packet
 * without a lookup (and ingress policy can use it). */
static __always_inline int glia_to_tunnel(struct __sk_buff *skb, struct iphdr *ip4,
					  __be32 tunnel_endpoint, __u32 vxlan_ifindex,
					  __u32 src_identity, __u32 dst_identity)
{
	struct bpf_tunnel_key key;
	long ret;

	if (ip4->ttl <= 1)
		return glia_drop_flow(skb, GLIA_DROP_TTL_EXCEEDED, GLIA_DIR_EGRESS, src_identity,
				      dst_identity);
	glia_ip_decrease_ttl(ip4);
	__builtin_memset(&key, 0, sizeof(key));
	key.remote_ipv4 = bpf_ntohl(tunnel_endpoint);
	key.tunnel_id = src_identity;
	key.tunnel_ttl = GLIA_TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX) < 0)
		return glia_drop_flow(skb, GLIA_DROP_REDIRECT_FAILED, GLIA_DIR_EGRESS, src_identity,
				      dst_identity);
	glia_trace(skb, GLIA_OBS_TO_OVERLAY, GLIA_REASON_FORWARDED, GLIA_DIR_EGRESS, src_identity,
		   dst_identity);
	ret = bpf_redirect(vxlan_ifindex, 0);
	if (ret != TC_ACT_REDIRECT)
		return glia_drop_flow(skb, GLIA_DROP_REDIRECT_FAILED, GLIA_DIR_EGRESS, src_identity,
				      dst_identity);
	glia_count(GLIA_REASON_FORWARDED, GLIA_DIR_EGRESS, skb->len);
	return (int)ret;
}

/* Out of the node by its routing table, without the stack's input path (which
 * drops what it sees as martians, e.g. a packet from one of the node's own
 * addresses coming in on a veth): a FIB lookup as if the packet came in on
 * its device, then bpf_redirect_neigh to the route's device, which resolves
 * the next hop's MAC. TC_ACT_OK (the stack) when the FIB has no forwarding
 * answer (no route, forwarding off on the device, a local destination). */
static __always_inline int glia_redirect_fib(struct __sk_buff *skb, enum glia_direction direction,
					     __u32 src_identity, __u32 dst_identity)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	struct bpf_redir_neigh nh = {};
	struct bpf_fib_lookup fib = {};
	long ret;

	if ((void *)(ip4 + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, direction, src_identity,
				      dst_identity);
	fib.family = GLIA_AF_INET;
	fib.l4_protocol = ip4->protocol;
	fib.tot_len = bpf_ntohs(ip4->tot_len);
	fib.tos = ip4->tos;
	fib.ipv4_src = ip4->saddr;
	fib.ipv4_dst = ip4->daddr;
	fib.ifindex = skb->ingress_ifindex;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return glia_to_stack(skb, direction);
	if (ip4->ttl <= 1)
		return glia_drop_flow(skb, GLIA_DROP_TTL_EXCEEDED, direction, src_identity,
				      dst_identity);
	glia_ip_decrease_ttl(ip4);
	/* The lookup left the next hop (the gateway, or the destination on a
	 * connected route) in ipv4_dst. */
	nh.nh_family = GLIA_AF_INET;
	nh.ipv4_nh = fib.ipv4_dst;
	glia_trace(skb, GLIA_OBS_TO_NETDEV, GLIA_REASON_FORWARDED, direction, src_identity,
		   dst_identity);
	ret = bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	if (ret != TC_ACT_REDIRECT)
		return glia_drop_flow(skb, GLIA_DROP_REDIRECT_FAILED, direction, src_identity,
				      dst_identity);
	glia_count(GLIA_REASON_FORWARDED, direction, skb->len);
	return (int)ret;
}

#endif /* GLIA_FORWARD_H */
