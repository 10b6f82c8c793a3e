"""Kubernetes ``v1 Service`` manifests -> :class:`ServiceSpec`, and back.

Pure: no I/O. Called by the CLI (``glia apply/delete -f``, validated locally
first so mistakes show before an agent is asked), by the agent's config API
(validated again: the client is never trusted) and by ``glia get services``
(:func:`to_manifest`). docs/services.md lists what is accepted.

Every problem of a file is collected, each naming its document and field
(``services.yaml: document 2 (Service default/web): spec.ports[1].port:
expected an integer 1..65535, got "http"``), and raised together as one
:class:`ManifestError`; nothing else escapes, whatever the input.

Unknown fields: like ``kubectl`` (strict validation is its default), a field
Kubernetes does not define is an error. Fields Kubernetes defines but glia
does not implement are errors when set to something glia would silently
mis-handle (``type: NodePort``, ``externalIPs``, ``internalTrafficPolicy:
Local``...), and ignored when they change nothing here (``status``,
``metadata.uid``, ``appProtocol``...).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from glia.manifestcheck import (
    META_FIELDS,
    META_IGNORED,
    DocProblems,
    empty,
    is_int,
    named_refs,
    show,
    where,
)
from glia.model import service as m
from glia.model.service import (
    HealthCheck,
    LBAlgorithm,
    ProbeType,
    Protocol,
    ServicePort,
    ServiceSpec,
)
from glia.service import clusterip, yamlload

API_VERSION = "v1"
KIND = "Service"
DEFAULT_NAMESPACE = "default"
DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for ClientIP affinity, seconds
MAX_AFFINITY_TIMEOUT = 86400
MAX_AFFINITY_MIN_READY = 0xFFFF  # a frontend has at most this many slots (a __u16 count)
GLIA_ANNOTATION_PREFIX = "service.glia.io/"


class ManifestError(ValueError):
    """Invalid manifest(s): ``problems`` has one line per problem, each naming the field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems) or ["invalid manifest"]
        super().__init__("\n".join(self.problems))


class ServiceRef(NamedTuple):
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ServiceDoc:
    """A parsed Service and where it came from, for messages about it later (store)."""

    spec: ServiceSpec
    source: str = ""  # file name, "<stdin>", "" when not from a file
    index: int = 0  # 1-based document number in the file, 0 when not from a file

    @property
    def where(self) -> str:
        return where(self.source, self.index, KIND, self.spec.namespace, self.spec.name)


# --- YAML ------------------------------------------------------------------------


def load_yaml(text: str, source: str) -> list[Any]:
    """The documents of a YAML stream (``---`` separated), empty ones dropped.

    Bounded and safe (:mod:`glia.service.yamlload`): size, nesting, aliases and
    their expansion are limited before anything is built.
    """
    try:
        docs = yamlload.load(text, source)
    except yamlload.YamlError as e:
        raise ManifestError([str(e)]) from None
    if not docs:
        raise ManifestError(
            [
                f"{source}: no documents (expected v1 Service or cilium.io/v2 "
                "CiliumNetworkPolicy objects)"
            ]
        )
    return docs


# --- values ----------------------------------------------------------------------


# Kubernetes name rules: Service names are DNS-1035 labels, namespaces and port
# names DNS-1123 labels, a named targetPort an IANA service name.
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_COUNT = re.compile(r"^[0-9]+$")


def _count(text: str) -> int | None:
    """A decimal count of at most 9 digits (int() raises a bare ValueError past 4300)."""
    return int(text) if len(text) <= 9 and _COUNT.match(text) else None


def _dns_label(value: str, rule: re.Pattern[str], what: str) -> str | None:
    if len(value) > 63 or not rule.match(value):
        first = "a lowercase letter" if rule is _DNS1035 else "a lowercase letter or digit"
        return (
            f"expected {what}: at most 63 lowercase letters, digits or '-', "
            f"starting with {first} and ending with a letter or digit, got {show(value)}"
        )
    return None


def _iana_name(value: str) -> str | None:
    if (
        len(value) > 15
        or not _IANA_SVC.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        return (
            "expected a port number 1..65535 or a port name (at most 15 lowercase letters, "
            f"digits or single '-', with at least one letter), got {show(value)}"
        )
    return None


class _Doc(DocProblems):
    """Problems of one Service document, each prefixed with where it is."""

    def __init__(self, source: str, index: int) -> None:
        super().__init__(source, index, KIND)

    def unknown(self, obj: Mapping[Any, Any], path: str, known: Iterable[str]) -> None:
        self.fields(obj, path, known)


# --- documents -------------------------------------------------------------------

_TOP_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")
_META_FIELDS, _META_IGNORED = META_FIELDS, META_IGNORED
_SPEC_FIELDS = (
    "selector",
    "ports",
    "clusterIP",
    "clusterIPs",
    "type",
    "sessionAffinity",
    "sessionAffinityConfig",
)
_PORT_FIELDS = ("name", "port", "targetPort", "protocol", "nodePort", "appProtocol")


def _header(doc: _Doc, raw: Any) -> Mapping[str, Any] | None:
    """Checks kind, apiVersion and metadata; sets the document's namespace/name.

    None when the document is not a Service at all.
    """
    if not isinstance(raw, Mapping):
        doc.add("<document>", f"expected a mapping (a Kubernetes object), got {show(raw)}")
        return None
    kind, version = raw.get("kind"), raw.get("apiVersion")
    if kind != KIND:
        # Another kind's fields mean other things: nothing more to say about them.
        doc.add("kind", f"expected {KIND} (glia apply takes v1 Service objects), got {show(kind)}")
        return None
    doc.unknown(raw, "", _TOP_FIELDS)
    if version != API_VERSION:
        doc.add("apiVersion", f"expected {API_VERSION!r} for a {KIND}, got {show(version)}")
    meta = doc.mapping(raw.get("metadata"), "metadata", required=True)
    if meta is None:
        return raw
    doc.unknown(meta, "metadata", _META_FIELDS + _META_IGNORED)
    name = meta.get("name")
    if name is None:
        doc.add("metadata.name", "required")
    elif (n := doc.string(name, "metadata.name")) is not None:
        err = _dns_label(n, _DNS1035, "a Service name (DNS-1035 label)")
        if err:
            doc.add("metadata.name", err)
        else:
            doc.name = n
    ns = meta.get("namespace")
    ns = DEFAULT_NAMESPACE if ns is None or ns == "" else ns
    if (s := doc.string(ns, "metadata.namespace")) is not None:
        err = _dns_label(s, _DNS1123, "a namespace (DNS-1123 label)")
        if err:
            doc.add("metadata.namespace", err)
        else:
            doc.namespace = s
    return raw


def parse_refs(
    docs: Sequence[Any], source: str, *, numbers: Sequence[int] | None = None
) -> list[ServiceRef]:
    """Which Services a file names (for ``glia delete -f``): only kind and metadata are checked.

    ``numbers``: each document's number in its file, when ``docs`` are some of them.
    """

    def check(i: int, raw: Any) -> DocProblems:
        doc = _Doc(source, i)
        _header(doc, raw)
        return doc

    refs, problems = named_refs(docs, numbers, check)
    if problems:
        raise ManifestError(problems)
    return [ServiceRef(ns, name) for ns, name in refs]


def parse_services(
    docs: Sequence[Any],
    source: str,
    *,
    service_cidr: str | None = None,
    numbers: Sequence[int] | None = None,
) -> list[ServiceDoc]:
    """Every document as a Service, or one ManifestError with every problem of the file.

    With ``service_cidr``, a given ``spec.clusterIP`` must be a usable address in it.
    ``numbers``: each document's number in its file, when ``docs`` are some of them
    (:mod:`glia.declared` splits a file mixing kinds).
    """
    problems: list[str] = []
    out: list[ServiceDoc] = []
    names: dict[ServiceRef, int] = {}
    ips: dict[str, int] = {}
    for i, raw in zip(numbers or range(1, len(docs) + 1), docs, strict=True):
        doc = _Doc(source, i)
        spec = _service(doc, raw, service_cidr)
        if doc.namespace and doc.name:
            ref = ServiceRef(doc.namespace, doc.name)
            if ref in names:
                doc.add("metadata.name", f"the same Service is also document {names[ref]}")
            names.setdefault(ref, i)
        if spec is not None and spec.cluster_ip:
            if spec.cluster_ip in ips:
                doc.add(
                    "spec.clusterIP",
                    f"{spec.cluster_ip} is also requested by document {ips[spec.cluster_ip]}",
                )
            ips.setdefault(spec.cluster_ip, i)
        if doc.ok and spec is not None:
            out.append(ServiceDoc(spec, source, i))
        problems += doc.problems()
    if problems:
        raise ManifestError(problems)
    return out


def parse_service(raw: Any, source: str = "", *, service_cidr: str | None = None) -> ServiceSpec:
    """One document as a Service (ManifestError otherwise)."""
    return parse_services([raw], source, service_cidr=service_cidr)[0].spec


def _service(doc: _Doc, raw: Any, service_cidr: str | None) -> ServiceSpec | None:
    obj = _header(doc, raw)
    if obj is None:
        return None
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    labels = doc.string_map(meta.get("labels"), "metadata.labels")
    annotations = doc.string_map(meta.get("annotations"), "metadata.annotations")
    extra = _annotations(doc, annotations)
    spec = doc.mapping(obj.get("spec"), "spec", required=True)
    if spec is None:
        return None
    doc.unknown(spec, "spec", _SPEC_FIELDS + tuple(_SPEC_UNSUPPORTED))
    for key, check in _SPEC_UNSUPPORTED.items():
        if key in spec and (msg := check(spec[key])):
            doc.add(f"spec.{key}", msg)
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", None):
        doc.add(
            "spec.type",
            f"only ClusterIP is supported (glia has no NodePort, LoadBalancer or "
            f"ExternalName Services), got {show(stype)}",
        )
    selector = _selector(doc, spec.get("selector"))
    ports = _ports(doc, spec.get("ports"))
    cluster_ip = _cluster_ip(doc, spec, service_cidr)
    affinity, timeout = _session_affinity(doc, spec)
    if not doc.ok or doc.namespace is None or doc.name is None or extra is None:
        return None
    return ServiceSpec(
        namespace=doc.namespace,
        name=doc.name,
        cluster_ip=cluster_ip,
        ports=ports,
        selector=selector,
        session_affinity=affinity,
        affinity_timeout=timeout,
        annotations=annotations,
        labels=labels,
        **extra,
    )


def _unsupported(what: str) -> Callable[[Any], str | None]:
    return lambda v: None if empty(v) else f"not supported ({what}), got {show(v)}"


def _allowed(*values: str, why: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if v is None or v in values:
            return None
        return f"expected {' or '.join(values)} ({why}), got {show(v)}"

    return check


def _ip_families(v: Any) -> str | None:
    if v is None or v == [] or v == ["IPv4"]:
        return None
    return f'only ["IPv4"] is supported (glia services are IPv4), got {show(v)}'


_LB_ONLY = "only for NodePort/LoadBalancer/ExternalName Services, which glia does not have"
# Kubernetes ServiceSpec fields glia does not implement: fine when unset (or
# set to what glia does anyway), an error otherwise.
_SPEC_UNSUPPORTED: dict[str, Callable[[Any], str | None]] = {
    "externalIPs": _unsupported("glia does not route external IPs"),
    "externalName": _unsupported(_LB_ONLY),
    "externalTrafficPolicy": _unsupported(_LB_ONLY),
    "healthCheckNodePort": _unsupported(_LB_ONLY),
    "loadBalancerIP": _unsupported(_LB_ONLY),
    "loadBalancerSourceRanges": _unsupported(_LB_ONLY),
    "loadBalancerClass": _unsupported(_LB_ONLY),
    "allocateLoadBalancerNodePorts": _unsupported(_LB_ONLY),
    "publishNotReadyAddresses": _unsupported("glia only sends traffic to ready backends"),
    "internalTrafficPolicy": _allowed("Cluster", why="node-local-only backends are not supported"),
    "ipFamilies": _ip_families,
    "ipFamilyPolicy": _allowed("SingleStack", "PreferDualStack", why="glia services are IPv4 only"),
    "trafficDistribution": lambda v: None,  # a hint; ignoring it is allowed by Kubernetes
}


def _selector(doc: _Doc, value: Any) -> dict[str, str]:
    if value is None:
        doc.add("spec.selector", "required: a non-empty mapping of label keys to values")
        return {}
    if isinstance(value, Mapping) and not value:
        doc.add(
            "spec.selector",
            "must not be empty (Services without a selector are not supported)",
        )
        return {}
    return doc.string_map(value, "spec.selector")


def _ports(doc: _Doc, value: Any) -> list[ServicePort]:
    if value is None or value == []:
        doc.add("spec.ports", "required: a non-empty list of ports")
        return []
    if not isinstance(value, list):
        doc.add("spec.ports", f"expected a list of ports, got {show(value)}")
        return []
    ports: list[ServicePort] = []
    names: dict[str, int] = {}
    keys: dict[tuple[int, Protocol], int] = {}
    for i, raw in enumerate(value):
        path = f"spec.ports[{i}]"
        p = doc.mapping(raw, path)
        if p is None:
            if raw is None:
                doc.add(path, "expected a mapping, got null")
            continue
        doc.unknown(p, path, _PORT_FIELDS)
        name = _port_name(doc, p.get("name"), f"{path}.name", len(value))
        port = p.get("port")
        if not (is_int(port) and 1 <= port <= 65535):
            doc.add(f"{path}.port", f"expected an integer 1..65535, got {show(port)}")
            port = None
        target = p.get("targetPort")
        if target is None or target == 0 or target == "":
            target = port  # Kubernetes' default: the same as port
        elif isinstance(target, str):
            if err := _iana_name(target):
                doc.add(f"{path}.targetPort", err)
                target = None
        elif not (is_int(target) and 1 <= target <= 65535):
            doc.add(
                f"{path}.targetPort",
                f"expected a port number 1..65535 or a port name, got {show(target)}",
            )
            target = None
        proto_raw = p.get("protocol", "TCP")
        proto: Protocol | None = None
        if proto_raw in ("TCP", "UDP", None):
            proto = Protocol(proto_raw or "TCP")
        else:
            hint = " (SCTP is not supported)" if proto_raw == "SCTP" else ""
            doc.add(f"{path}.protocol", f"expected TCP or UDP{hint}, got {show(proto_raw)}")
        if not empty(p.get("nodePort")):
            doc.add(f"{path}.nodePort", f"not supported ({_LB_ONLY}), got {show(p['nodePort'])}")
        if p.get("appProtocol") is not None:
            doc.string(p["appProtocol"], f"{path}.appProtocol")
        if name is not None:
            if name and name in names:
                doc.add(
                    f"{path}.name",
                    f"duplicate port name {show(name)} (also spec.ports[{names[name]}])",
                )
            names.setdefault(name, i)
        if port is not None and proto is not None:
            if (port, proto) in keys:
                doc.add(
                    f"{path}.port",
                    f"duplicate port {port}/{proto} (also spec.ports[{keys[(port, proto)]}])",
                )
            keys.setdefault((port, proto), i)
        if name is not None and port is not None and target is not None and proto is not None:
            ports.append(ServicePort(port=port, target_port=target, protocol=proto, name=name))
    return ports


def _port_name(doc: _Doc, value: Any, path: str, count: int) -> str | None:
    if value is None or value == "":
        if count > 1:
            doc.add(path, "required when a Service has more than one port")
            return None
        return ""
    name = doc.string(value, path)
    if name is None:
        return None
    if err := _dns_label(name, _DNS1123, "a port name (DNS-1123 label)"):
        doc.add(path, err)
        return None
    return name


def _cluster_ip(doc: _Doc, spec: Mapping[str, Any], service_cidr: str | None) -> str:
    ip_raw = spec.get("clusterIP")
    ips_raw = spec.get("clusterIPs")
    path = "spec.clusterIP"
    if ips_raw is not None:
        if not isinstance(ips_raw, list) or not all(isinstance(x, str) for x in ips_raw):
            doc.add("spec.clusterIPs", f"expected a list of addresses, got {show(ips_raw)}")
            return ""
        if len(ips_raw) > 1:
            doc.add("spec.clusterIPs", "dual-stack Services are not supported: give one address")
            return ""
        if ips_raw and ip_raw not in (None, "") and ip_raw != ips_raw[0]:
            doc.add(
                "spec.clusterIPs",
                f"must start with spec.clusterIP {show(ip_raw)}, got {show(ips_raw[0])}",
            )
            return ""
        if ips_raw and ip_raw in (None, ""):
            ip_raw, path = ips_raw[0], "spec.clusterIPs[0]"
    if ip_raw is None or ip_raw == "":
        return ""
    ip = doc.string(ip_raw, path)
    if ip is None:
        return ""
    if ip == "None":
        doc.add(path, 'headless Services (clusterIP: "None") are not supported')
        return ""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        doc.add(path, f"expected an IPv4 address, got {show(ip)}")
        return ""
    if addr.version != 4:
        doc.add(path, f"expected an IPv4 address (IPv6 Services are not supported), got {show(ip)}")
        return ""
    if service_cidr and (err := clusterip.check(str(addr), service_cidr)):
        doc.add(path, err)
        return ""
    return str(addr)


def _session_affinity(doc: _Doc, spec: Mapping[str, Any]) -> tuple[bool, int]:
    value = spec.get("sessionAffinity", "None")
    affinity = value == "ClientIP"
    if value not in ("ClientIP", "None", None):
        doc.add("spec.sessionAffinity", f"expected ClientIP or None, got {show(value)}")
    cfg = doc.mapping(spec.get("sessionAffinityConfig"), "spec.sessionAffinityConfig")
    if cfg is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    if not affinity:
        doc.add("spec.sessionAffinityConfig", "only allowed with sessionAffinity: ClientIP")
    doc.unknown(cfg, "spec.sessionAffinityConfig", ("clientIP",))
    client = doc.mapping(cfg.get("clientIP"), "spec.sessionAffinityConfig.clientIP")
    if client is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    doc.unknown(client, "spec.sessionAffinityConfig.clientIP", ("timeoutSeconds",))
    timeout = client.get("timeoutSeconds", DEFAULT_AFFINITY_TIMEOUT)
    if timeout is None:
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    if not (is_int(timeout) and 1 <= timeout <= MAX_AFFINITY_TIMEOUT):
        doc.add(
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            f"expected an integer 1..{MAX_AFFINITY_TIMEOUT}, got {show(timeout)}",
        )
        return affinity, DEFAULT_AFFINITY_TIMEOUT
    return affinity, int(timeout)


# --- annotations -----------------------------------------------------------------

_GLIA_ANNOTATIONS = (
    m.ANN_AFFINITY_MIN_READY,
    m.ANN_LB_ALGORITHM,
    m.ANN_HEALTH,
    m.ANN_HEALTH_PATH,
    m.ANN_HEALTH_INTERVAL,
    m.ANN_HEALTH_TIMEOUT,
    m.ANN_HEALTH_FAILURES,
    m.ANN_HEALTH_SUCCESSES,
)


def _annotations(doc: _Doc, ann: Mapping[str, str]) -> dict[str, Any] | None:
    """The ServiceSpec fields the annotations set (None if one is invalid)."""
    before = doc.count

    def path(key: str) -> str:
        return f"metadata.annotations[{key}]"

    def choice(key: str, allowed: Sequence[str], default: str) -> str:
        if key not in ann:
            return default
        value = ann[key].strip().lower()
        if value not in allowed:
            doc.add(path(key), f"expected {' | '.join(allowed)}, got {show(ann[key])}")
            return default
        return value

    for key in ann:
        if key.startswith(GLIA_ANNOTATION_PREFIX) and key not in _GLIA_ANNOTATIONS:
            doc.add(
                path(key), "unknown glia annotation (known: " + ", ".join(_GLIA_ANNOTATIONS) + ")"
            )
    glob = choice(m.ANN_GLOBAL, ("true", "false"), "")
    glob14 = choice(m.ANN_GLOBAL_14, ("true", "false"), "")
    if glob and glob14 and glob != glob14:
        doc.add(path(m.ANN_GLOBAL_14), f"contradicts {m.ANN_GLOBAL}: {show(ann[m.ANN_GLOBAL])}")
    shared = choice(m.ANN_SHARED, ("true", "false"), "true")
    affinity = choice(m.ANN_AFFINITY, ("local", "remote", "none"), "")
    min_ready = _affinity_min_ready(doc, ann, path(m.ANN_AFFINITY_MIN_READY), affinity)
    algo = choice(m.ANN_LB_ALGORITHM, tuple(a.value for a in LBAlgorithm), LBAlgorithm.RANDOM)
    health = _health(doc, ann, path)
    if doc.count > before:
        return None
    return {
        "global_": (glob or glob14) == "true",
        "shared": shared == "true",
        "affinity": affinity,
        "affinity_min_ready": min_ready,
        "lb_algorithm": LBAlgorithm(algo),
        "health": health,
    }


def _affinity_min_ready(doc: _Doc, ann: Mapping[str, str], path: str, affinity: str) -> int:
    """``service.glia.io/affinity-min-ready``: 1..65535, only next to affinity local or remote."""
    if m.ANN_AFFINITY_MIN_READY not in ann:
        return 0
    raw = ann[m.ANN_AFFINITY_MIN_READY]
    n = _count(raw.strip())
    if n is None or not 1 <= n <= MAX_AFFINITY_MIN_READY:
        doc.add(path, f"expected an integer 1..{MAX_AFFINITY_MIN_READY}, got {show(raw)}")
        return 0
    if affinity not in ("local", "remote"):
        # Without a preferred side there is nothing for the count to hold back.
        doc.add(path, f"only used with {m.ANN_AFFINITY}: local or remote")
        return 0
    return n


def _health(doc: _Doc, ann: Mapping[str, str], path: Callable[[str], str]) -> HealthCheck:
    d = HealthCheck()
    raw_type = ann.get(m.ANN_HEALTH, d.type.value).strip().lower()
    allowed = tuple(t.value for t in ProbeType)
    if raw_type not in allowed:
        doc.add(
            path(m.ANN_HEALTH), f"expected {' | '.join(allowed)}, got {show(ann[m.ANN_HEALTH])}"
        )
        raw_type = d.type.value
    ptype = ProbeType(raw_type)
    probe_path = d.path
    if m.ANN_HEALTH_PATH in ann:
        probe_path = ann[m.ANN_HEALTH_PATH]
        if ptype is not ProbeType.HTTP:
            doc.add(path(m.ANN_HEALTH_PATH), f"only used with {m.ANN_HEALTH}: http")
        elif not probe_path.startswith("/") or any(c.isspace() for c in probe_path):
            doc.add(
                path(m.ANN_HEALTH_PATH),
                f"expected an absolute URL path without spaces, got {show(probe_path)}",
            )

    def seconds(key: str, default: float) -> float:
        if key not in ann:
            return default
        text = ann[key].strip()
        if _SECONDS.match(text) and 0.1 <= (v := float(text)) <= 3600:
            return v
        doc.add(
            path(key), f'expected seconds 0.1..3600 as a number (e.g. "0.5"), got {show(ann[key])}'
        )
        return default

    def count(key: str, default: int) -> int:
        if key not in ann:
            return default
        v = _count(ann[key].strip())
        if v is not None and 1 <= v <= 100:
            return v
        doc.add(path(key), f"expected an integer 1..100, got {show(ann[key])}")
        return default

    return HealthCheck(
        type=ptype,
        path=probe_path,
        interval=seconds(m.ANN_HEALTH_INTERVAL, d.interval),
        timeout=seconds(m.ANN_HEALTH_TIMEOUT, d.timeout),
        failure_threshold=count(m.ANN_HEALTH_FAILURES, d.failure_threshold),
        success_threshold=count(m.ANN_HEALTH_SUCCESSES, d.success_threshold),
    )


# --- back to Kubernetes' shape ---------------------------------------------------


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
