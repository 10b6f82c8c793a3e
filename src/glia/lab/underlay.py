"""The lab's wires: the underlay bridge and one namespace per node and per etcd.

Called by :mod:`glia.lab.lab` during ``up``. The underlay namespace holds a
bridge; every node and etcd namespace gets a veth whose one end is on that
bridge and whose other end is ``eth0`` in the node, addressed in
198.18.0.0/15. Each pair is created inside the underlay namespace with its
peer placed straight into the node's, so nothing ever appears in the root
namespace. "The world" (``<lab>-world``) hangs off the same bridge with an
underlay address and one in 203.0.113.0/24 (a documentation range); every
node routes that range via the world's underlay address, nothing else does.
The agent turns ``ip_forward`` on in its node when it masquerades egress
(:mod:`glia.agent.egress`); the lab leaves it as the kernel makes it.
"""

from __future__ import annotations

from glia.lab import netns
from glia.lab.topology import (
    NODE_IFNAME,
    UNDERLAY,
    UNDERLAY_BRIDGE,
    WORLD_IP,
    WORLD_NET,
    WORLD_UNDERLAY_IP,
    WORLD_VETH,
    Topology,
)


def build(topo: Topology) -> None:
    """Create every namespace and link of ``topo`` (the lab has been torn down before)."""
    under = topo.underlay_netns
    netns.add(under)
    netns.batch(
        under,
        [
            f"link add {UNDERLAY_BRIDGE} type bridge",
            f"link set {UNDERLAY_BRIDGE} up",
        ],
    )
    ends = (
        [(n.netns, n.underlay_veth, n.ip) for n in topo.nodes]
        + [(c.etcd_netns, c.etcd_veth, c.etcd_ip) for c in topo.clusters]
        + [(topo.world_netns, WORLD_VETH, WORLD_UNDERLAY_IP)]
    )
    for ns, veth, ip in ends:
        netns.add(ns)
        netns.veth(under, veth, ns, NODE_IFNAME)
        netns.batch(under, [f"link set {veth} master {UNDERLAY_BRIDGE} up"])
        netns.batch(
            ns,
            [
                f"addr add {ip}/{UNDERLAY.prefixlen} dev {NODE_IFNAME}",
                f"link set {NODE_IFNAME} up",
            ],
        )
    netns.batch(topo.world_netns, [f"addr add {WORLD_IP}/{WORLD_NET.prefixlen} dev {NODE_IFNAME}"])
    for n in topo.nodes:
        netns.batch(n.netns, [f"route add {WORLD_NET} via {WORLD_UNDERLAY_IP}"])


def remove(topo: Topology) -> list[str]:
    """Delete every namespace the lab of this name may have made; returns the names removed."""
    gone = []
    for name in netns.list_names():
        if topo.is_own_netns(name):
            netns.delete(name)
            gone.append(name)
    return gone
