"""A Docker endpoint's veth pair, both ends in the node's namespace.

Called by :mod:`glia.docker.driver` at libnetwork's Join, through the endpoint
manager (in place of :func:`glia.datapath.netlink.create_endpoint_veth`). At
Join the container's network namespace does not exist yet (runc creates it
later; dockerd's setkey hook then moves the peer in, names it eth<N>, gives it
the address and the routes Join answered). So the peer waits here, down, under
a temporary name; the host side is set up as for any endpoint. Docker sets no
neighbour entry for the container's gateway, so that gateway is the node's own
IP (:func:`glia.docker.protocol.join_answer`): the node answers ARP for it on
the host side of the pair like for any of its addresses.
"""

from __future__ import annotations

import os

from glia.datapath import netlink, rtnl
from glia.datapath.netlink import VethInfo


def peer_ifname_for(endpoint_id: str) -> str:
    """The peer's name until docker moves it: ``gliap`` + 10 hex digits."""
    return "gliap" + endpoint_id[:10]


def create_docker_veth(
    *,
    netns_path: str,
    ifname: str,
    host_ifname: str,
    ip: str,
    gateway: str,
    mtu: int,
    host_mac: str | None = None,
    container_mac: str | None = None,
    peer_ifname: str,
) -> VethInfo:
    """The pair for an endpoint whose container namespace (``netns_path``) comes later."""
    del netns_path, ifname, gateway  # docker moves, names and routes the peer
    host_mac = host_mac or netlink.random_mac()
    container_mac = container_mac or netlink.random_mac()
    with rtnl.Rtnl() as nl:
        if nl.link_index(peer_ifname) is not None:
            nl.delete_link(peer_ifname)  # left by a Join that failed before
        ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            netlink.new_veth_pair(
                nl, host_ifname, peer_ifname, ns_fd, mtu, host_mac, container_mac, "the node"
            )
        finally:
            os.close(ns_fd)
        try:
            host_index = netlink.index_of(nl, host_ifname, "the node")
            peer_index = netlink.index_of(nl, peer_ifname, "the node")
            netlink.configure_host_side(nl, host_ifname, host_index, ip, container_mac)
        except BaseException:
            netlink.delete_quietly(nl, host_ifname)
            raise
    return VethInfo(host_ifname, host_index, host_mac, container_mac, peer_index)
