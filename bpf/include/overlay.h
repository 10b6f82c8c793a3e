/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Who may use the overlay. The node's VXLAN device (collect-metadata mode)
 * decapsulates any UDP datagram that reaches its port, from anyone, and the
 * VNI carries the sender's security identity. Without these checks a pod
 * with an ordinary UDP socket could send VXLAN to a node and have packets
 * delivered to its pods with any source address and any identity.
 *
 * Receiving side, from_overlay (glia_overlay_sender_check), from the ipcache,
 * which the agent builds from its cluster's kvstore (where each node's agent
 * can write only its own records):
 *  1. The outer source is a node of the mesh: its entry has identity
 *     remote-node (every node IP is a /32 so). This node's own IP (identity
 *     host) does not count: a node never tunnels to itself (from_endpoint
 *     delivers its own pods directly), so a datagram "from" this node is
 *     something local that reached the socket. -> GLIA_DROP_UNKNOWN_NODE
 *  2. The inner source belongs to that node: the ipcache places it there
 *     (its entry's tunnel_endpoint is the outer source; a prefix entry counts
 *     like a /32). Node IPs as inner source fail this (their entries have no
 *     tunnel endpoint): a glia node reaches other nodes over the underlay,
 *     never through the tunnel. -> GLIA_DROP_SOURCE_NOT_OF_NODE
 *  3. The VNI names an identity that pods of that node can hold: one minted
 *     by the node's cluster (the node entry's cluster_id, index >= 256), or
 *     init, which an endpoint holds until its labels are known. The other
 *     reserved identities (host, world, health, remote-node, unmanaged,
 *     unknown) never come out of a pod; health endpoints, once they exist,
 *     would add health here. -> GLIA_DROP_IDENTITY_NOT_OF_NODE
 * Not required: that the VNI equals the identity the ipcache gives the inner
 * source. An endpoint's new identity (labels resolved, agent restart) is in
 * the sender's endpoint map at once and in the receiver's ipcache only after
 * etcd delivers it; equality would drop traffic in between. What a node can
 * claim is bounded by 2 and 3: its own cluster's identities, for its own
 * addresses. Spoofing a node IP on the underlay itself is outside what the
 * datapath can tell (unauthenticated UDP; the underlay is the boundary).
 *
 * Sending side, from_endpoint (glia_to_vxlan_port): a pod's UDP datagram to
 * the VXLAN port is dropped whenever it would go to the node stack, whatever
 * its destination (GLIA_DROP_OVERLAY_PORT). The stack can hand it to the
 * VXLAN socket through any address the node owns: its node IP (ipcache:
 * host), a broadcast address, addresses the ipcache does not list; and
 * another node (remote-node) would see it come from this node's IP once pod
 * traffic is masqueraded. Traffic between pods never takes that path (it is
 * delivered or tunnelled by BPF), so pods may still use the port among
 * themselves; only VXLAN on this port from pods to hosts outside is lost.
 */
#ifndef GLIA_OVERLAY_H
#define GLIA_OVERLAY_H

#include "common.h"
#include "config.h"
#include "drop.h"
#include "identity.h"
#include "ipcache.h"
#include "nat.h"
#include "verdict.h"

/* Check 3: identities a pod of a node in cluster ``cluster_id`` may send. */
static __always_inline int glia_node_may_claim(__u32 identity, __u8 cluster_id)
{
	__u32 cluster = identity >> GLIA_ID_CLUSTER_SHIFT;

	if (identity < GLIA_ID_MIN_LOCAL)
		return identity == GLIA_ID_INIT;
	return cluster != 0 && cluster == cluster_id &&
	       (identity & GLIA_ID_LOCAL_MASK) >= GLIA_ID_MIN_LOCAL;
}

/* Checks 1-3 for a decapsulated packet: GLIA_REASON_FORWARDED (0) when the
 * sender may deliver it, else the drop reason. ``outer`` is the tunnel
 * key's remote IPv4 in network order. */
static __always_inline enum glia_reason glia_overlay_sender_check(__be32 outer, __be32 inner_src,
								   __u32 vni_identity)
{
	const struct glia_ipcache_entry *node, *src;

	node = glia_lookup_ipcache(outer);
	if (!node || node->identity != GLIA_ID_REMOTE_NODE)
		return GLIA_DROP_UNKNOWN_NODE;
	src = glia_lookup_ipcache(inner_src);
	if (!src || src->tunnel_endpoint != outer)
		return GLIA_DROP_SOURCE_NOT_OF_NODE;
	if (!glia_node_may_claim(vni_identity, node->cluster_id))
		return GLIA_DROP_IDENTITY_NOT_OF_NODE;
	return GLIA_REASON_FORWARDED;
}

/* A drop on the overlay, with the outer source in the event: the sender to
 * look for is the one on the underlay, not the (forgeable) inner source. */
static __always_inline int glia_drop_overlay(struct __sk_buff *skb, enum glia_reason reason,
					     __u32 src_identity, __be32 outer)
{
	struct glia_drop_event ev;

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.src_identity = src_identity;
	ev.tunnel_src = outer;
	return glia_drop(skb, &ev, reason, GLIA_DIR_INGRESS);
}

/* Sending side: whether a pod's packet bound for the node stack is UDP to
 * the VXLAN port. Later fragments carry no port and pass: without their
 * first fragment (dropped here) they never reassemble into a datagram. A
 * packet too short to hold the ports passes too: it is no datagram the stack
 * delivers (a UDP header has 8 bytes; fragments but the last carry multiples
 * of 8 bytes, and empty ones are discarded). */
static __always_inline int glia_to_vxlan_port(struct __sk_buff *skb, const struct iphdr *ip4,
					      const struct glia_config *cfg)
{
	struct glia_l4 l4;

	if (ip4->protocol != IPPROTO_UDP || !cfg->vxlan_port)
		return 0;
	if (glia_parse_l4(skb, ip4, &l4) < 0)
		return 0;
	return l4.dport == cfg->vxlan_port;
}

#endif /* GLIA_OVERLAY_H */
