"""ipcache entries (``ip/v2/<cluster>/<node>/<ip>``, written by that node's agent).

:func:`check_entry` checks what a record says on its own (shape, key,
identity range, cluster id); :func:`check_placement` checks it against the
node that wrote it: the IP inside that node's pod CIDR (the operator's
allocation), the tunnel endpoint that node's own node IP. A node can at most
disturb its own pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from glia.kvstore import keys
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node
from glia.validate.addresses import in_block, ipv4, unicast
from glia.validate.bounds import ClusterBounds
from glia.validate.common import decode, key_parts
from glia.validate.errors import Rejected
from glia.validate.identities import check_number


@dataclass(frozen=True, slots=True)
class KeyedEntry:
    node: str  # the writer, from the key
    entry: IPCacheEntry


def check_entry(key: str, raw: bytes, bounds: ClusterBounds) -> KeyedEntry:
    _, node, ip = key_parts(key, keys.IPCACHE, 3, bounds)
    entry = decode(IPCacheEntry, raw)
    if entry.ip != ip:
        raise Rejected(f"ip {entry.ip!r} does not match its key ({ip})")
    if entry.node != node:
        raise Rejected(f"node {entry.node!r} does not match its key ({node!r})")
    unicast(entry.ip, "ip")
    ipv4(entry.tunnel_endpoint, "tunnel_endpoint")
    if entry.cluster_id != bounds.cluster_id:
        raise Rejected(
            f"cluster_id {entry.cluster_id} is not {bounds.cluster!r}'s {bounds.cluster_id}"
        )
    check_number(entry.identity, bounds, "identity")
    return KeyedEntry(node, entry)


def check_placement(
    e: KeyedEntry, node: Node | None, cidr: IPv4Network | None, bounds: ClusterBounds
) -> None:
    """The entry against its writer: a known node, an IP of its CIDR, its own node IP."""
    if node is None:
        raise Rejected(f"node {e.node!r} has no valid node record")
    if cidr is None:
        raise Rejected(f"node {e.node!r} has no pod CIDR allocated by the operator")
    addr = ipv4(e.entry.ip, "ip")
    bounds.require_pool(addr, "ip")
    in_block(addr, cidr, "ip", f"node {e.node}'s pod CIDR")
    if e.entry.tunnel_endpoint != node.node_ip:
        raise Rejected(
            f"tunnel_endpoint {e.entry.tunnel_endpoint} is not node {e.node}'s "
            f"node IP {node.node_ip}"
        )
