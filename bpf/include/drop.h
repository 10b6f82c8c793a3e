/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Verdict reasons and directions, shared by C and Python.
 *
 * STABLE API: the numbers index the metrics map and appear in ring-buffer
 * events; src/glia/datapath/drop.py mirrors both enums and a test compares
 * them with the compiled objects' BTF. Append new values; never renumber.
 * Growing past GLIA_REASON_MAX needs a new metrics map version.
 */
#ifndef GLIA_DROP_H
#define GLIA_DROP_H

enum glia_reason {
	GLIA_REASON_FORWARDED = 0,         /* delivered to an endpoint or into the tunnel */
	GLIA_REASON_TO_STACK = 1,          /* handed to the node's IP stack (TC_ACT_OK) */
	GLIA_DROP_INVALID_SOURCE = 2,      /* source IP is not the sending endpoint's */
	GLIA_DROP_UNKNOWN_L3 = 3,          /* neither IPv4 nor ARP */
	GLIA_DROP_INVALID_PACKET = 4,      /* truncated or malformed headers, no tunnel key */
	GLIA_DROP_NO_ENDPOINT = 5,         /* ipcache says this node, but no such endpoint */
	GLIA_DROP_REDIRECT_FAILED = 6,     /* a redirect or tunnel-key helper refused */
	GLIA_DROP_TTL_EXCEEDED = 7,        /* TTL would reach zero on this hop */
	GLIA_DROP_POLICY = 8,              /* denied by network policy (later) */
	GLIA_DROP_NO_SERVICE = 9,          /* service without a ready backend: refused (RST/ICMP) */
	GLIA_DROP_NAT_FAILED = 10,         /* a NAT rewrite or checksum helper refused */
	GLIA_REASON_SOCK_XLATE = 11,       /* a socket's VIP:port rewritten to a backend (sock.bpf.c) */
	GLIA_DROP_UNKNOWN_NODE = 12,       /* overlay: outer source is not a node of the mesh */
	GLIA_DROP_SOURCE_NOT_OF_NODE = 13, /* overlay: inner source does not belong to the sending node */
	GLIA_DROP_IDENTITY_NOT_OF_NODE = 14, /* overlay: VNI identity is not one the sending node's pods hold */
	GLIA_DROP_OVERLAY_PORT = 15,       /* a pod sent UDP to the VXLAN port through the node stack */
	GLIA_DROP_WRONG_PORT = 16,         /* to_endpoint: for another endpoint than this veth's (a bridge's flood, a spoofed ARP) */
	GLIA_REASON_MAX = 64,              /* room reserved in the metrics map */
};

enum glia_direction {
	GLIA_DIR_INGRESS = 0,              /* towards an endpoint (from_overlay) */
	GLIA_DIR_EGRESS = 1,               /* leaving an endpoint (from_endpoint) */
	GLIA_DIR_MAX = 2,
};

#endif /* GLIA_DROP_H */
