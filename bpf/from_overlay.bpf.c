// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* from_overlay: tc ingress of the node's VXLAN device (glia_vxlan, in
 * collect-metadata mode): packets from pods on other nodes, already
 * decapsulated. Attached by glia.datapath.loader.Datapath.
 *
 * Order: tunnel key (VNI = source identity) -> sender checks (overlay.h: the
 * outer source is a node, the inner source is that node's, the identity one
 * it may claim) -> local endpoint (ingress policy for the VNI's identity,
 * forward.h; reverse NAT of service replies; redirect_peer) | node stack.
 * The lb4 maps are not used here but are declared in every object (lb.h), so
 * either object can create and pin the whole map set.
 */
#include "common.h"
#include "config.h"
#include "endpoints.h"
#include "forward.h"
#include "ipcache.h"
#include "lb.h"
#include "overlay.h"
#include "signals.h" /* declared here too: every object can create every pinned map */
#include "verdict.h"

SEC("tc")
int from_overlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct glia_ipcache_entry *local;
	const struct glia_config *cfg;
	const struct glia_endpoint *dst;
	struct bpf_tunnel_key key;
	struct ethhdr *eth = data;
	enum glia_reason refused;
	struct iphdr *ip4;
	__u32 src_identity;
	__be32 outer;

	if ((void *)(eth + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_INGRESS, 0, 0);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return glia_drop_flow(skb, GLIA_DROP_UNKNOWN_L3, GLIA_DIR_INGRESS, 0, 0);
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end || ip4->version != 4 || ip4->ihl < 5)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_INGRESS, 0, 0);

	__builtin_memset(&key, 0, sizeof(key));
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_INGRESS, 0, 0);
	src_identity = key.tunnel_id;
	outer = bpf_htonl(key.remote_ipv4);
	refused = glia_overlay_sender_check(outer, ip4->saddr, src_identity);
	if (refused != GLIA_REASON_FORWARDED)
		return glia_drop_overlay(skb, refused, src_identity, outer);

	/* Service traffic arrives already DNATed to the backend (the client's
	 * node did it), so ingress policy sees the backend's own address and
	 * port; replies to a local client are reverse-NATed after it. */
	dst = glia_lookup_endpoint(ip4->daddr);
	if (dst)
		return glia_deliver_local(skb, dst, src_identity, GLIA_DIR_INGRESS, GLIA_DELIVER_POLICY);

	cfg = glia_get_config();
	local = glia_lookup_ipcache(ip4->daddr);
	if (cfg && local && local->tunnel_endpoint && local->tunnel_endpoint == cfg->node_ip)
		return glia_drop_flow(skb, GLIA_DROP_NO_ENDPOINT, GLIA_DIR_INGRESS, src_identity,
				      local->identity);
	return glia_to_stack(skb, GLIA_DIR_INGRESS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
