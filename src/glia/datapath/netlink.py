"""Netlink plumbing of the datapath: endpoint veths and the VXLAN device.

Called by the agent's endpoint manager (in the node's network namespace) and
the tests. Every function acts on the calling thread's network namespace (the
node); the pod side of a veth is configured from a thread that enters the
pod's namespace (glia.datapath.netns), so the node never sees the pod's
interface name. Errors are DatapathError naming the interface and step.

Addressing of an endpoint (no ARP on either side, no routing by the node):
pod: ip/32 on ``ifname``, ``gateway/32 scope link``, ``default via gateway
onlink``, permanent neighbour gateway -> host-side MAC, IPv6 off.
node: host side up, ``ip/32 dev host_ifname``, permanent neighbour ip -> pod
MAC, IPv4 forwarding as the node's default: off, unless the agent masquerades
egress (glia.agent.egress turns ``ip_forward`` on, so what from_endpoint hands
to the stack, pod traffic to the world and to other nodes, is routed).
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from glia.datapath import rtnl
from glia.datapath.errors import DatapathError
from glia.datapath.netns import run_in_netns

log = logging.getLogger(__name__)

VXLAN_NAME = "glia_vxlan"
VXLAN_PORT = 8472
# Host-side veth names: "gliae" + hex. Distinct from "glia_vxlan", so a sweep of
# list_links(HOST_PREFIX) only ever finds endpoint veths.
HOST_PREFIX = "gliae"
IFNAMSIZ = 15  # usable characters of an interface name

_SCOPE_LINK = 253
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True, slots=True)
class VethInfo:
    """What the agent records about an endpoint's veth."""

    host_ifname: str
    host_ifindex: int
    host_mac: str
    container_mac: str
    container_ifindex: int


def host_ifname_for(container_id: str, ifname: str) -> str:
    """Deterministic host-side name, so a restarted agent or a DEL finds it."""
    digest = hashlib.sha256(f"{container_id}/{ifname}".encode()).hexdigest()
    return HOST_PREFIX + digest[: IFNAMSIZ - len(HOST_PREFIX)]


@contextmanager
def _rtnl(step: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise DatapathError(f"{step}: {e.strerror or e}") from None


@contextmanager
def _netlink(step: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as e:
        raise DatapathError(f"{step}: {os.strerror(e.code) if e.code else e}") from None


def _write_sysctl(path: str, value: str) -> None:
    """/proc/sys/net follows the calling thread's network namespace."""
    try:
        Path(path).write_text(value)
    except OSError as e:
        raise DatapathError(f"setting {path}={value}: {e.strerror}") from None


def _disable_ipv6(ifname: str | None) -> None:
    names = ["all", "default"] if ifname is None else [ifname]
    for name in names:
        path = f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6"
        if os.path.exists(path):  # absent when the kernel runs without IPv6
            _write_sysctl(path, "1")


def _link_index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _link(ipr: IPRoute, index: int) -> Any:
    return ipr.link("get", index=index)[0]


def random_mac() -> str:
    """A random locally administered unicast MAC, the kind the kernel gives a veth."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def create_endpoint_veth(
    *,
    netns_path: str,
    ifname: str,
    host_ifname: str,
    ip: str,
    gateway: str,
    mtu: int,
    host_mac: str | None = None,
    container_mac: str | None = None,
) -> VethInfo:
    """Create and address an endpoint's veth pair; roll back on failure.

    Runs in the node's namespace; ``netns_path`` is the pod's (for podman
    ``/run/netns/netns-<uuid>``). The peer is created directly inside the pod
    namespace under its final name, so it never collides with node links.
    The MACs are the given ones (:func:`random_mac` otherwise): the caller may
    record them before the pair exists, and nothing has to be read back.
    """
    if not 0 < len(host_ifname) <= IFNAMSIZ or not 0 < len(ifname) <= IFNAMSIZ:
        raise DatapathError(f"interface names must have 1..{IFNAMSIZ} characters")
    for what, value in (("endpoint IP", ip), ("gateway", gateway)):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise DatapathError(f"{what} {value!r} is not an IPv4 address") from None
    host_mac = host_mac or random_mac()
    container_mac = container_mac or random_mac()
    for what, value in (("host MAC", host_mac), ("container MAC", container_mac)):
        if not _MAC.fullmatch(value):
            raise DatapathError(f"{what} {value!r} is not a MAC address like 02:00:00:00:00:01")
    # rtnl, not pyroute2: ~0.3 ms of Python per request there, ~14 requests.
    with rtnl.Rtnl() as nl:
        try:
            ns_fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise DatapathError(
                f"cannot open pod network namespace {netns_path}: {e.strerror}"
            ) from None
        try:
            new_veth_pair(nl, host_ifname, ifname, ns_fd, mtu, host_mac, container_mac, netns_path)
        finally:
            os.close(ns_fd)
        try:
            host_index = index_of(nl, host_ifname, "the node")
            container_ifindex = run_in_netns(
                netns_path, _configure_pod_side, ifname, ip, gateway, host_mac
            )
            configure_host_side(nl, host_ifname, host_index, ip, container_mac)
        except BaseException:
            delete_quietly(nl, host_ifname)
            raise
    return VethInfo(host_ifname, host_index, host_mac, container_mac, container_ifindex)


def new_veth_pair(
    nl: rtnl.Rtnl,
    host_ifname: str,
    peer_ifname: str,
    peer_netns_fd: int,
    mtu: int,
    host_mac: str,
    peer_mac: str,
    where: str,
) -> None:
    """The pair, its peer created in the namespace of ``peer_netns_fd`` (``where``, for
    errors) under its final name and both MACs set; DatapathError naming what failed."""
    request = rtnl.new_veth(
        host_ifname,
        peer_ifname,
        peer_netns_fd=peer_netns_fd,
        mtu=mtu,
        host_mac=host_mac,
        peer_mac=peer_mac,
    )
    try:
        nl.run([request])
    except rtnl.RtnlError as e:
        if e.errno == errno.EEXIST and nl.link_index(host_ifname) is not None:
            raise DatapathError(f"host interface {host_ifname} already exists") from None
        if e.errno == errno.EEXIST:
            raise DatapathError(f"interface {peer_ifname} already exists in {where}") from None
        raise DatapathError(f"{e.step} ({where}): {e.strerror}") from None


def index_of(nl: rtnl.Rtnl, ifname: str, where: str) -> int:
    with _rtnl(f"looking up {ifname} in {where}"):
        index = nl.link_index(ifname)
    if index is None:
        raise DatapathError(f"{ifname} did not appear in {where}")
    return index


def _configure_pod_side(ifname: str, ip: str, gateway: str, host_mac: str) -> int:
    # IPv6 off before the link is up, so no router solicitation or DAD leaks out.
    _disable_ipv6(None)
    _disable_ipv6(ifname)
    with rtnl.Rtnl() as nl:
        index = index_of(nl, ifname, "the pod namespace")
        with _rtnl(f"configuring {ifname} in the pod namespace"):
            nl.run(
                [
                    rtnl.add_address(index, ip, 32, ifname),
                    rtnl.link_up(index, ifname),
                    rtnl.replace_route(gateway, 32, index, scope=_SCOPE_LINK),
                    rtnl.replace_route("0.0.0.0", 0, index, scope=0, gateway=gateway, onlink=True),
                    rtnl.replace_neighbour(index, gateway, host_mac),
                ]
            )
    return index


def configure_host_side(
    nl: rtnl.Rtnl, host_ifname: str, host_index: int, ip: str, container_mac: str
) -> None:
    _disable_ipv6(host_ifname)
    with _rtnl(f"configuring host side {host_ifname}"):
        nl.run(
            [
                rtnl.link_up(host_index, host_ifname),
                rtnl.replace_route(ip, 32, host_index, scope=_SCOPE_LINK),
                rtnl.replace_neighbour(host_index, ip, container_mac),
            ]
        )


def delete_quietly(nl: rtnl.Rtnl, ifname: str) -> None:
    try:
        nl.delete_link(ifname)
    except OSError as e:
        log.warning("rollback: deleting %s failed: %s", ifname, e)


def delete_endpoint_veth(host_ifname: str) -> bool:
    """Delete the pair (routes and neighbours go with it); False if already gone."""
    try:
        with rtnl.Rtnl() as nl:
            return nl.delete_link(host_ifname)
    except OSError as e:
        raise DatapathError(f"deleting {host_ifname}: {e.strerror or e}") from None


def _vxlan_matches(link: Any, port: int, mtu: int) -> bool:
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get("IFLA_INFO_DATA")
    return (
        data is not None
        and data.get("IFLA_VXLAN_COLLECT_METADATA") == 1
        and data.get("IFLA_VXLAN_PORT") == port
        and link.get("IFLA_MTU") == mtu
    )


def ensure_vxlan(name: str = VXLAN_NAME, *, port: int = VXLAN_PORT, mtu: int = 1500) -> int:
    """The node's VXLAN device in collect-metadata mode, up; its ifindex.

    An existing device with this name and the same settings is kept (ifindex
    stable across agent restarts); one with other settings is replaced.
    """
    with IPRoute() as ipr:
        index = _link_index(ipr, name)
        if index is not None and not _vxlan_matches(_link(ipr, index), port, mtu):
            log.info("replacing %s: settings differ", name)
            with _netlink(f"deleting mismatched {name}"):
                ipr.link("del", index=index)
            index = None
        if index is None:
            with _netlink(f"creating VXLAN device {name} (external, dstport {port})"):
                ipr.link(
                    "add",
                    ifname=name,
                    kind="vxlan",
                    vxlan_collect_metadata=1,
                    vxlan_learning=0,
                    vxlan_port=port,
                    mtu=mtu,
                )
            index = _link_index(ipr, name)
            if index is None:
                raise DatapathError(f"VXLAN device {name} vanished after creation")
        _disable_ipv6(name)
        with _netlink(f"bringing {name} up"):
            ipr.link("set", index=index, state="up")
    return index


def list_links(prefix: str) -> list[tuple[str, int]]:
    """(name, ifindex) of the links whose name starts with ``prefix``, by name."""
    with IPRoute() as ipr:
        links = [(str(link.get("IFLA_IFNAME")), int(link["index"])) for link in ipr.link("dump")]
    return sorted((name, index) for name, index in links if name.startswith(prefix))
