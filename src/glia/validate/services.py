"""ClusterService records (``services/v1/<cluster>/<ns>/<name>``, the operator's).

Agents program their load-balancer maps from these, so a record must not be
able to hijack an address: the frontend lies inside the service CIDR (never a
pod IP, a node IP or a public address), and every backend is an address of a
node of this cluster (inside the pod CIDR the operator gave that node). A bad
frontend, port or setting rejects the whole record; a bad backend is dropped
alone and reported, so a Service keeps its good backends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from glia.kvstore import keys
from glia.model.service import Backend, ClusterService
from glia.validate.addresses import in_block, unicast
from glia.validate.bounds import ClusterBounds
from glia.validate.common import decode, key_parts
from glia.validate.errors import Rejected

MAX_PORTS = 128
MAX_BACKENDS = 0xFFFF  # a service's slots are counted in a __u16 (glia_lb4_service.count)
MAX_AFFINITY_TIMEOUT = 86400  # as Kubernetes' sessionAffinityConfig
MAX_PROBE_SECONDS = 3600.0
MAX_THRESHOLD = 100
MAX_PATH = 1024
AFFINITIES = frozenset({"", "local", "remote", "none"})


@dataclass(frozen=True, slots=True)
class CheckedService:
    service: ClusterService  # with only the backends that passed
    dropped: list[str] = field(default_factory=list)  # one reason per dropped backend


def _port(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise Rejected(f"{what} {value!r} is not a port (1..65535)")
    return value


def _check_settings(svc: ClusterService) -> None:
    if svc.affinity not in AFFINITIES:
        raise Rejected(f"affinity {svc.affinity!r} is not one of local, remote, none")
    if not 0 <= svc.affinity_min_ready <= MAX_BACKENDS:
        raise Rejected(f"affinity_min_ready {svc.affinity_min_ready} is not in 0..{MAX_BACKENDS}")
    if svc.session_affinity and not 1 <= svc.affinity_timeout <= MAX_AFFINITY_TIMEOUT:
        raise Rejected(
            f"affinity_timeout {svc.affinity_timeout} is not in 1..{MAX_AFFINITY_TIMEOUT}"
        )
    h = svc.health
    for what, seconds in (("interval", h.interval), ("timeout", h.timeout)):
        if not 0 < seconds <= MAX_PROBE_SECONDS:
            raise Rejected(f"health.{what} {seconds} is not in (0, {MAX_PROBE_SECONDS:g}] seconds")
    for what, n in (("failure", h.failure_threshold), ("success", h.success_threshold)):
        if not 1 <= n <= MAX_THRESHOLD:
            raise Rejected(f"health.{what}_threshold {n} is not in 1..{MAX_THRESHOLD}")
    if not h.path.startswith("/") or len(h.path) > MAX_PATH or not h.path.isprintable():
        raise Rejected(
            f"health.path must start with '/', be printable, at most {MAX_PATH} characters"
        )


def _check_frontend(
    svc: ClusterService, bounds: ClusterBounds, cidrs: Mapping[str, IPv4Network]
) -> None:
    vip = unicast(svc.cluster_ip, "cluster_ip")
    if bounds.service_cidr is not None:
        in_block(vip, bounds.service_cidr, "cluster_ip", "the service CIDR")
    else:
        if (pool := bounds.pool_of(vip)) is not None:
            raise Rejected(f"cluster_ip {vip} is inside the pod pool {pool}")
        owner = next((n for n, c in cidrs.items() if vip in c), None)
        if owner is not None:
            raise Rejected(f"cluster_ip {vip} is inside node {owner}'s pod CIDR")
    if not svc.ports or len(svc.ports) > MAX_PORTS:
        raise Rejected(f"{len(svc.ports)} ports; 1..{MAX_PORTS} expected")
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(svc.ports):
        _port(p.port, f"ports[{i}].port")
        if isinstance(p.target_port, int):
            _port(p.target_port, f"ports[{i}].target_port")
        elif not p.target_port or len(p.target_port) > 15:
            raise Rejected(f"ports[{i}].target_port {p.target_port!r} is not a port name")
        if (p.port, p.protocol) in seen:
            raise Rejected(f"ports[{i}]: {p.port}/{p.protocol} appears twice")
        seen.add((p.port, p.protocol))


def _backend_problem(
    b: Backend,
    svc: ClusterService,
    frontends: set[tuple[int, str]],
    cidrs: Mapping[str, IPv4Network],
) -> str | None:
    try:
        if b.cluster != svc.cluster:
            return f"backend {b.ip}: cluster {b.cluster!r} is not {svc.cluster!r}"
        cidr = cidrs.get(b.node)
        if cidr is None:
            return f"backend {b.ip}: node {b.node!r} is not a node of {svc.cluster} with a pod CIDR"
        in_block(unicast(b.ip, "ip"), cidr, f"backend {b.ip}", f"node {b.node}'s pod CIDR")
        _port(b.port, f"backend {b.ip}: port")
        if (b.frontend_port, b.protocol) not in frontends:
            return (
                f"backend {b.ip}: serves {b.frontend_port}/{b.protocol}, not a port of the service"
            )
    except Rejected as e:
        return str(e)
    return None


def check_cluster_service(
    key: str, raw: bytes, bounds: ClusterBounds, cidrs: Mapping[str, IPv4Network]
) -> CheckedService:
    """The record with its valid backends; :class:`Rejected` if the frontend is bad."""
    cluster, ns, name = key_parts(key, keys.SERVICES, 3, bounds)
    svc = decode(ClusterService, raw)
    if (svc.cluster, svc.namespace, svc.name) != (cluster, ns, name):
        raise Rejected(f"value names {svc.cluster}/{svc.namespace}/{svc.name}, its key {key}")
    if svc.cluster_id != bounds.cluster_id:
        raise Rejected(
            f"cluster_id {svc.cluster_id} is not {bounds.cluster!r}'s {bounds.cluster_id}"
        )
    if svc.host_port:
        # Host-port frontends are node addresses: only a node's own agent makes them,
        # for its own endpoints (glia.service.hostports), never from a record.
        raise Rejected("host_port is set: host-port services are made by each agent, never read")
    if len(svc.backends) > MAX_BACKENDS:
        raise Rejected(f"{len(svc.backends)} backends; at most {MAX_BACKENDS}")
    _check_settings(svc)
    _check_frontend(svc, bounds, cidrs)
    frontends = {(p.port, str(p.protocol)) for p in svc.ports}
    good: list[Backend] = []
    dropped: list[str] = []
    for b in svc.backends:
        problem = _backend_problem(b, svc, frontends, cidrs)
        if problem is None:
            good.append(b)
        else:
            dropped.append(problem)
    if dropped:
        svc = dataclasses.replace(svc, backends=good)
    return CheckedService(svc, dropped)
