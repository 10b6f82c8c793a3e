"""Services: what a user declares, and what the operator publishes for agents.

- :class:`ServiceSpec` is the declared Service (from Kubernetes ``v1 Service``
  YAML through ``glia apply``), stored at ``glia/config/v1/services/<ns>/<name>``.
- :class:`ClusterService` is the operator's resolution of one Service in one
  cluster: its frontends and every backend with its readiness, stored at
  ``glia/state/services/v1/<cluster>/<ns>/<name>``. Agents program their BPF
  maps from it; remote clusters read it for global services (ClusterMesh).
- :class:`BackendHealth` is what one agent found probing its local backends,
  at ``glia/state/health/v1/<cluster>/<node>`` on that agent's lease.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"


class LBAlgorithm(enum.StrEnum):
    RANDOM = "random"
    MAGLEV = "maglev"


class ProbeType(enum.StrEnum):
    TCP = "tcp"  # connect to the backend's target port
    HTTP = "http"  # GET path on the target port, 2xx/3xx is healthy
    NONE = "none"  # no probing: every backend counts as ready


# Annotations glia understands on a Service (documented in docs/services.md).
ANN_GLOBAL = "service.cilium.io/global"
ANN_GLOBAL_14 = "io.cilium/global-service"
ANN_SHARED = "service.cilium.io/shared"
ANN_AFFINITY = "service.cilium.io/affinity"
ANN_AFFINITY_MIN_READY = "service.glia.io/affinity-min-ready"  # N: see glia.service.merge
ANN_LB_ALGORITHM = "service.glia.io/lb-algorithm"  # random | maglev
ANN_HEALTH = "service.glia.io/health-check"  # tcp | http | none
ANN_HEALTH_PATH = "service.glia.io/health-check-path"  # for http, default "/"
ANN_HEALTH_INTERVAL = "service.glia.io/health-check-interval"  # seconds, default 1
ANN_HEALTH_TIMEOUT = "service.glia.io/health-check-timeout"  # seconds, default 1
ANN_HEALTH_FAILURES = "service.glia.io/health-check-failure-threshold"  # default 2
ANN_HEALTH_SUCCESSES = "service.glia.io/health-check-success-threshold"  # default 1
# A named targetPort resolves through this endpoint label prefix:
# label "port.glia.io/http=8080" makes targetPort "http" mean 8080 on that endpoint.
PORT_LABEL_PREFIX = "port.glia.io/"


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int  # frontend port on the ClusterIP
    target_port: int | str  # backend port, or a port name resolved per endpoint
    protocol: Protocol = Protocol.TCP
    name: str = ""


@dataclass(frozen=True, slots=True)
class HealthCheck:
    type: ProbeType = ProbeType.TCP
    path: str = "/"
    interval: float = 1.0
    timeout: float = 1.0
    failure_threshold: int = 2
    success_threshold: int = 1


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    namespace: str
    name: str
    cluster_ip: str
    ports: list[ServicePort]
    selector: dict[str, str]
    session_affinity: bool = False  # spec.sessionAffinity: ClientIP
    affinity_timeout: int = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds
    lb_algorithm: LBAlgorithm = LBAlgorithm.RANDOM
    health: HealthCheck = field(default_factory=HealthCheck)
    global_: bool = False  # service.cilium.io/global
    shared: bool = True  # service.cilium.io/shared (only meaningful when global)
    affinity: str = ""  # service.cilium.io/affinity: local | remote | none | ""
    # service.glia.io/affinity-min-ready: with affinity, the other side's backends
    # also take new connections while fewer preferred ones are ready (0: unset)
    affinity_min_ready: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Backend:
    ip: str
    port: int  # resolved target port
    protocol: Protocol
    port_name: str  # the ServicePort.name it serves ("" if unnamed)
    frontend_port: int  # the ServicePort.port it serves
    node: str
    cluster: str
    endpoint: str  # "<namespace>/<name>"
    ready: bool  # from the operator: healthy; after glia.service.merge: gets new connections
    # Set only by glia.service.merge for a global Service (shown by `glia service
    # list`); operators write the defaults and the merge ignores them on input.
    preferred: bool = False  # on the side the Service's affinity prefers
    stale: bool = False  # of a remote cluster whose state is stale
    standby: bool = False  # healthy, but held back from new connections (affinity, staleness)


@dataclass(frozen=True, slots=True)
class ClusterService:
    namespace: str
    name: str
    cluster: str
    cluster_id: int
    cluster_ip: str
    ports: list[ServicePort]
    backends: list[Backend]
    session_affinity: bool = False
    affinity_timeout: int = 10800
    lb_algorithm: LBAlgorithm = LBAlgorithm.RANDOM
    health: HealthCheck = field(default_factory=HealthCheck)
    global_: bool = False
    shared: bool = True
    affinity: str = ""
    affinity_min_ready: int = 0  # as ServiceSpec.affinity_min_ready
    # A host port of this node's endpoint (podman run -p; glia.service.hostports): made
    # by the agent for itself, never stored; a record read from etcd with it is refused.
    host_port: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    service: str  # "<namespace>/<name>"
    ip: str
    port: int
    ready: bool
    since: float  # time of the last state change
    detail: str = ""  # last failure reason


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """Value of ``glia/state/health/v1/<cluster>/<node>`` (that node's agent)."""

    node: str
    results: list[ProbeResult]
