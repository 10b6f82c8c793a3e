/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, constants and small packet helpers shared by every glia program.
 *
 * Included first by bpf/from_endpoint.bpf.c and bpf/from_overlay.bpf.c.
 */
#ifndef GLIA_COMMON_H
#define GLIA_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#ifndef __noinline
#define __noinline __attribute__((noinline))
#endif

/* Hide a value from the compiler so a bounds check the verifier needs is not
 * folded away (clang knows x % M < M; the verifier does not). */
#define glia_barrier_var(v) asm volatile("" : "+r"(v))

#define GLIA_ETH_ALEN 6
/* TTL of the outer (underlay) header of tunnelled packets. */
#define GLIA_TUNNEL_TTL 64

/* Checksum fix-up for a TTL decrement: the TTL is the high byte of a 16-bit
 * word, so the one's-complement sum drops by 0x0100 (RFC 1624; the kernel's
 * ip_decrease_ttl does the same). */
static __always_inline void glia_ip_decrease_ttl(struct iphdr *ip4)
{
	__u32 check = (__u32)ip4->check;

	check += (__u32)bpf_htons(0x0100);
	ip4->check = (__sum16)(check + (check >= 0xFFFF));
	ip4->ttl--;
}

#endif /* GLIA_COMMON_H */
