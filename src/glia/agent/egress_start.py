"""Starting the node's egress (glia.agent.egress) inside the agent: masquerade and node
routes now, with what the ipcache knows, then again whenever a cluster's nodes change.

Called by :class:`glia.agent.daemon.Agent` when its ``masquerade`` setting is on.
"""

from __future__ import annotations

from glia.agent.egress import ClusterNodes, EgressSync
from glia.agent.ipcache import IPCacheSync
from glia.agent.subsystems import Subsystem


async def start_egress(
    node_ip: str, cidr: str, ipcache: IPCacheSync, status: Subsystem
) -> EgressSync:
    """Apply egress for this node's pod ``cidr``; ``status`` follows each apply."""
    egress = EgressSync(node_ip)

    def clusters() -> list[ClusterNodes]:
        return [
            ClusterNodes(
                pools=t.bounds.pod_pools,
                nodes={name: (n.node_ip, t.cidrs.get(name)) for name, n in t.valid_nodes.items()},
            )
            for t in ipcache.node_tables()
        ]

    async def update() -> None:
        await egress.update(cidr, clusters())
        ok, msg, degraded = egress.status()
        status.set(ok, msg, degraded=degraded)

    ipcache.on_nodes_changed(update)
    await update()
    return egress
