"""Node records and the operator's pod CIDR allocations.

A node's record is written by that node's agent (``nodes/v2/<cluster>/<node>``);
its pod CIDR is the operator's allocation (``podcidrs/v1/<cluster>/nodes/<node>``),
which is what bounds the node's addresses, never what the node says of itself.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network

from glia.kvstore import keys
from glia.model.cluster import validate_name
from glia.model.node import Node, PodCIDRAllocation
from glia.validate.addresses import network, unicast
from glia.validate.bounds import ClusterBounds
from glia.validate.common import decode, key_parts
from glia.validate.errors import Rejected

MAX_BOOT_ID = 64


def check_node(key: str, raw: bytes, bounds: ClusterBounds) -> Node:
    """A node record, checked against its key and the cluster's bounds."""
    _, name = key_parts(key, keys.NODES, 2, bounds)
    node = decode(Node, raw)
    if node.name != name:
        raise Rejected(f"name {node.name!r} does not match its key ({name!r})")
    try:
        validate_name("node", node.name)
    except ValueError as e:
        raise Rejected(str(e)) from None
    if node.cluster != bounds.cluster:
        raise Rejected(f"cluster {node.cluster!r} is not {bounds.cluster!r}")
    if node.cluster_id != bounds.cluster_id:
        raise Rejected(
            f"cluster_id {node.cluster_id} is not {bounds.cluster!r}'s {bounds.cluster_id}"
        )
    ip = unicast(node.node_ip, "node_ip")
    if (pool := bounds.pool_of(ip)) is not None:
        raise Rejected(f"node_ip {ip} is inside the pod pool {pool}")
    if bounds.service_cidr is not None and ip in bounds.service_cidr:
        raise Rejected(f"node_ip {ip} is inside the service CIDR {bounds.service_cidr}")
    if node.pod_cidr is not None:
        network(node.pod_cidr, "pod_cidr")
    if node.health_ip is not None:
        unicast(node.health_ip, "health_ip")
    if len(node.boot_id) > MAX_BOOT_ID:
        raise Rejected(f"boot_id of {len(node.boot_id)} characters (at most {MAX_BOOT_ID})")
    return node


def check_podcidr(key: str, raw: bytes, bounds: ClusterBounds) -> tuple[str, IPv4Network]:
    """``(node, cidr)`` of an allocation, inside the pod pool."""
    _, kind, name = key_parts(key, keys.PODCIDRS, 3, bounds)
    if kind != "nodes":
        raise Rejected("not a node's pod CIDR allocation")
    alloc = decode(PodCIDRAllocation, raw)
    if alloc.node != name:
        raise Rejected(f"node {alloc.node!r} does not match its key ({name!r})")
    cidr = network(alloc.cidr, "cidr")
    if bounds.pod_pools and bounds.pool_of(cidr) is None:
        pools = ", ".join(str(p) for p in bounds.pod_pools)
        raise Rejected(f"cidr {cidr} is outside the pod pool ({pools})")
    return name, cidr


@dataclass(frozen=True, slots=True)
class Allocation:
    cidr: IPv4Network
    revision: int  # create revision: the older of two overlapping allocations wins


def node_cidrs(allocs: Mapping[str, Allocation]) -> tuple[dict[str, IPv4Network], dict[str, str]]:
    """Each node's pod CIDR, and the nodes refused because their block overlaps an older one.

    The accepted blocks are disjoint, so one bisection over them sorted by start finds
    a clash (the agent derives this table again on every node event: pairwise checks
    made a 200-node remote cluster cost seconds)."""
    out: dict[str, IPv4Network] = {}
    refused: dict[str, str] = {}
    starts: list[int] = []  # accepted blocks, sorted by first address
    spans: list[tuple[int, str]] = []  # their last address and node, in the same order
    for name, a in sorted(allocs.items(), key=lambda kv: (kv[1].revision, kv[0])):
        first, last = int(a.cidr.network_address), int(a.cidr.broadcast_address)
        i = bisect.bisect_right(starts, last)
        if i and spans[i - 1][0] >= first:
            clash = spans[i - 1][1]
            refused[name] = f"pod CIDR {a.cidr} overlaps node {clash}'s {out[clash]}"
            continue
        out[name] = a.cidr
        starts.insert(i, first)
        spans.insert(i, (last, name))
    return out, refused


@dataclass(frozen=True, slots=True)
class NodeEntry:
    node: Node
    revision: int  # create revision: the older of two nodes claiming one node IP wins


def unique_node_ips(
    nodes: Mapping[str, NodeEntry], taken: Callable[[str], str | None] | None = None
) -> tuple[dict[str, Node], dict[str, str]]:
    """Nodes by name with distinct node IPs, and those refused for claiming a taken IP.

    ``taken`` (a remote cluster's nodes): why an address belongs to another
    cluster (ours), None if it does not; a node claiming one is refused.
    Node IPs are compared as text: :func:`check_node` admits only canonical dotted
    quads (and parsing each again on every node event showed in profiles).
    """
    owner: dict[str, str] = {}
    out: dict[str, Node] = {}
    refused: dict[str, str] = {}
    for name, e in sorted(nodes.items(), key=lambda kv: (kv[1].revision, kv[0])):
        ip = e.node.node_ip
        why = taken(ip) if taken is not None else None
        if why is not None:
            refused[name] = f"node_ip {ip} is {why}"
        elif ip in owner:
            refused[name] = f"node_ip {ip} is already node {owner[ip]}'s"
        else:
            owner[ip] = name
            out[name] = e.node
    return out, refused
