"""A :class:`ServiceSpec` back in Kubernetes' ``v1 Service`` shape (``glia get services``).

Pure; called by the agent's config API. The result parses back
(:func:`glia.service.manifest.parse_service`) to the same spec: fields that
have no place in a Service's ``spec`` go into the annotations that set them
(unless the spec's own annotations already say so).
"""

from __future__ import annotations

from typing import Any

from glia.model import service as m
from glia.model.service import HealthCheck, LBAlgorithm, ProbeType, ServiceSpec
from glia.service.manifest import API_VERSION, KIND


def _fmt_seconds(v: float) -> str:
    return f"{v:g}" if v != int(v) else str(int(v))


def _derived_annotations(spec: ServiceSpec) -> dict[str, str]:
    """Annotations that say what the spec's fields say (for specs built in code)."""
    d = HealthCheck()
    h = spec.health
    out: dict[str, str] = {}
    if spec.global_:
        out[m.ANN_GLOBAL] = "true"
    if not spec.shared:
        out[m.ANN_SHARED] = "false"
    if spec.affinity:
        out[m.ANN_AFFINITY] = spec.affinity
    if spec.affinity_min_ready:
        out[m.ANN_AFFINITY_MIN_READY] = str(spec.affinity_min_ready)
    if spec.lb_algorithm is not LBAlgorithm.RANDOM:
        out[m.ANN_LB_ALGORITHM] = spec.lb_algorithm.value
    if h.type is not d.type:
        out[m.ANN_HEALTH] = h.type.value
    if h.path != d.path and h.type is ProbeType.HTTP:
        out[m.ANN_HEALTH_PATH] = h.path
    if h.interval != d.interval:
        out[m.ANN_HEALTH_INTERVAL] = _fmt_seconds(h.interval)
    if h.timeout != d.timeout:
        out[m.ANN_HEALTH_TIMEOUT] = _fmt_seconds(h.timeout)
    if h.failure_threshold != d.failure_threshold:
        out[m.ANN_HEALTH_FAILURES] = str(h.failure_threshold)
    if h.success_threshold != d.success_threshold:
        out[m.ANN_HEALTH_SUCCESSES] = str(h.success_threshold)
    return out


def to_manifest(spec: ServiceSpec) -> dict[str, Any]:
    """The Service as a Kubernetes ``v1 Service`` object (``glia get services -o yaml``)."""
    annotations = dict(spec.annotations)
    derived = _derived_annotations(spec)
    if spec.global_ and m.ANN_GLOBAL_14 in annotations:
        derived.pop(m.ANN_GLOBAL, None)
    for key, value in derived.items():
        annotations.setdefault(key, value)
    meta: dict[str, Any] = {"name": spec.name, "namespace": spec.namespace}
    if spec.labels:
        meta["labels"] = dict(spec.labels)
    if annotations:
        meta["annotations"] = annotations
    ports = []
    for p in spec.ports:
        port: dict[str, Any] = {"name": p.name} if p.name else {}
        port.update(protocol=p.protocol.value, port=p.port, targetPort=p.target_port)
        ports.append(port)
    body: dict[str, Any] = {"type": "ClusterIP"}
    if spec.cluster_ip:
        body["clusterIP"] = spec.cluster_ip
        body["clusterIPs"] = [spec.cluster_ip]
    body["selector"] = dict(spec.selector)
    body["ports"] = ports
    body["sessionAffinity"] = "ClientIP" if spec.session_affinity else "None"
    if spec.session_affinity:
        body["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": spec.affinity_timeout}}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": body}
