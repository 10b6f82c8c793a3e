"""A declared Service + the cluster's endpoints + probe results -> its ClusterService.

Pure. Called by the operator's :class:`~glia.operator.services.ServiceResolver`
for every Service whose inputs changed; agents program their load-balancing
maps from the result.

- An endpoint backs a Service when it is in the Service's namespace, in state
  ``ready`` (its labels, hence its identity, are known) and carries every
  ``key=value`` of the selector among its labels.
- Each (endpoint, Service port) pair is one :class:`Backend`. A numeric
  ``targetPort`` is used as is; a named one is looked up in the endpoint's
  label ``port.glia.io/<name>=<number>``, and an endpoint without that label
  (or with a bad number) does not back that port.
- A backend is ready when the Service's health check is ``none``, or when the
  probe of ``(<ns>/<name>, ip, target port)`` said so; no result yet means not
  ready (a new endpoint is not sent traffic before its first good probe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from glia.model.endpoint import Endpoint, EndpointState
from glia.model.service import (
    PORT_LABEL_PREFIX,
    Backend,
    ClusterService,
    ProbeType,
    ServicePort,
    ServiceSpec,
)

HealthKey = tuple[str, str, int]  # ("<namespace>/<name>", backend ip, backend port)
HealthLookup = Mapping[HealthKey, bool] | Callable[[str, str, int], bool | None]


def service_id(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every ``key=value`` of a (non-empty) selector is among the labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def backs(spec: ServiceSpec, ep: Endpoint) -> bool:
    """Whether the endpoint is one of the Service's backends (any readiness)."""
    return (
        ep.namespace == spec.namespace
        and ep.state is EndpointState.READY
        and selects(spec.selector, ep.labels)
    )


def target_port(port: ServicePort, ep: Endpoint) -> int | None:
    """The endpoint's port for a Service port, None if a named port is not declared."""
    if isinstance(port.target_port, int):
        return port.target_port
    raw = ep.labels.get(PORT_LABEL_PREFIX + port.target_port, "")
    if not raw.isascii() or not raw.isdigit():
        return None
    number = int(raw)
    return number if 1 <= number <= 65535 else None


def _lookup(health: HealthLookup) -> Callable[[str, str, int], bool | None]:
    if callable(health):
        return health
    return lambda svc, ip, port: health.get((svc, ip, port))


def resolve(
    spec: ServiceSpec,
    endpoints: Iterable[Endpoint],
    health: HealthLookup,
    cluster: str,
    cluster_id: int,
) -> ClusterService:
    """The Service's ClusterService: frontends from the spec, backends sorted for stable output."""
    svc = service_id(spec.namespace, spec.name)
    probe = _lookup(health)
    unprobed = spec.health.type is ProbeType.NONE
    backends: list[Backend] = []
    for ep in endpoints:
        if not backs(spec, ep):
            continue
        for port in spec.ports:
            number = target_port(port, ep)
            if number is None:
                continue
            backends.append(
                Backend(
                    ip=ep.ip,
                    port=number,
                    protocol=port.protocol,
                    port_name=port.name,
                    frontend_port=port.port,
                    node=ep.node,
                    cluster=ep.cluster or cluster,
                    endpoint=service_id(ep.namespace, ep.name),
                    ready=unprobed or probe(svc, ep.ip, number) is True,
                )
            )
    backends.sort(key=lambda b: (b.frontend_port, b.protocol, _ip_key(b.ip), b.port, b.endpoint))
    return ClusterService(
        namespace=spec.namespace,
        name=spec.name,
        cluster=cluster,
        cluster_id=cluster_id,
        cluster_ip=spec.cluster_ip,
        ports=list(spec.ports),
        backends=backends,
        session_affinity=spec.session_affinity,
        affinity_timeout=spec.affinity_timeout,
        lb_algorithm=spec.lb_algorithm,
        health=spec.health,
        global_=spec.global_,
        shared=spec.shared,
        affinity=spec.affinity,
        affinity_min_ready=spec.affinity_min_ready,
    )


def _ip_key(ip: str) -> tuple[int, tuple[int, ...], str]:
    parts = ip.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() for p in parts):
        return (0, tuple(int(p) for p in parts), "")
    return (1, (), ip)
