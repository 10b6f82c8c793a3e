"""The interface a previous CNI plugin made for a pod, found and checked from the node.

Called by :mod:`glia.endpoint.chained` (on the agent's datapath thread, in the
node's namespace) when glia-cni runs chained after a plugin such as ``ptp``
(docs/chaining.md). glia attaches its programs to the host side of the pod's
veth, so it must be sure which interface that is: names from the previous
plugin's result are only a cross-check. The pod's interface must be a veth
whose peer (``IFLA_LINK``) is a veth of this namespace pointing back at it.
Nothing here changes an interface.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from glia.datapath.errors import DatapathError
from glia.datapath.netns import run_in_netns


@dataclass(frozen=True, slots=True)
class ChainedLink:
    """A pod's veth pair as the kernel reports it."""

    host_ifname: str  # host side, in the node's namespace
    host_ifindex: int
    host_mac: str  # the pod's next hop (the previous plugin's gateway side)
    container_mac: str  # the pod's interface
    container_ifindex: int  # in the pod's namespace
    addresses: tuple[str, ...]  # IPv4 addresses on the pod's interface


@dataclass(frozen=True, slots=True)
class _PodSide:
    ifindex: int
    kind: str | None
    peer: int | None
    mac: str
    addresses: tuple[str, ...]


def _pod_side(ifname: str) -> _PodSide:
    with IPRoute() as ipr:
        try:
            link = ipr.link("get", ifname=ifname)[0]
        except NetlinkError as e:
            raise DatapathError(
                f"the pod has no interface {ifname} (CNI_IFNAME): {e.args[-1]}"
            ) from None
        index = int(link["index"])
        addrs = tuple(
            str(a.get("IFA_ADDRESS")) for a in ipr.addr("dump", index=index, family=socket.AF_INET)
        )
        peer = link.get("IFLA_LINK")
        return _PodSide(
            ifindex=index,
            kind=link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")),
            peer=int(peer) if peer else None,
            mac=str(link.get("IFLA_ADDRESS") or ""),
            addresses=addrs,
        )


def find(netns_path: str, ifname: str, host_names: tuple[str, ...]) -> ChainedLink:
    """The veth pair of ``ifname`` in the pod namespace ``netns_path``, checked.

    Runs in the node's namespace. ``host_names``: the interfaces without a
    sandbox that the previous plugin listed (ptp: the host veth; bridge: the
    bridge and the host veth); when there are any, the host side must be one of
    them. :class:`DatapathError` says what does not fit.
    """
    pod = run_in_netns(netns_path, _pod_side, ifname)
    if pod.kind != "veth":
        raise DatapathError(
            f"the pod's {ifname} is a {pod.kind or 'plain'} device, not a veth: glia attaches "
            "to the host side of a veth pair (ptp, bridge)"
        )
    if pod.peer is None:
        raise DatapathError(f"the kernel reports no peer for the pod's veth {ifname}")
    with IPRoute() as ipr:
        try:
            host = ipr.link("get", index=pod.peer)[0]
        except NetlinkError:
            host = None
        back = host.get("IFLA_LINK") if host is not None else None
        kind = host.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) if host is not None else None
        if host is None or kind != "veth" or back != pod.ifindex:
            raise DatapathError(
                f"the peer of the pod's {ifname} (ifindex {pod.peer}) is not a veth of this "
                "node's network namespace: glia attaches only to a pod veth whose other end "
                "is on the node"
            )
        name = str(host.get("IFLA_IFNAME"))
        if host_names and name not in host_names:
            raise DatapathError(
                f"the host side of the pod's {ifname} is {name}, which the previous plugin's "
                f"result does not list ({', '.join(host_names)})"
            )
        return ChainedLink(
            host_ifname=name,
            host_ifindex=int(host["index"]),
            host_mac=str(host.get("IFLA_ADDRESS") or ""),
            container_mac=pod.mac,
            container_ifindex=pod.ifindex,
            addresses=pod.addresses,
        )


def host_index(host_ifname: str) -> int | None:
    """The ifindex of a chained pod's host veth, None if it is gone or no longer a veth."""
    with IPRoute() as ipr:
        try:
            link = ipr.link("get", ifname=host_ifname)[0]
        except NetlinkError:
            return None
        if link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) != "veth":
            return None
        return int(link["index"])
