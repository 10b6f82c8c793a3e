"""An endpoint's IP for a CNI ADD, each refusal of the node's IPAM as a CNI error.

Used by :class:`glia.endpoint.manager.EndpointManager`. The errors say who holds
a requested address, and which node's pod CIDR an address of another node
belongs to (read from the kvstore; a courtesy, left out if unavailable).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from glia.cni import spec
from glia.cni.spec import CniError
from glia.endpoint import request
from glia.ipam.local import AddressInUse, AddressRefused, LocalIPAM
from glia.ipam.pool import PoolExhausted
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.model import codec
from glia.model.node import Node

log = logging.getLogger(__name__)


async def allocate_ip(
    ipam: LocalIPAM,
    owner: str,
    requested: str | None,
    *,
    node: str,
    holder: Callable[[str], str],
    kv: KVClient,
    cluster: str,
) -> str:
    """``requested`` or the next free address for ``owner``; ``holder(owner)``
    names the endpoint holding an address."""
    try:
        return ipam.allocate(owner, requested)
    except PoolExhausted as e:
        raise CniError(spec.ERR_TRY_AGAIN_LATER, str(e)) from None
    except AddressInUse as e:
        raise CniError(
            spec.ERR_INVALID_ENV,
            f"requested address {e.ip} is in use on node {node} by {holder(e.owner)}",
            "choose a free address, or remove that container first",
        ) from None
    except AddressRefused as e:
        hint = await owner_node_hint(kv, cluster, node, requested)
        raise CniError(
            spec.ERR_INVALID_ENV,
            f"requested address refused: {e}{hint}",
            f"node {node} gives addresses of {ipam.cidr} only, "
            "except its network, gateway and broadcast addresses",
        ) from None


async def owner_node_hint(kv: KVClient, cluster: str, me: str, ip: str | None) -> str:
    """``"; it belongs to node n2's pod CIDR ..."`` if another node's CIDR holds ``ip``."""
    if ip is None:
        return ""
    try:
        items, _ = await kv.list(keys.nodes(cluster))
        for item in items:
            node = codec.decode(Node, item.value)
            if node.name != me and node.pod_cidr and request.in_cidr(ip, node.pod_cidr):
                return (
                    f"; it belongs to node {node.name}'s pod CIDR {node.pod_cidr}: "
                    f"run the container on {node.name}"
                )
    except Exception as e:  # the hint is a courtesy; the refusal stands without it
        log.debug("no owner node for %s: %s", ip, e)
    return ""
