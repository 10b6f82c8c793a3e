"""The lab's wires: the underlay bridge and one namespace per node and per etcd.

Called by :mod:`glia.lab.lab` during ``up``. The underlay namespace holds a
bridge; every node and etcd namespace gets a veth whose one end is on that
bridge and whose other end is ``eth0`` in the node, addressed in
198.18.0.0/15. Each pair is created inside the underlay namespace with its
peer placed straight into the node's, so nothing ever appears in the root
namespace. Nodes keep ``ip_forward`` at 0: the datapath does not need it.
"""

from __future__ import annotations

from glia.lab import netns
from glia.lab.topology import NODE_IFNAME, UNDERLAY, UNDERLAY_BRIDGE, Topology


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
    ends = [(n.netns, n.underlay_veth, n.ip) for n in topo.nodes] + [
        (c.etcd_netns, c.etcd_veth, c.etcd_ip) for c in topo.clusters
    ]
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


def remove(topo: Topology) -> list[str]:
    """Delete every namespace the lab of this name may have made; returns the names removed."""
    gone = []
    for name in netns.list_names():
        if topo.is_own_netns(name):
            netns.delete(name)
            gone.append(name)
    return gone
