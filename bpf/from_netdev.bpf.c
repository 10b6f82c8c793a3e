// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* from_netdev: tc ingress of the node's underlay device (the interface holding
 * the node IP, in the node's namespace): host ports in eBPF (docs/hostport.md)
 * for clients outside the node. Attached by
 * glia.datapath.loader.Datapath.attach_netdev.
 *
 * Order: IPv4 TCP/UDP only, never UDP to the VXLAN port (the tunnel's own
 * traffic) -> host port LB (lb.h, glia_lb4_hostport: GLIA_LB_F_HOSTPORT
 * frontends only; source identity = ipcache or world; DNAT with the SERVICE
 * and REPLY conntrack entries; dropped without a ready backend) -> the backend
 * must be a local endpoint -> its ingress policy for the client's identity,
 * whose INGRESS conntrack entry gets GLIA_CT_F_HOSTPORT (from_endpoint sends
 * the replies back, reverse-NATed), redirect_peer (forward.h).
 * Everything else (other frontends such as ClusterIPs, which are not served
 * from outside, as in Cilium without external ClusterIP; no frontend; non-IPv4;
 * other protocols) passes untouched and uncounted: this program sees all of
 * the node's underlay traffic. Pods and the node's own processes reach host
 * ports through from_endpoint and sock.bpf.c, never this way.
 */
#include "common.h"
#include "config.h"
#include "endpoints.h"
#include "forward.h"
#include "identity.h"
#include "ipcache.h"
#include "lb.h"
#include "overlay.h"
#include "signals.h" /* declared here too: every object can create every pinned map */
#include "verdict.h"

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const struct glia_config *cfg;
	const struct glia_endpoint *dst;
	struct ethhdr *eth = data;
	struct iphdr *ip4;
	__u32 src_identity = GLIA_ID_WORLD;
	int verdict, translated = 0;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end || ip4->version != 4 || ip4->ihl < 5)
		return TC_ACT_OK;  /* the stack's to judge: not a host port packet */
	if (ip4->protocol != IPPROTO_TCP && ip4->protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	/* The tunnel's datagrams go to glia_vxlan whatever the lb maps say. */
	cfg = glia_get_config();
	if (cfg && glia_to_vxlan_port(skb, ip4, cfg))
		return TC_ACT_OK;

	verdict = glia_lb4_hostport(skb, &src_identity, &translated);
	if (verdict != GLIA_LB_CONTINUE)
		return verdict;
	if (!translated)
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	ip4 = data + sizeof(struct ethhdr);
	if ((void *)(ip4 + 1) > data_end)
		return glia_drop_flow(skb, GLIA_DROP_INVALID_PACKET, GLIA_DIR_INGRESS, src_identity,
				      0);
	/* A host port's backend is a pod of this node; anything else means the
	 * maps are wrong, and the stack would route the DNATed packet anywhere. */
	dst = glia_lookup_endpoint(ip4->daddr);
	if (!dst)
		return glia_drop_flow(skb, GLIA_DROP_NO_ENDPOINT, GLIA_DIR_INGRESS, src_identity,
				      0);
	return glia_deliver_local(skb, dst, src_identity, GLIA_DIR_INGRESS,
				  GLIA_DELIVER_POLICY | GLIA_DELIVER_NO_REVNAT |
					  GLIA_DELIVER_HOSTPORT);
}

char _license[] SEC("license") = "Dual BSD/GPL";
