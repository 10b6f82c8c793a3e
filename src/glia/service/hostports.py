"""Host ports (``podman run -p``) as load-balancer frontends (pure).

Called by the agent (:mod:`glia.agent.daemon`) whenever its endpoints change,
and the result handed to :meth:`glia.agent.services.AgentServices.set_host_ports`,
which programs them through the lb maps' one writer like any Service
(docs/hostport.md). One :class:`~glia.model.service.ClusterService` per
(endpoint, frontend address): a mapping without host IP is served on the node
IP and on 127.0.0.1, one with a host IP only there. Its ports are the
endpoint's mappings to that address (port = host port, target = container
port) and its one backend, always ready, is the endpoint itself.

Names: the namespace is :data:`HOSTPORT_NAMESPACE` (empty), which no user
Service has (records are keyed by non-empty segments, declared namespaces
are DNS labels) and no DNS name can produce (glia.dns.names drops empty
labels); the name is ``hostport:<namespace>/<name>@<address>``, as ``glia
service list`` shows it. DNS never answers them anyway: they are not
returned by ``AgentServices.programmed_service``.
"""

from __future__ import annotations

from collections.abc import Iterable

from glia.model.endpoint import Endpoint, HostPort
from glia.model.service import (
    Backend,
    ClusterService,
    HealthCheck,
    ProbeType,
    Protocol,
    ServicePort,
)

HOSTPORT_NAMESPACE = ""
HOSTPORT_PREFIX = "hostport:"
LOOPBACK = "127.0.0.1"
_PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP}


def is_host_port_name(namespace: str, name: str) -> bool:
    """Whether (namespace, name) is a host port's service (never a user's)."""
    return namespace == HOSTPORT_NAMESPACE and name.startswith(HOSTPORT_PREFIX)


def _addresses(hp: HostPort, node_ip: str) -> tuple[str, ...]:
    if hp.host_ip:
        return (hp.host_ip,)
    return (node_ip, LOOPBACK) if node_ip != LOOPBACK else (LOOPBACK,)


def host_port_services(
    endpoints: Iterable[Endpoint], node_ip: str, cluster: str, cluster_id: int
) -> list[ClusterService]:
    """The host-port services of this node's ``endpoints``, sorted by name.

    Overlaps between endpoints were refused at ADD; should two still claim a
    frontend (records of an older agent), the planner keeps it for one and
    reports the other as a conflict, as for two Services.
    """
    out: list[ClusterService] = []
    for ep in endpoints:
        if not ep.ports:
            continue
        by_addr: dict[str, list[HostPort]] = {}
        for hp in ep.ports:
            if hp.protocol not in _PROTOCOLS:  # a hand-edited record: nothing to serve
                continue
            for addr in _addresses(hp, node_ip):
                mine = by_addr.setdefault(addr, [])
                if not any(o.host_port == hp.host_port and o.protocol == hp.protocol for o in mine):
                    mine.append(hp)
        for addr, mappings in by_addr.items():
            ports = [
                ServicePort(hp.host_port, hp.container_port, _PROTOCOLS[hp.protocol])
                for hp in mappings
            ]
            backends = [
                Backend(
                    ip=ep.ip,
                    port=hp.container_port,
                    protocol=_PROTOCOLS[hp.protocol],
                    port_name="",
                    frontend_port=hp.host_port,
                    node=ep.node,
                    cluster=cluster,
                    endpoint=f"{ep.namespace}/{ep.name}",
                    ready=True,
                )
                for hp in mappings
            ]
            out.append(
                ClusterService(
                    namespace=HOSTPORT_NAMESPACE,
                    name=f"{HOSTPORT_PREFIX}{ep.namespace}/{ep.name}@{addr}",
                    cluster=cluster,
                    cluster_id=cluster_id,
                    cluster_ip=addr,
                    ports=ports,
                    backends=backends,
                    # As podman's portmap: the container answers, or the client sees why.
                    health=HealthCheck(type=ProbeType.NONE),
                    host_port=True,
                )
            )
    return sorted(out, key=lambda s: s.name)
