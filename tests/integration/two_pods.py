"""A loaded datapath with two endpoints on one node, for tests that push packets through
the programs with BPF_PROG_TEST_RUN and read what the agent makes of them (the
monitor, the metrics): no veths, only map entries.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator

import netns_util as nu

from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo, IPCacheInfo
from glia.datapath.packets import ipv4, mac
from glia.model.identity import ReservedIdentity

NODE_IP = "198.18.0.1"
VXLAN_PORT = 8472
A = ("10.1.1.5", 10, 0x1012C, "02:00:00:00:0a:01", "02:00:00:00:0a:02")  # ip ifindex id mac node
B = ("10.1.1.6", 11, 0x1012D, "02:00:00:00:0b:01", "02:00:00:00:0b:02")


def from_a(dst: str, l4: bytes) -> bytes:
    """A UDP frame pod A sends (``l4``: its UDP header and payload)."""
    return mac(A[4]) + mac(A[3]) + struct.pack("!H", 0x0800) + ipv4(A[0], dst, l4, proto=17)


@contextlib.contextmanager
def two_pod_datapath(tag: str) -> Iterator[tuple[Datapath, str]]:
    """The datapath loaded under a pin directory of ``tag``, A and B in its endpoint map,
    and a namespace of the test's own; all removed at the end."""
    nu.require_bpffs()
    nu.cleanup_stale()
    ns = f"{nu.prefix()}-{tag[:3]}"
    dp = Datapath(nu.pin_dir(tag), nu.bpf_objects())
    try:
        nu.add_netns(ns)
        dp.load()
        dp.configure(node_ip=NODE_IP, vxlan_ifindex=99, cluster_id=1, vxlan_port=VXLAN_PORT)
        for ip, ifindex, identity, pod_mac, node_mac in (A, B):
            dp.endpoints.upsert(ip, EndpointInfo(ifindex, identity, pod_mac, node_mac))
        dp.ipcache.upsert_many({NODE_IP: IPCacheInfo(int(ReservedIdentity.HOST), None, 1)})
        yield dp, ns
    finally:
        dp.close()
        unpin(dp.pin_dir)
        nu.del_netns(ns)
