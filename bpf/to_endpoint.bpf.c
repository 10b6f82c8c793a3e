// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* to_endpoint: tc egress of the host side of every endpoint veth, i.e. what
 * the node's IP stack sends to a pod (the node itself: health probes; or
 * traffic the node routed). Pod traffic never comes this way: from_endpoint
 * and from_overlay deliver it with bpf_redirect_peer, which skips this hook,
 * after judging it at glia_deliver_local (forward.h).
 *
 * Ingress policy of the endpoint for the source's identity (the ipcache's;
 * world without an entry), with policy conntrack, so connections the node
 * opens are tracked and the pod's replies pass its egress policy. Connections
 * from a pod that the stack delivers (a kernel DNAT, e.g. a chained portmap) are marked on their
 * INGRESS conntrack entry, so their replies take the stack back (ct.h).
 * Attached by glia.datapath.loader.Datapath next to from_endpoint.
 *
 * A packet for an endpoint leaves only by that endpoint's veth. The node routes
 * each pod address to its own veth (glia's, ptp's), but a chained pod's veth
 * can be a port of a Linux bridge (docs/chaining.md): the bridge floods a frame
 * whose MAC it has not learnt to every port, and a pod that answers ARP for a
 * neighbour's address draws the node's traffic for it to its own port. Either
 * would hand one pod what the node sends another, so it is dropped
 * (GLIA_DROP_WRONG_PORT); the right port gets it (flood) or nobody (spoof).
 */
#include "common.h"
#include "endpoints.h"
#include "identity.h"
#include "ipcache.h"
#include "lb.h"     /* declared here too: every object can create every pinned map */
#include "policy.h"
#include "signals.h"
#include "verdict.h"

SEC("tc")
int to_endpoint(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct glia_ipcache_entry *src;
	const struct glia_endpoint *dst;
	struct ethhdr *eth = data;
	struct iphdr *ip4;
	__u32 src_identity;
	__u8 mark = 0, seen;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;  /* ARP from the node's side, or not ours to judge */
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end || ip4->version != 4 || ip4->ihl < 5)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_INGRESS, 0, 0);
	dst = glia_lookup_endpoint(ip4->daddr);
	if (!dst)
		return TC_ACT_OK;
	if (dst->ifindex != skb->ifindex)
		return glia_drop_flow(skb, GLIA_DROP_WRONG_PORT, GLIA_DIR_INGRESS, 0,
				      dst->identity);
	src = glia_lookup_ipcache(ip4->saddr);
	src_identity = src ? src->identity : GLIA_ID_WORLD;
	/* From a pod, through the stack: a kernel DNAT (a chained portmap; glia's own
	 * host ports are served in BPF, from_netdev). Pods never reach pods
	 * through the stack otherwise (from_endpoint delivers them), so the mark
	 * sends exactly the NATed connections' replies back through it (ct.h). */
	if (src && (src->tunnel_endpoint || glia_lookup_endpoint(ip4->saddr)))
		mark = GLIA_CT_F_VIA_STACK;
	if (glia_policy_ct(skb, dst->identity, src_identity, GLIA_DIR_INGRESS, mark, &seen))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
