"""Egress masquerade and node routing, with the kernel's NAT in the node's namespace.

Called by the agent (:mod:`glia.agent.daemon`) when its configuration says
``masquerade: true`` (the lab does): after the node has its pod CIDR and after
every change of the ipcache's node tables (its cluster's and every remote
cluster's), :meth:`EgressSync.update` makes the node's namespace say:

- ``net.ipv4.ip_forward = 1``: pod traffic that ``from_endpoint`` hands to the
  stack (not for a pod of the mesh) is routed, instead of dropped;
- nftables table ``ip glia_egress``: connections of this node's pods to
  anything outside every pod CIDR of the mesh leave with the node's address
  (``masquerade``); a forwarded packet that opens a connection towards a pod
  CIDR is dropped unless it comes from a node of the mesh (so the world, even
  routing pod addresses at this node, never opens a connection to a pod;
  replies pass through conntrack; a connection the node itself DNATs to a
  pod, such as a published port, is the node's choice and passes),
  pod-to-pod traffic never takes the node's stack (glia's programs deliver
  it; without them it stops), and
  nothing that came out of the tunnel is routed on (another node's pods
  reach only this node's pods and the node itself through it);
- a route per other node's pod CIDR (every cluster's) via that node's
  address, with route protocol :data:`ROUTE_PROTO`, so processes of the node
  reach every pod (the other node delivers, through ``to_endpoint``, with the
  ``remote-node`` identity). The underlay must let nodes reach each other
  directly (the lab's bridge does).

The whole table is replaced in one ``nft -f`` transaction, never half
written. :func:`plan` and :func:`nft_script` are pure.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from glia.datapath.netlink import HOST_PREFIX, VXLAN_NAME

log = logging.getLogger(__name__)

TABLE = "glia_egress"
ROUTE_PROTO = 200  # marks the node routes this module owns (unnamed in iproute2's rt_protos)
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


@dataclass(frozen=True, slots=True)
class NodeRoute:
    cidr: IPv4Network
    via: IPv4Address


@dataclass(frozen=True, slots=True)
class EgressPlan:
    """What the node's namespace must hold."""

    local_cidr: IPv4Network  # this node's pods: the only sources masqueraded
    mesh: tuple[IPv4Network, ...]  # never masqueraded; collapsed, sorted
    nodes: tuple[IPv4Address, ...]  # may open connections to pods through this node
    routes: tuple[NodeRoute, ...]  # other nodes' pod CIDRs, via those nodes


@dataclass(frozen=True, slots=True)
class ClusterNodes:
    """One cluster as the ipcache knows it: its pools and its valid nodes."""

    pools: tuple[IPv4Network, ...]
    nodes: dict[str, tuple[str, IPv4Network | None]]  # name -> (node IP, pod CIDR)


def plan(local_cidr: str, self_ip: str, clusters: Iterable[ClusterNodes]) -> EgressPlan:
    """The plan for a node with pod CIDR ``local_cidr`` and address ``self_ip``."""
    local = IPv4Network(local_cidr)
    mesh: list[IPv4Network] = [local]
    nodes: set[IPv4Address] = set()
    routes: dict[IPv4Network, IPv4Address] = {}
    for c in clusters:
        mesh.extend(c.pools)
        for ip, cidr in c.nodes.values():
            addr = IPv4Address(ip)
            if ip == self_ip:
                continue
            nodes.add(addr)
            if cidr is not None and not cidr.overlaps(local):
                mesh.append(cidr)
                routes[cidr] = addr
    return EgressPlan(
        local_cidr=local,
        mesh=tuple(sorted(collapse_addresses(mesh))),
        nodes=tuple(sorted(nodes)),
        routes=tuple(NodeRoute(c, routes[c]) for c in sorted(routes)),
    )


def _elements(items: Iterable[object]) -> str:
    listed = ", ".join(str(i) for i in items)
    return f" elements = {{ {listed} }};" if listed else ""


def nft_script(p: EgressPlan) -> str:
    """``nft -f`` input replacing table ``ip glia_egress`` in one transaction."""
    return f"""table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{
    set mesh {{ type ipv4_addr; flags interval;{_elements(p.mesh)} }}
    set nodes {{ type ipv4_addr;{_elements(p.nodes)} }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {p.local_cidr} ip daddr != @mesh oifname != "{HOST_PREFIX}*" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        iifname "{VXLAN_NAME}" counter drop
        ct status dnat accept
        iifname "{HOST_PREFIX}*" ip daddr @mesh counter drop
        iifname "{HOST_PREFIX}*" accept
        ip daddr @mesh ip saddr != @nodes counter drop
    }}
}}
"""


class EgressError(RuntimeError):
    """The node's namespace refused part of the egress set-up."""


def _apply_nft(script: str) -> None:
    try:
        proc = subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EgressError(f"nft -f: {e}") from None
    if proc.returncode != 0:
        raise EgressError(f"nft -f (table {TABLE}): {proc.stderr.strip()}")


def _sync_routes(routes: tuple[NodeRoute, ...]) -> list[str]:
    """Make the node's routes of :data:`ROUTE_PROTO` exactly ``routes``; problems found."""
    problems = []
    want = {str(r.cidr): str(r.via) for r in routes}
    with IPRoute() as ipr:
        have: dict[str, str] = {}
        for r in ipr.route("dump", family=2, proto=ROUTE_PROTO):
            dst = f"{r.get('RTA_DST')}/{r['dst_len']}"
            have[dst] = str(r.get("RTA_GATEWAY"))
        for dst in sorted(have.keys() - want.keys()):
            try:
                ipr.route("del", dst=dst, proto=ROUTE_PROTO)
            except NetlinkError as e:
                problems.append(f"deleting route {dst}: {e}")
        for dst, via in sorted(want.items()):
            if have.get(dst) == via:
                continue
            try:
                ipr.route("replace", dst=dst, gateway=via, proto=ROUTE_PROTO)
            except NetlinkError as e:
                problems.append(f"route {dst} via {via}: {e}")
    return problems


def apply(p: EgressPlan) -> list[str]:
    """Write ``p`` into the calling thread's network namespace (the node's)."""
    try:
        Path(IP_FORWARD).write_text("1")
    except OSError as e:
        raise EgressError(f"setting {IP_FORWARD}=1: {e.strerror}") from None
    _apply_nft(nft_script(p))
    return _sync_routes(p.routes)


def remove() -> None:
    """Remove the table (tests; an agent switched to ``masquerade: false``)."""
    subprocess.run(
        ["nft", "delete", "table", "ip", TABLE], capture_output=True, timeout=30, check=False
    )


class EgressSync:
    """Keeps the node's masquerade, forward filter and node routes current."""

    def __init__(self, self_ip: str) -> None:
        self._self_ip = self_ip
        self._applied: EgressPlan | None = None
        self._lock = asyncio.Lock()
        self.problems: list[str] = []  # routes the namespace refused (the rest works)
        self.error: str | None = None  # the table or forwarding refused: no egress

    async def update(self, local_cidr: str, clusters: list[ClusterNodes]) -> None:
        p = plan(local_cidr, self._self_ip, clusters)
        async with self._lock:
            if p == self._applied:
                return
            try:
                self.problems = await asyncio.to_thread(apply, p)
            except EgressError as e:
                self.error = str(e)
                log.error("egress: %s", e)
                return
            self.error = None
            for line in self.problems:
                log.warning("egress: %s", line)
            self._applied = p
            log.info(
                "egress: masquerading %s except %d mesh prefixes; %d node routes",
                p.local_cidr,
                len(p.mesh),
                len(p.routes),
            )

    def status(self) -> tuple[bool, str, bool]:
        """(ok, message, degraded) for the agent's ``egress`` subsystem."""
        if self.error is not None:
            return False, self.error, False
        p = self._applied
        if p is None:
            return False, "not set up yet", False
        msg = (
            f"masquerading {p.local_cidr} except {len(p.mesh)} mesh prefixes; "
            f"{len(p.routes)} node routes"
        )
        if self.problems:
            return True, f"{msg}; degraded: {'; '.join(self.problems)}", True
        return True, msg, False
