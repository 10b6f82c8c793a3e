/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_signals_v1: a ring buffer of what the datapath tells the node's agent,
 * apart from `glia monitor`'s events (a ring buffer has one consumer position:
 * two readers of one buffer would take each other's records).
 *
 * GLIA_SIGNAL_REFUSED: an endpoint refused a TCP connection, i.e. sent a reset
 * in answer to a SYN (RST+ACK with sequence number 0: RFC 9293 3.10.7.1, what
 * the kernel sends when nothing listens on the port). The agent's health
 * prober checks that endpoint's backends at once instead of at the next probe
 * interval (glia.service.health), so a Service stops sending new connections
 * to a server that died within milliseconds, not interval x threshold.
 * Emitted after anti-spoofing: a pod can only signal about its own address,
 * and a signal only triggers a probe, never a verdict. Best effort: a full
 * buffer loses signals and the probes still run at their interval. */
#ifndef GLIA_SIGNALS_H
#define GLIA_SIGNALS_H

#include <linux/tcp.h>
#include "common.h"

#define GLIA_SIGNALS_BYTES (64 * 1024)

enum glia_signal_type {
	GLIA_SIGNAL_REFUSED = 1,
};

struct glia_signal {
	__u64 ts_ns;    /* bpf_ktime_get_ns() */
	__u8 type;      /* enum glia_signal_type */
	__u8 pad[3];    /* explicit padding, 0 */
	__be32 addr;    /* the endpoint that refused, network order */
	__be32 peer;    /* the address it refused, network order */
	__be16 port;    /* the refused port, network order */
	__be16 peer_port; /* the peer's port, network order */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, GLIA_SIGNALS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_signals_v1 SEC(".maps");

/* Not inlined: resets are the cold path, and the signature puts struct
 * glia_signal into each object's BTF for the Python mirror test. */
static __noinline void glia_signal_emit(struct glia_signal *sig)
{
	sig->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_output(&glia_signals_v1, sig, sizeof(*sig), 0);
}

/* A pod's packet that refuses a connection: signal it. Called by
 * from_endpoint on every IPv4 packet a verified endpoint sends, before
 * anything rewrites it; a few loads and compares for TCP, nothing otherwise. */
static __always_inline void glia_signal_refusal(struct iphdr *ip4, void *data_end)
{
	struct glia_signal sig;
	struct tcphdr *th;

	if (ip4->protocol != IPPROTO_TCP || (ip4->frag_off & bpf_htons(0x1fff)))
		return;
	th = (void *)ip4 + ip4->ihl * 4;
	if ((void *)(th + 1) > data_end)
		return;
	if (!th->rst || !th->ack || th->seq != 0)
		return;
	__builtin_memset(&sig, 0, sizeof(sig));
	sig.type = GLIA_SIGNAL_REFUSED;
	sig.addr = ip4->saddr;
	sig.peer = ip4->daddr;
	sig.port = th->source;
	sig.peer_port = th->dest;
	glia_signal_emit(&sig);
}

#endif /* GLIA_SIGNALS_H */
