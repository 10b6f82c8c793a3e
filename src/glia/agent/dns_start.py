"""Starting glia's DNS server (glia.dns) inside the agent.

Called by :class:`glia.agent.daemon.Agent` unless its ``dns_port`` is 0. The
answers come from memory: the node's programmed Services (global ones
included) and a reflector on the cluster's endpoint records for pod names
and aliases. A port that cannot be bound leaves the agent up (networking does
not need DNS); the dns subsystem is degraded and says why.
"""

from __future__ import annotations

import logging

from glia.agent.config import AgentConfig
from glia.agent.services import AgentServices
from glia.agent.subsystems import Subsystem
from glia.dns.names import ServiceName, Sources
from glia.dns.pods import PodNames
from glia.dns.server import DnsServer, Upstream
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.kvstore.reflector import Reflector
from glia.validate.bounds import ClusterBounds

log = logging.getLogger(__name__)


async def start_dns(
    cfg: AgentConfig,
    kv: KVClient,
    services: AgentServices,
    bounds: ClusterBounds,
    status: Subsystem,
) -> tuple[DnsServer | None, PodNames, Reflector]:
    """Serve DNS on node_ip:dns_port: (the server, or None if it cannot listen; the pod
    names; their reflector, for the agent to stop)."""
    upstreams = [Upstream.parse(u) for u in cfg.dns_upstreams]
    pod_names = PodNames(bounds)
    r = Reflector(kv, keys.endpoints(cfg.cluster), pod_names, name="dns: pods")
    await r.start()

    def service(namespace: str, name: str) -> ServiceName | None:
        svc = services.programmed_service(namespace, name)
        return None if svc is None else ServiceName(svc.cluster_ip, svc.global_)

    server = DnsServer(
        Sources(
            service=service,
            pods=pod_names.lookup,
            version=lambda: (services.programmed_version, pod_names.version),
        ),
        cfg.node_ip,
        cfg.dns_port,
        upstreams,
        cfg.dns_timeout,
    )
    try:
        await server.start()
    except OSError as e:
        msg = f"cannot listen on {cfg.node_ip}:{cfg.dns_port}: {e.strerror or e}"
        log.error("dns: %s", msg)
        status.set(True, msg, degraded=True)
        return None, pod_names, r
    up = ", ".join(cfg.dns_upstreams) or "none (other names: NXDOMAIN)"
    status.set(True, f"serving on {cfg.node_ip}:{cfg.dns_port}; upstreams {up}")
    return server, pod_names, r
