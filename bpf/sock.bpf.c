// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level service load-balancing: cgroup v2 sock_addr programs that pick
 * a service's backend when a pod's socket connects to (or, for UDP, sends to)
 * a VIP:port, and rewrite the socket's destination to it. The connection then
 * is an ordinary pod-to-pod connection: no per-packet NAT, no conntrack entry,
 * the same cost as reaching the backend by its pod IP. Attached by
 * glia.datapath.loader.Datapath.attach_socket_lb to the cgroup of the agent's
 * config (socket_lb_cgroup).
 *
 * Services these programs leave alone fall through, untouched, to the
 * per-packet load-balancer in from_endpoint (lb.h), which stays complete:
 * - Maglev services: their pick hashes the 5-tuple, and the source port is
 *   not known at connect() time;
 * - ClientIP-affinity services: affinity is keyed by the client IP, which
 *   from_endpoint sees and a socket may not have chosen yet;
 * - services without a ready backend: from_endpoint refuses them with a TCP
 *   reset or ICMP unreachable, which a socket error here could not mimic;
 * - processes outside the cgroup, and sockets that connected before their
 *   process was moved into it.
 *
 * What the application sees stays the VIP: glia_lb4_sks_v1 (connected
 * sockets) and glia_lb4_rsk_v1 (unconnected UDP, lb.h) remember socket and
 * backend -> VIP for the two places the backend would show: getpeername() and
 * the source address of a UDP datagram it receives (recvmsg()).
 */
#include "common.h"
/* Every object declares every pinned map (whichever loads first creates it). */
#include "config.h"
#include "endpoints.h"
#include "events.h"
#include "ipcache.h"
#include "lb.h"
#include "policy.h" /* declared here too: every object can create every pinned map */
#include "metrics.h"
#include "signals.h"

/* user_port holds a port in network order in its low 16 bits. */
static __always_inline __be16 glia_sock_port(const struct bpf_sock_addr *ctx)
{
	return (__be16)ctx->user_port;
}

/* Remember which VIP the socket asked for, before pointing it at the
 * backend; 0 on success. Without it the application would see the backend's
 * address, so on failure the socket is left to from_endpoint. */
static __always_inline int glia_sock4_remember(struct bpf_sock_addr *ctx, int connected,
					       const struct glia_lb4_backend *be,
					       const struct glia_lb4_key *key)
{
	struct glia_lb4_rsk_key rkey;
	struct glia_lb4_revnat vip;
	struct glia_lb4_sock *st;
	struct bpf_sock *sk;

	if (connected) {
		sk = ctx->sk;
		if (!sk)
			return -1;
		st = bpf_sk_storage_get(&glia_lb4_sks_v1, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st)
			return -1;
		st->backend = be->ip;
		st->backend_port = be->port;
		st->vip = key->vip;
		st->vip_port = key->port;
		return 0;
	}
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = be->ip;
	rkey.port = be->port;
	rkey.pad = 0;
	vip.vip = key->vip;
	vip.port = key->port;
	vip.pad = 0;
	return bpf_map_update_elem(&glia_lb4_rsk_v1, &rkey, &vip, BPF_ANY) < 0 ? -1 : 0;
}

static __always_inline void glia_sock4_xlate(struct bpf_sock_addr *ctx, int connected)
{
	const struct glia_lb4_service *svc;
	const struct glia_lb4_backend *be;
	const struct glia_lb4_slot *slot;
	struct glia_lb4_slot_key slot_key;
	struct glia_lb4_key key;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return;
	key.vip = ctx->user_ip4;
	key.port = glia_sock_port(ctx);
	key.proto = ctx->protocol;
	key.pad = 0;
	svc = bpf_map_lookup_elem(&glia_lb4_svc_v1, &key);
	if (!svc || svc->count == 0 || (svc->flags & (GLIA_LB_F_MAGLEV | GLIA_LB_F_AFFINITY)))
		return;
	slot_key.svc_id = svc->svc_id;
	slot_key.slot = bpf_get_prandom_u32() % svc->count;
	slot = bpf_map_lookup_elem(&glia_lb4_slt_v1, &slot_key);
	if (!slot)
		return;
	be = bpf_map_lookup_elem(&glia_lb4_be_v1, &slot->backend_id);
	if (!be || glia_sock4_remember(ctx, connected, be, &key) < 0)
		return;
	ctx->user_ip4 = be->ip;
	ctx->user_port = (__u32)be->port;
	glia_count(GLIA_REASON_SOCK_XLATE, GLIA_DIR_EGRESS, 0);
}

/* The backend's address back to the VIP's, for what the application sees. */
static __always_inline void glia_sock4_revnat(struct bpf_sock_addr *ctx)
{
	const struct glia_lb4_revnat *vip;
	const struct glia_lb4_sock *st;
	struct glia_lb4_rsk_key rkey;
	struct bpf_sock *sk = ctx->sk;
	__be32 addr = ctx->user_ip4;
	__be16 port = glia_sock_port(ctx);
	__be32 new_addr;
	__u32 new_port;

	/* One write of each field at the end: the verifier refuses stores through
	 * a ctx pointer the compiler offset and shared between branches. */
	st = sk ? bpf_sk_storage_get(&glia_lb4_sks_v1, sk, 0, 0) : NULL;
	if (st && st->backend == addr && st->backend_port == port) {
		new_addr = st->vip;
		new_port = st->vip_port;
	} else {
		rkey.cookie = bpf_get_socket_cookie(ctx);
		rkey.addr = addr;
		rkey.port = port;
		rkey.pad = 0;
		vip = bpf_map_lookup_elem(&glia_lb4_rsk_v1, &rkey);
		if (!vip)
			return;
		new_addr = vip->vip;
		new_port = vip->port;
	}
	ctx->user_ip4 = new_addr;
	ctx->user_port = new_port;
}

/* The programs always allow the call (1): a VIP they do not handle goes on,
 * unchanged, to the per-packet datapath. */

SEC("cgroup/connect4")
int glia_sock4_connect(struct bpf_sock_addr *ctx)
{
	glia_sock4_xlate(ctx, 1);
	return 1;
}

SEC("cgroup/sendmsg4")
int glia_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	glia_sock4_xlate(ctx, 0);
	return 1;
}

SEC("cgroup/recvmsg4")
int glia_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	glia_sock4_revnat(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int glia_sock4_getpeername(struct bpf_sock_addr *ctx)
{
	glia_sock4_revnat(ctx);
	return 1;
}

char _license[] SEC("license") = "Dual BSD/GPL";
