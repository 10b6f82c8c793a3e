// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test harness, never loaded by the agent: BPF_PROG_TEST_RUN gives a tc
 * program no tunnel metadata, so the tests run this program instead. It sets
 * the tunnel key a VXLAN device in collect-metadata mode would have set from
 * the test's context (cb[0] = outer source IPv4 in host order, cb[1] = VNI,
 * cb[2] = outer destination, this node)
 * and tail-calls the program under test (slot 0 of glia_test_next, e.g.
 * from_overlay), whose bpf_skb_get_tunnel_key then reads it. Used by
 * tests/integration/test_datapath_overlay_testrun.py.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/* Verdicts of the harness itself, outside every TC_ACT_* value. */
#define GLIA_TEST_SET_KEY_FAILED 1001
#define GLIA_TEST_TAIL_CALL_FAILED 1002

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} glia_test_next SEC(".maps");

SEC("tc")
int with_tunnel_key(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key;

	__builtin_memset(&key, 0, sizeof(key));
	/* What a receiving VXLAN device records: the outer source is the key's
	 * source, which bpf_skb_get_tunnel_key reports as remote_ipv4 and
	 * bpf_skb_set_tunnel_key takes as local_ipv4 (remote_ipv4 sets the
	 * destination). */
	key.local_ipv4 = skb->cb[0];
	key.remote_ipv4 = skb->cb[2];
	key.tunnel_id = skb->cb[1];
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0) < 0)
		return GLIA_TEST_SET_KEY_FAILED;
	bpf_tail_call(skb, &glia_test_next, 0);
	return GLIA_TEST_TAIL_CALL_FAILED;
}

char _license[] SEC("license") = "Dual BSD/GPL";
