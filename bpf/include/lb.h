/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service load-balancing (IPv4): the lb4 maps and the VIP -> backend DNAT of
 * from_endpoint. Written by the agent (glia.service.lbsync.ServiceMapSync
 * through glia.datapath.lbmaps, in batches); the content is planned by
 * glia.service.lbplan from the operator's ClusterService records.
 *
 * glia_lb4_svc_v1  frontend (VIP, port, proto) -> service id, ready count, flags
 * glia_lb4_slt_v1  (service id, slot) -> backend id, slots 0..count-1 (random)
 * glia_lb4_mgl_v1  service id -> Maglev table of GLIA_LB_MAGLEV_M backend ids
 * glia_lb4_be_v1   backend id -> address, port, proto (shared by services)
 * glia_lb4_rev_v1  service id -> VIP and port: the reverse-NAT index, read by
 *                  the CLI and by a restarted agent to adopt the maps (the
 *                  datapath carries the VIP in the conntrack REPLY entry)
 * glia_lb4_aff_v1  (client IP, service id) -> backend, last use (LRU)
 * glia_lb4_afm_v1  (backend id, service id) present while that backend is a
 *                  ready backend of that affinity service: an affinity entry
 *                  is honoured only then
 * glia_lb4_sks_v1  per-socket storage: the backend a connect()ed socket was
 *                  sent to by the socket-level load-balancer (sock.bpf.c) and
 *                  the VIP it asked for, which getpeername()/recvmsg() show;
 *                  freed with the socket
 * glia_lb4_rsk_v1  (socket cookie, backend, port) -> VIP and port (LRU): the
 *                  same for unconnected UDP sockets, whose datagrams to one
 *                  VIP may each go to another backend
 *
 * Host ports (`podman run -p`, docs/hostport.md) are frontends too, flagged
 * GLIA_LB_F_HOSTPORT: (node IP or 127.0.0.1 or the given host IP, host port)
 * -> the pod's (IP, container port). from_endpoint (pods) and sock.bpf.c (the
 * node's processes) treat them as any frontend; from_netdev (clients outside
 * the node) load-balances only them (glia_lb4_hostport).
 *
 * Service id = reverse-NAT index, one per frontend. Memory: the hash maps
 * are BPF_F_NO_PREALLOC, so they cost their bucket arrays plus the entries in
 * use, not max_entries; Maglev tables (64 KiB each) exist only for services
 * that ask for Maglev.
 */
#ifndef GLIA_LB_H
#define GLIA_LB_H

#include "common.h"
#include "ct.h"
#include "identity.h"
#include "ipcache.h"
#include "nat.h"
#include "reject.h"
#include "verdict.h"

#define GLIA_LB_SERVICES_MAX 262144
#define GLIA_LB_SLOTS_MAX 524288
#define GLIA_LB_BACKENDS_MAX 131072
#define GLIA_LB_MAGLEV_MAX 2048
#define GLIA_LB_AFFINITY_MAX 65536
#define GLIA_LB_AFFMATCH_MAX 262144
#define GLIA_LB_RSK_MAX 262144
/* Maglev table size: prime, so every backend's permutation covers it. */
#define GLIA_LB_MAGLEV_M 16381

/* Returned by glia_lb4 when the packet continues to forwarding. */
#define GLIA_LB_CONTINUE -1

enum glia_lb_flags {
	GLIA_LB_F_MAGLEV = 1,            /* pick through the Maglev table, not at random */
	GLIA_LB_F_AFFINITY = 2,          /* ClientIP session affinity */
	GLIA_LB_F_HOSTPORT = 4,          /* a host port: from_netdev serves it too */
};

/* Which frontends glia_lb4_frontends serves, and how it refuses. */
enum glia_lb_mode {
	GLIA_LB_MODE_ALL = 0,            /* a pod's packet (from_endpoint): every frontend */
	GLIA_LB_MODE_HOSTPORT = 1,       /* a packet from outside the node (from_netdev) */
};

struct glia_lb4_key {
	__be32 vip;                      /* service IPv4 (ClusterIP), network order */
	__be16 port;                     /* service port, network order */
	__u8 proto;                      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;                        /* explicit padding, 0 */
};

struct glia_lb4_service {
	__u32 svc_id;                    /* service id (reverse-NAT index), > 0 */
	__u16 count;                     /* ready backends = slots 0..count-1; 0 = refuse */
	__u8 flags;                      /* enum glia_lb_flags */
	__u8 pad;                        /* explicit padding, 0 */
	__u32 affinity_timeout;          /* ClientIP affinity timeout, seconds */
};

struct glia_lb4_slot_key {
	__u32 svc_id;                    /* service id */
	__u32 slot;                      /* 0..count-1 */
};

struct glia_lb4_slot {
	__u32 backend_id;                /* key of glia_lb4_be_v1 */
};

struct glia_lb4_backend {
	__be32 ip;                       /* backend IPv4, network order */
	__be16 port;                     /* backend (target) port, network order */
	__u8 proto;                      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 flags;                      /* reserved, 0 */
};

struct glia_lb4_revnat {
	__be32 vip;                      /* service IPv4, network order */
	__be16 port;                     /* service port, network order */
	__u16 pad;                       /* explicit padding, 0 */
};

struct glia_lb4_maglev {
	__u32 backend_ids[GLIA_LB_MAGLEV_M];  /* slot -> backend id (glia.service.maglev) */
};

struct glia_lb4_aff_key {
	__be32 client;                   /* client IPv4, network order */
	__u32 svc_id;                    /* service id */
};

struct glia_lb4_affinity {
	__u64 last_used_ns;              /* bpf_ktime_get_ns() of the last new connection */
	__u32 backend_id;                /* the client's backend */
	__u32 pad;                       /* explicit padding, 0 */
};

struct glia_lb4_affm_key {
	__u32 backend_id;                /* backend id */
	__u32 svc_id;                    /* service id */
};

struct glia_lb4_affm {
	__u32 flags;                     /* reserved, 0 */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_LB_SERVICES_MAX);
	__type(key, struct glia_lb4_key);
	__type(value, struct glia_lb4_service);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_svc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_LB_SLOTS_MAX);
	__type(key, struct glia_lb4_slot_key);
	__type(value, struct glia_lb4_slot);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_slt_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_LB_MAGLEV_MAX);
	__type(key, __u32);
	__type(value, struct glia_lb4_maglev);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_mgl_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_LB_BACKENDS_MAX);
	__type(key, __u32);
	__type(value, struct glia_lb4_backend);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_be_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_LB_SERVICES_MAX);
	__type(key, __u32);
	__type(value, struct glia_lb4_revnat);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_rev_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GLIA_LB_AFFINITY_MAX);
	__type(key, struct glia_lb4_aff_key);
	__type(value, struct glia_lb4_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_aff_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GLIA_LB_AFFMATCH_MAX);
	__type(key, struct glia_lb4_affm_key);
	__type(value, struct glia_lb4_affm);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_afm_v1 SEC(".maps");

struct glia_lb4_rsk_key {
	__u64 cookie;                    /* bpf_get_socket_cookie() of the client socket */
	__be32 addr;                     /* backend IPv4, network order */
	__be16 port;                     /* backend port, network order */
	__u16 pad;                       /* explicit padding, 0 */
};

struct glia_lb4_sock {
	__be32 backend;                  /* backend IPv4 the socket was connected to */
	__be16 backend_port;             /* its port, network order */
	__u16 pad;                       /* explicit padding, 0 */
	__be32 vip;                      /* the VIP the application asked for */
	__be16 vip_port;                 /* its port, network order */
	__u16 pad2;                      /* explicit padding, 0 */
};

/* Socket-local storage rather than a map keyed by socket: no per-connection
 * LRU insert (which cost 1-2 us per connect() once the map had filled, against
 * 0.7-0.9 us for this; kernel BPF run-time stats), and nothing stale is left
 * behind when the socket goes. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct glia_lb4_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_sks_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GLIA_LB_RSK_MAX);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct glia_lb4_rsk_key);
	__type(value, struct glia_lb4_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_lb4_rsk_v1 SEC(".maps");

/* The 5-tuple hash behind Maglev slot selection (murmur3's finaliser over the
 * words). Any well-mixed hash works: only this node reads its tables. The
 * Python tests mirror it to predict picks. */
static __always_inline __u32 glia_mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 glia_tuple_hash(__be32 saddr, __be32 daddr, __be16 sport,
					     __be16 dport, __u8 proto)
{
	__u32 h = glia_mix32(bpf_ntohl(saddr) ^ 0x9e3779b9);

	h = glia_mix32(h ^ bpf_ntohl(daddr));
	h = glia_mix32(h ^ (((__u32)bpf_ntohs(sport) << 16) | bpf_ntohs(dport)));
	return glia_mix32(h ^ proto);
}

/* ClientIP affinity: the client's backend while its entry is fresh and the
 * backend still a ready backend of this service; 0 otherwise. *used: when the
 * entry was last written (0 when not honoured). */
static __always_inline __u32 glia_lb4_affinity_pick(const struct glia_lb4_service *svc,
						    __be32 client, __u64 now, __u64 *used)
{
	struct glia_lb4_aff_key key = { .client = client, .svc_id = svc->svc_id };
	struct glia_lb4_affm_key match;
	struct glia_lb4_affinity *aff;
	__u64 last;

	aff = bpf_map_lookup_elem(&glia_lb4_aff_v1, &key);
	if (!aff)
		return 0;
	last = aff->last_used_ns;
	if (now - last > (__u64)svc->affinity_timeout * GLIA_NSEC)
		return 0;
	match.backend_id = aff->backend_id;
	match.svc_id = svc->svc_id;
	if (!bpf_map_lookup_elem(&glia_lb4_afm_v1, &match))
		return 0;
	*used = last;
	return match.backend_id;
}

/* A backend for a new connection: affinity (*aff_used: when its entry was
 * last written), else Maglev or random. */
static __always_inline __u32 glia_lb4_pick(const struct glia_lb4_service *svc,
					   const struct glia_ct4_key *tuple, __u64 now,
					   __u64 *aff_used)
{
	struct glia_lb4_slot_key slot_key;
	const struct glia_lb4_maglev *table;
	const struct glia_lb4_slot *slot;
	__u32 backend_id = 0, idx, svc_id = svc->svc_id;

	if (svc->flags & GLIA_LB_F_AFFINITY)
		backend_id = glia_lb4_affinity_pick(svc, tuple->saddr, now, aff_used);
	if (backend_id)
		return backend_id;
	if (svc->flags & GLIA_LB_F_MAGLEV) {
		table = bpf_map_lookup_elem(&glia_lb4_mgl_v1, &svc_id);
		if (!table)
			return 0;
		idx = glia_tuple_hash(tuple->saddr, tuple->daddr, tuple->sport, tuple->dport,
				      tuple->proto) % GLIA_LB_MAGLEV_M;
		glia_barrier_var(idx);
		if (idx >= GLIA_LB_MAGLEV_M)
			return 0;
		return table->backend_ids[idx];
	}
	slot_key.svc_id = svc_id;
	slot_key.slot = bpf_get_prandom_u32() % svc->count;
	slot = bpf_map_lookup_elem(&glia_lb4_slt_v1, &slot_key);
	return slot ? slot->backend_id : 0;
}

static __always_inline void glia_lb4_remember(const struct glia_lb4_service *svc, __be32 client,
					      __u32 backend_id, __u64 now)
{
	struct glia_lb4_aff_key key = { .client = client, .svc_id = svc->svc_id };
	struct glia_lb4_affinity value = { .last_used_ns = now, .backend_id = backend_id };

	bpf_map_update_elem(&glia_lb4_aff_v1, &key, &value, BPF_ANY);
}

/* The two conntrack entries of a new service connection. */
static __always_inline void glia_lb4_ct_create(const struct glia_ct4_key *tuple,
					       const struct glia_lb4_backend *be, __u32 svc_id,
					       __u8 tcp_flags, __u64 now)
{
	struct glia_ct4_entry entry = {};
	struct glia_ct4_key reply;
	__u8 flags = 0;

	if (tcp_flags & (GLIA_TCP_FIN | GLIA_TCP_RST))
		flags |= GLIA_CT_F_CLOSING;
	if (be->ip == tuple->saddr)
		flags |= GLIA_CT_F_HAIRPIN;
	entry.expires_ns = now + glia_ct_lifetime(tuple->proto, flags);
	entry.flags = flags;
	entry.tcp_flags = tcp_flags;
	entry.svc_id = svc_id;
	entry.nat_addr = be->ip;
	entry.nat_port = be->port;
	bpf_map_update_elem(&glia_ct4_v2, tuple, &entry, BPF_ANY);

	reply.saddr = be->ip;
	reply.daddr = (flags & GLIA_CT_F_HAIRPIN) ? bpf_htonl(GLIA_HAIRPIN_IP) : tuple->saddr;
	reply.sport = be->port;
	reply.dport = tuple->sport;
	reply.proto = tuple->proto;
	reply.dir = GLIA_CT_REPLY;
	reply.pad = 0;
	entry.nat_addr = tuple->daddr;
	entry.nat_port = tuple->dport;
	entry.tcp_flags = 0;
	bpf_map_update_elem(&glia_ct4_v2, &reply, &entry, BPF_ANY);
}

/* No ready backend: count and report the packet, then refuse it at once. A
 * host port's client outside the node gets no answer: the reject helpers send
 * it into a pod's veth (redirect_peer), which means nothing on a netdev. */
static __always_inline int glia_lb4_refuse(struct __sk_buff *skb, const struct glia_l4 *l4,
					   __u32 src_identity, enum glia_lb_mode mode)
{
	if (mode == GLIA_LB_MODE_HOSTPORT)
		return glia_drop_flow(skb, GLIA_DROP_NO_SERVICE, GLIA_DIR_INGRESS, src_identity,
				      0);
	glia_drop_flow(skb, GLIA_DROP_NO_SERVICE, GLIA_DIR_EGRESS, src_identity, 0);
	if (l4->proto == IPPROTO_TCP)
		return glia_reject_tcp(skb, l4->off);
	return glia_reject_udp(skb);
}

/* Service load-balancing: on a frontend hit, DNAT to the connection's backend
 * (conntrack) or a newly picked one. Returns GLIA_LB_CONTINUE when the packet
 * goes on to forwarding (rewritten or not: *translated says; packet pointers
 * are invalid then), else the verdict. `mode` is a constant of the caller, so
 * each program keeps only its own branches.
 * GLIA_LB_MODE_HOSTPORT: only GLIA_LB_F_HOSTPORT frontends; anything else is
 * left as it came, without a write (not even glia_ct_forget_reply: every
 * packet of the node's underlay comes this way); *src_identity is set on a hit
 * (the ipcache's identity of the source, world without an entry), so only
 * host port packets pay that lookup. GLIA_LB_MODE_ALL: *src_identity is the
 * caller's. */
static __always_inline int glia_lb4_frontends(struct __sk_buff *skb, __u32 *src_identity,
					      enum glia_lb_mode mode, int *translated)
{
	const struct glia_ipcache_entry *client;
	enum glia_direction dir = mode == GLIA_LB_MODE_HOSTPORT ? GLIA_DIR_INGRESS : GLIA_DIR_EGRESS;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip4 = data + sizeof(struct ethhdr);
	const struct glia_lb4_service *svc;
	const struct glia_lb4_backend *be;
	struct glia_ct4_key tuple, twin;
	struct glia_ct4_entry *ct;
	struct glia_lb4_key key;
	struct glia_l4 l4;
	__u32 backend_id;
	__be32 be_ip;
	__be16 be_port;
	__u64 now, aff_used = 0;
	__u8 hairpin;

	if ((void *)(ip4 + 1) > data_end)
		return GLIA_LB_CONTINUE;
	if (glia_parse_l4(skb, ip4, &l4) < 0)
		return GLIA_LB_CONTINUE;
	key.vip = ip4->daddr;
	key.port = l4.dport;
	key.proto = l4.proto;
	key.pad = 0;
	svc = bpf_map_lookup_elem(&glia_lb4_svc_v1, &key);
	if (mode == GLIA_LB_MODE_HOSTPORT) {
		if (!svc || !(svc->flags & GLIA_LB_F_HOSTPORT))
			return GLIA_LB_CONTINUE;
		client = glia_lookup_ipcache(ip4->saddr);
		*src_identity = client ? client->identity : GLIA_ID_WORLD;
	} else if (!svc) {
		glia_ct_forget_reply(ip4, &l4);
		return GLIA_LB_CONTINUE;
	}

	tuple.saddr = ip4->saddr;
	tuple.daddr = ip4->daddr;
	tuple.sport = l4.sport;
	tuple.dport = l4.dport;
	tuple.proto = l4.proto;
	tuple.dir = GLIA_CT_SERVICE;
	tuple.pad = 0;
	now = bpf_ktime_get_ns();
	ct = bpf_map_lookup_elem(&glia_ct4_v2, &tuple);
	/* A new SYN on a closing entry is a new connection reusing the ports. */
	if (ct && ct->expires_ns > now &&
	    !((ct->flags & GLIA_CT_F_CLOSING) &&
	      (l4.tcp_flags & (GLIA_TCP_SYN | GLIA_TCP_ACK)) == GLIA_TCP_SYN)) {
		be_ip = ct->nat_addr;
		be_port = ct->nat_port;
		hairpin = ct->flags & GLIA_CT_F_HAIRPIN;
		twin.saddr = be_ip;
		twin.daddr = hairpin ? bpf_htonl(GLIA_HAIRPIN_IP) : tuple.saddr;
		twin.sport = be_port;
		twin.dport = tuple.sport;
		twin.proto = tuple.proto;
		twin.dir = GLIA_CT_REPLY;
		twin.pad = 0;
		glia_ct_touch(ct, &twin, l4.proto, l4.tcp_flags, 0, now);
	} else {
		if (svc->count == 0)
			return glia_lb4_refuse(skb, &l4, *src_identity, mode);
		backend_id = glia_lb4_pick(svc, &tuple, now, &aff_used);
		be = backend_id ? bpf_map_lookup_elem(&glia_lb4_be_v1, &backend_id) : NULL;
		if (!be)  /* maps mid-update or inconsistent: refuse rather than stall */
			return glia_lb4_refuse(skb, &l4, *src_identity, mode);
		/* A client's entry is rewritten at most every GLIA_CT_REFRESH (its
		 * timeout may end that much early): an LRU update per connection
		 * cost more than the rest of the pick. */
		if ((svc->flags & GLIA_LB_F_AFFINITY) && now - aff_used >= GLIA_CT_REFRESH)
			glia_lb4_remember(svc, tuple.saddr, backend_id, now);
		glia_lb4_ct_create(&tuple, be, svc->svc_id, l4.tcp_flags, now);
		be_ip = be->ip;
		be_port = be->port;
		hairpin = be_ip == tuple.saddr;
	}
	if (glia_nat4(skb, &l4, 0, tuple.daddr, be_ip, tuple.dport, be_port) < 0)
		return glia_drop_flow(skb, GLIA_DROP_NAT_FAILED, dir, *src_identity, 0);
	if (hairpin && glia_nat4(skb, &l4, 1, tuple.saddr, bpf_htonl(GLIA_HAIRPIN_IP), tuple.sport,
				 tuple.sport) < 0)
		return glia_drop_flow(skb, GLIA_DROP_NAT_FAILED, dir, *src_identity, 0);
	*translated = 1;
	return GLIA_LB_CONTINUE;
}

/* A pod's packet (from_endpoint): every frontend; refused at once (RST, ICMP)
 * without a ready backend. */
static __always_inline int glia_lb4(struct __sk_buff *skb, __u32 src_identity, int *translated)
{
	return glia_lb4_frontends(skb, &src_identity, GLIA_LB_MODE_ALL, translated);
}

/* A packet from outside the node (from_netdev): host ports only, dropped
 * without a ready backend; *src_identity is set on a hit. */
static __always_inline int glia_lb4_hostport(struct __sk_buff *skb, __u32 *src_identity,
					     int *translated)
{
	return glia_lb4_frontends(skb, src_identity, GLIA_LB_MODE_HOSTPORT, translated);
}

#endif /* GLIA_LB_H */
