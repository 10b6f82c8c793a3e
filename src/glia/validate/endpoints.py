"""Endpoint records (``endpoints/v2/<cluster>/<node>/<ns>/<name>``, that node's agent).

The operator makes Service backends of them, so an endpoint must be what it
says: an IP inside its node's pod CIDR (the etcd server's address, a node IP
or a public one is never a backend, and is never probed).
"""

from __future__ import annotations

from ipaddress import IPv4Network

from glia.kvstore import keys
from glia.model.endpoint import HOST_PORT_PROTOCOLS, MAX_ALIASES, Endpoint, HostPort, alias_problem
from glia.validate.addresses import in_block, ipv4, unicast
from glia.validate.bounds import ClusterBounds
from glia.validate.common import decode, key_parts
from glia.validate.errors import Rejected
from glia.validate.identities import check_labels, check_number


def check_endpoint(key: str, raw: bytes, bounds: ClusterBounds) -> Endpoint:
    """Shape, key and range checks (no node CIDR needed)."""
    cluster, node, ns, name = key_parts(key, keys.ENDPOINTS, 4, bounds)
    ep = decode(Endpoint, raw)
    if (ep.cluster, ep.node, ep.namespace, ep.name) != (cluster, node, ns, name):
        raise Rejected(
            f"value names {ep.cluster}/{ep.node}/{ep.namespace}/{ep.name}, "
            f"its key {cluster}/{node}/{ns}/{name}"
        )
    ip = unicast(ep.ip, "ip")
    bounds.require_pool(ip, "ip")
    check_number(ep.identity, bounds, "identity")
    check_labels(ep.labels, f"endpoint {ns}/{name}")
    if len(ep.aliases) > MAX_ALIASES:
        raise Rejected(f"endpoint {ns}/{name} has {len(ep.aliases)} aliases; at most {MAX_ALIASES}")
    for alias in ep.aliases:
        problem = alias_problem(alias)
        if problem is not None:
            raise Rejected(f"endpoint {ns}/{name}: alias {problem}")
    for hp in ep.ports:
        _check_host_port(hp, f"endpoint {ns}/{name}")
    return ep


def _check_host_port(hp: HostPort, where: str) -> None:
    """Shape only: what a host port means is the owning node's business (its agent serves it)."""
    for what, port in (("host_port", hp.host_port), ("container_port", hp.container_port)):
        if isinstance(port, bool) or not 1 <= port <= 65535:
            raise Rejected(f"{where}: host port {what} {port!r} is not a port (1..65535)")
    if hp.protocol not in HOST_PORT_PROTOCOLS:
        raise Rejected(f"{where}: host port protocol {hp.protocol!r} is not tcp or udp")
    if hp.host_ip:
        ipv4(hp.host_ip, f"{where}: host port host_ip")  # 127.0.0.1 is a fine host IP


def check_endpoint_placement(ep: Endpoint, cidr: IPv4Network | None) -> None:
    if cidr is None:
        raise Rejected(f"node {ep.node!r} has no pod CIDR allocated by the operator")
    in_block(unicast(ep.ip, "ip"), cidr, "ip", f"node {ep.node}'s pod CIDR")
