"""A chained ADD's ``prevResult``: what the previous plugin made, and whether glia can use it.

Pure. Called by :class:`glia.endpoint.manager.EndpointManager` for an ADD
whose configuration carries a ``prevResult`` (glia-cni after ``ptp`` or
``bridge`` in a conflist, docs/chaining.md). The previous plugin created the
pod's interface and gave it its address; glia takes the one interface in the
container named ``CNI_IFNAME`` and its one IPv4 address, and refuses (CNI code
7, naming the field) what its datapath cannot carry: no such interface, no
IPv4 address, several, IPv6 (``from_endpoint`` passes IPv4 only). The kernel
side (is it a veth, is its peer on the node) is
:mod:`glia.datapath.chained_link`'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glia.cni.prevresult import check_prev_result
from glia.cni.spec import ERR_INVALID_CONFIG, ERR_INVALID_ENV, CniError


@dataclass(frozen=True, slots=True)
class ChainedPrev:
    """What glia takes from the previous plugin's result."""

    ip: str  # the pod's IPv4 address
    host_names: tuple[str, ...]  # interfaces listed without a sandbox (the host side among them)
    result: dict[str, Any]  # the prevResult, returned unchanged by ADD


def parse_prev(prev: Any, ifname: str, requested_ip: str | None = None) -> ChainedPrev:
    """``prevResult`` (1.0 shape) of an ADD for ``ifname``, or CniError naming the field.

    ``requested_ip``: an address the runtime asked for (CNI_ARGS ``IP``); the
    previous plugin chose the address, so a different one is refused (code 4)
    rather than silently not given.
    """
    check_prev_result(prev)
    interfaces = prev.get("interfaces") or []
    ours = [
        i
        for i, itf in enumerate(interfaces)
        if itf.get("sandbox") and itf.get("name") == ifname  # shape checked above
    ]
    if len(ours) != 1:
        listed = ", ".join(str(i.get("name")) for i in interfaces if i.get("sandbox")) or "none"
        raise CniError(
            ERR_INVALID_CONFIG,
            f"prevResult.interfaces: {len(ours)} interfaces named {ifname} (CNI_IFNAME) in the "
            f"container, glia needs exactly one (in the container: {listed})",
            "glia-cni chained attaches to the interface the previous plugin created",
        )
    index = ours[0]
    v4: list[str] = []
    for n, ip in enumerate(prev.get("ips") or []):
        where = ip.get("interface")
        if where is not None and where != index:
            continue
        addr = ipaddress.ip_interface(ip["address"]).ip
        if addr.version != 4:
            raise CniError(
                ERR_INVALID_CONFIG,
                f"prevResult.ips[{n}]: {addr} is IPv6; glia's datapath carries IPv4 only",
                "configure the previous plugin's IPAM with an IPv4 range only",
            )
        v4.append(str(addr))
    if len(v4) != 1:
        raise CniError(
            ERR_INVALID_CONFIG,
            f"prevResult.ips: {len(v4)} IPv4 addresses for {ifname}"
            + (f" ({', '.join(v4)})" if v4 else "")
            + "; a glia endpoint has exactly one",
            "the previous plugin's IPAM must give the interface one IPv4 address",
        )
    if requested_ip is not None and requested_ip != v4[0]:
        raise CniError(
            ERR_INVALID_ENV,
            f"address {requested_ip} requested, but the previous plugin gave {v4[0]}",
            "in a chained configuration the previous plugin's IPAM chooses the address",
        )
    host_names = tuple(
        str(itf["name"])
        for itf in interfaces
        if isinstance(itf, Mapping) and not itf.get("sandbox")
    )
    return ChainedPrev(ip=v4[0], host_names=host_names, result=dict(prev))


def check_address(ip: str, pod_cidr: str, gateway: str, holder: str | None) -> None:
    """The previous plugin's address must be one of the node's pod CIDR that glia does not use.

    Other nodes accept an ipcache entry only inside the node's pod CIDR (the
    operator's allocation, :func:`glia.validate.ipcache.check_placement`); the
    chained plugin's range is the block glia's IPAM keeps free for it
    (``chained_prefix``). ``holder``: who holds ``ip`` in glia's IPAM, if anyone.
    """
    if ipaddress.ip_address(ip) not in ipaddress.ip_network(pod_cidr):
        raise CniError(
            ERR_INVALID_CONFIG,
            f"the previous plugin's address {ip} is outside this node's pod CIDR {pod_cidr}",
            "other nodes accept a pod address only from its node's CIDR: give the previous "
            "plugin's IPAM the node's chained block (`glia status`, docs/chaining.md)",
        )
    if ip == gateway:
        raise CniError(
            ERR_INVALID_CONFIG, f"the previous plugin's address {ip} is this node's glia gateway"
        )
    if holder is not None:
        raise CniError(
            ERR_INVALID_CONFIG,
            f"the previous plugin's address {ip} is glia's, held by {holder}",
            "the previous plugin's range must be the node's chained block, which glia never "
            "hands out (agent setting chained_prefix, docs/chaining.md)",
        )
