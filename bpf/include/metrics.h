/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* glia_metrics_v1: packets and bytes per (reason, direction), per CPU so the
 * fast path needs no atomics. Index = reason * GLIA_DIR_MAX + direction.
 * Read by glia.datapath.nodemaps.MetricsMap (sums the CPUs). */
#ifndef GLIA_METRICS_H
#define GLIA_METRICS_H

#include "common.h"
#include "drop.h"

struct glia_metrics {
	__u64 packets;                   /* packets counted */
	__u64 bytes;                     /* their skb->len, L2 header included */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GLIA_REASON_MAX * GLIA_DIR_MAX);
	__type(key, __u32);
	__type(value, struct glia_metrics);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} glia_metrics_v1 SEC(".maps");

static __always_inline void glia_count(__u32 reason, __u32 direction, __u32 bytes)
{
	__u32 idx = reason * GLIA_DIR_MAX + direction;
	struct glia_metrics *m = bpf_map_lookup_elem(&glia_metrics_v1, &idx);

	if (m) {
		m->packets++;
		m->bytes += bytes;
	}
}

#endif /* GLIA_METRICS_H */
