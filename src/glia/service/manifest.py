"""Kubernetes ``v1 Service`` manifests -> :class:`ServiceSpec`.

Pure: no I/O. Called by the CLI (``glia apply/delete -f``, validated locally
first so mistakes show before an agent is asked) and by the agent's config API
(validated again: the client is never trusted). docs/services.md lists what is
accepted. This module checks each document's header and assembles the spec;
the ``spec`` fields are checked in :mod:`glia.service.manifest_fields`, the
annotations in :mod:`glia.service.manifest_annotations`, and the way back
(``glia get services``) is :mod:`glia.service.manifest_render`.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from glia.manifestcheck import (
    META_FIELDS,
    META_IGNORED,
    DocProblems,
    named_refs,
    show,
    where,
)
from glia.model.service import ServiceSpec
from glia.service import yamlload
from glia.service.manifest_annotations import annotation_fields
from glia.service.manifest_fields import (
    DNS1035,
    DNS1123,
    SPEC_UNSUPPORTED,
    dns_label,
    parse_cluster_ip,
    parse_ports,
    parse_selector,
    parse_session_affinity,
)

API_VERSION = "v1"
KIND = "Service"
DEFAULT_NAMESPACE = "default"


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


# --- documents -------------------------------------------------------------------


class _Doc(DocProblems):
    """Problems of one Service document, each prefixed with where it is."""

    def __init__(self, source: str, index: int) -> None:
        super().__init__(source, index, KIND)


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
    doc.fields(raw, "", _TOP_FIELDS)
    if version != API_VERSION:
        doc.add("apiVersion", f"expected {API_VERSION!r} for a {KIND}, got {show(version)}")
    meta = doc.mapping(raw.get("metadata"), "metadata", required=True)
    if meta is None:
        return raw
    doc.fields(meta, "metadata", _META_FIELDS + _META_IGNORED)
    name = meta.get("name")
    if name is None:
        doc.add("metadata.name", "required")
    elif (n := doc.string(name, "metadata.name")) is not None:
        err = dns_label(n, DNS1035, "a Service name (DNS-1035 label)")
        if err:
            doc.add("metadata.name", err)
        else:
            doc.name = n
    ns = meta.get("namespace")
    ns = DEFAULT_NAMESPACE if ns is None or ns == "" else ns
    if (s := doc.string(ns, "metadata.namespace")) is not None:
        err = dns_label(s, DNS1123, "a namespace (DNS-1123 label)")
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
    extra = annotation_fields(doc, annotations)
    spec = doc.mapping(obj.get("spec"), "spec", required=True)
    if spec is None:
        return None
    doc.fields(spec, "spec", _SPEC_FIELDS + tuple(SPEC_UNSUPPORTED))
    for key, check in SPEC_UNSUPPORTED.items():
        if key in spec and (msg := check(spec[key])):
            doc.add(f"spec.{key}", msg)
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", None):
        doc.add(
            "spec.type",
            f"only ClusterIP is supported (glia has no NodePort, LoadBalancer or "
            f"ExternalName Services), got {show(stype)}",
        )
    selector = parse_selector(doc, spec.get("selector"))
    ports = parse_ports(doc, spec.get("ports"))
    cluster_ip = parse_cluster_ip(doc, spec, service_cidr)
    affinity, timeout = parse_session_affinity(doc, spec)
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
