"""Leftovers no endpoint record claims, removed when the agent starts.

Called by :meth:`glia.endpoint.manager.EndpointManager.restore` once it has
adopted the recorded endpoints: endpoint veths, endpoint map entries and IPAM
allocations of this node that none of them holds (a crash mid-ADD, a record
lost with its disk) are removed, so nothing routes to a pod that is gone and
no address stays taken forever.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable

from glia.datapath import netlink
from glia.datapath.loader import Datapath
from glia.datapath.runner import RunDatapath
from glia.ipam.local import LocalIPAM
from glia.model.endpoint import Endpoint


async def remove_strays(
    adopted: Collection[Endpoint],
    links: Iterable[str],
    dp: Datapath,
    run_dp: RunDatapath,
    ipam: LocalIPAM,
) -> dict[str, int]:
    """Counts of what went: ``stray_links``, ``stray_map``, ``stray_ips``."""
    stats = {"stray_links": 0, "stray_map": 0, "stray_ips": 0}
    known_links = {ep.host_ifname for ep in adopted}
    for name in links:
        if name not in known_links:
            await run_dp(functools.partial(netlink.delete_endpoint_veth, name))
            stats["stray_links"] += 1
    known_ips = {ep.ip for ep in adopted}
    for ip, _info in await run_dp(dp.endpoints.items):
        if ip not in known_ips:
            await run_dp(functools.partial(dp.endpoints.delete, ip))
            stats["stray_map"] += 1
    for ip in ipam.allocations():
        if ip not in known_ips:
            ipam.release(ip)
            stats["stray_ips"] += 1
    return stats
