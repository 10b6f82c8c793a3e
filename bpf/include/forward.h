/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding without the node's IP stack: to a local endpoint through its veth
 * peer, or to another node through the VXLAN device. Both count as a hop
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
	long ret;

	if (flags & GLIA_DELIVER_POLICY) {
		ret = glia_policy(skb, ep->identity, src_identity, GLIA_DIR_INGRESS);
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

#endif /* GLIA_FORWARD_H */
