// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* from_endpoint: tc ingress of the host side of every endpoint veth, i.e.
 * every packet a pod sends. Attached by glia.datapath.loader.Datapath.
 *
 * Order: L3 check (ARP: its own anti-spoofing, then the stack) -> anti-spoofing -> refused-connection signal (signals.h)
 * -> service LB (VIP:port -> backend DNAT,
 * conntrack; refused at once without a ready backend) -> egress policy of the
 * source for the destination's identity (policy.h; after the DNAT, so policy
 * judges the backend, never the VIP) -> local endpoint (its ingress policy,
 * reverse NAT of service replies, redirect_peer) | remote node (VXLAN) | node
 * stack, except UDP to the VXLAN port (overlay.h). Replies of connections the
 * stack delivered (a kernel DNAT, e.g. a chained portmap) go to the stack (GLIA_CT_F_VIA_STACK, ct.h): the
 * flag rides on the conntrack entry the policy step finds for every reply.
 * Replies of host port connections from_netdev DNATed (GLIA_CT_F_HOSTPORT on
 * the same entry) get their reverse NAT (source = address:host port) and go
 * to the client's node through the tunnel, else out by the FIB
 * (glia_hostport_reply): no lookup is added to any other packet.
 */
#include "common.h"
#include "config.h"
#include "endpoints.h"
#include "forward.h"
#include "identity.h"
#include "ipcache.h"
#include "lb.h"
#include "overlay.h"
#include "signals.h"
#include "verdict.h"

/* ARP for IPv4 over Ethernet (RFC 826), up to the sender's protocol address. */
struct glia_arp_head {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 oper;
	__u8 sha[GLIA_ETH_ALEN];
	__u8 spa[4];
} __attribute__((packed));

/* The reply of a host port connection (from_netdev, GLIA_CT_F_HOSTPORT): the
 * source back to the address and host port the client asked (REPLY entry),
 * then to the client: a pod of another node through the tunnel, anything else
 * out by the FIB; never to the node's stack, which would take a packet from
 * its own address on a veth for a martian. */
static __always_inline int glia_hostport_reply(struct __sk_buff *skb,
					       const struct glia_ipcache_entry *remote,
					       __u32 src_identity, __u32 dst_identity)
{
	void *data, *data_end;
	const struct glia_config *cfg;
	struct iphdr *ip4;

	if (glia_ct_reply_nat(skb) < 0)
		return glia_drop_flow(skb, GLIA_DROP_NAT_FAILED, GLIA_DIR_EGRESS, src_identity,
				      dst_identity);
	cfg = glia_get_config();
	if (cfg && remote && remote->tunnel_endpoint && remote->tunnel_endpoint != cfg->node_ip &&
	    cfg->vxlan_ifindex) {
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip4 = data + sizeof(struct ethhdr);
		if ((void *)(ip4 + 1) > data_end)
			return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_EGRESS,
					      src_identity, dst_identity);
		return glia_to_tunnel(skb, ip4, remote->tunnel_endpoint, cfg->vxlan_ifindex,
				      src_identity, dst_identity);
	}
	return glia_redirect_fib(skb, GLIA_DIR_EGRESS, src_identity, dst_identity);
}

/* Anti-spoofing for ARP, as for IPv4: a pod may speak ARP only for its own
 * address (or 0.0.0.0, an RFC 5227 probe). ARP goes to the stack, and on a
 * bridge port (docs/chaining.md) to the bridge and every pod behind it, whose
 * caches would believe a pod claiming a neighbour's address or the gateway. */
static __always_inline int glia_arp(struct __sk_buff *skb, struct ethhdr *eth, void *data_end)
{
	struct glia_arp_head *arp = (void *)(eth + 1);
	const struct glia_endpoint *src;
	__be32 spa;

	if ((void *)(arp + 1) > data_end || arp->htype != bpf_htons(1) ||
	    arp->ptype != bpf_htons(ETH_P_IP) || arp->hlen != GLIA_ETH_ALEN || arp->plen != 4)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_EGRESS, 0, 0);
	__builtin_memcpy(&spa, arp->spa, sizeof(spa));
	if (spa) {
		src = glia_lookup_endpoint(spa);
		if (!src || src->ifindex != skb->ingress_ifindex)
			return glia_drop_flow(skb, GLIA_DROP_INVALID_SOURCE, GLIA_DIR_EGRESS, 0,
					      0);
	}
	return glia_to_stack(skb, GLIA_DIR_EGRESS);
}

SEC("tc")
int from_endpoint(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct glia_ipcache_entry *remote;
	const struct glia_endpoint *src, *dst;
	const struct glia_config *cfg;
	struct ethhdr *eth = data;
	struct iphdr *ip4;
	__u32 src_identity, dst_identity;
	int verdict, translated = 0;
	__u8 ct_flags;

	if ((void *)(eth + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_EGRESS, 0, 0);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return glia_arp(skb, eth, data_end);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return glia_drop_flow(skb, GLIA_DROP_UNKNOWN_L3, GLIA_DIR_EGRESS, 0, 0);
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end || ip4->version != 4 || ip4->ihl < 5)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_EGRESS, 0, 0);

	/* Anti-spoofing: the source must be an endpoint, and the one behind the
	 * veth the packet came from. */
	src = glia_lookup_endpoint(ip4->saddr);
	if (!src || src->ifindex != skb->ingress_ifindex)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_SOURCE, GLIA_DIR_EGRESS, 0, 0);
	src_identity = src->identity;
	glia_signal_refusal(ip4, data_end);

	/* Service load-balancing before the destination lookup, so the backend
	 * decides where the packet goes (this node, another node). */
	verdict = glia_lb4(skb, src_identity, &translated);
	if (verdict != GLIA_LB_CONTINUE)
		return verdict;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_EGRESS, src_identity, 0);

	dst = glia_lookup_endpoint(ip4->daddr);
	if (dst) {
		/* A pod reaching itself through a Service (hairpin, ct.h): no
		 * policy, as in Cilium; a pod cannot be kept from itself. */
		if (dst->ifindex == skb->ingress_ifindex)
			return glia_deliver_local(skb, dst, src_identity, GLIA_DIR_EGRESS,
						  translated ? GLIA_DELIVER_NO_REVNAT : 0);
		verdict = glia_policy_ct(skb, src_identity, dst->identity, GLIA_DIR_EGRESS, 0,
					 &ct_flags);
		if (verdict)
			return verdict;
		if (!translated && (ct_flags & GLIA_CT_F_VIA_STACK))
			return glia_to_stack(skb, GLIA_DIR_EGRESS);
		return glia_deliver_local(skb, dst, src_identity, GLIA_DIR_EGRESS,
					  GLIA_DELIVER_POLICY |
						  (translated ? GLIA_DELIVER_NO_REVNAT : 0));
	}
	/* A pod answering its own service connection (hairpin, ct.h): delivered
	 * back to itself, reverse NAT included. */
	if (ip4->daddr == bpf_htonl(GLIA_HAIRPIN_IP))
		return glia_deliver_local(skb, src, src_identity, GLIA_DIR_EGRESS, 0);

	remote = glia_lookup_ipcache(ip4->daddr);
	dst_identity = remote ? remote->identity : GLIA_ID_WORLD;
	verdict = glia_policy_ct(skb, src_identity, dst_identity, GLIA_DIR_EGRESS, 0, &ct_flags);
	if (verdict)
		return verdict;
	if (!translated && (ct_flags & GLIA_CT_F_HOSTPORT))
		return glia_hostport_reply(skb, remote, src_identity, dst_identity);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_EGRESS, src_identity,
				      dst_identity);

	cfg = glia_get_config();
	if (cfg && remote && remote->tunnel_endpoint) {
		if (remote->tunnel_endpoint == cfg->node_ip)
			return glia_drop_flow(skb, GLIA_DROP_NO_ENDPOINT, GLIA_DIR_EGRESS,
					      src_identity, remote->identity);
		if (!translated && (ct_flags & GLIA_CT_F_VIA_STACK))
			return glia_to_stack(skb, GLIA_DIR_EGRESS);
		if (cfg->vxlan_ifindex)
			return glia_to_tunnel(skb, ip4, remote->tunnel_endpoint,
					      cfg->vxlan_ifindex, src_identity, remote->identity);
	}
	/* The node itself (health probes, its IP) or outside the mesh; never the
	 * node's VXLAN socket, which would take the pod's datagram as tunnel
	 * traffic (overlay.h). */
	if (cfg && glia_to_vxlan_port(skb, ip4, cfg))
		return glia_drop_flow(skb, GLIA_DROP_OVERLAY_PORT, GLIA_DIR_EGRESS, src_identity,
				      dst_identity);
	return glia_to_stack(skb, GLIA_DIR_EGRESS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
