"""The annotations of a Service manifest that set ServiceSpec fields, health checks included.

Pure; called by :mod:`glia.service.manifest` for each Service document:
:func:`annotation_fields` reads Cilium's ``service.cilium.io/global``,
``shared`` and ``affinity`` (and the 1.4 spelling ``io.cilium/global-service``)
and glia's own ``service.glia.io/...`` (affinity-min-ready, lb-algorithm, the
health check), adding every problem to the document's
:class:`~glia.manifestcheck.DocProblems`. An unknown ``service.glia.io/`` key
is an error (a typo would otherwise be silently ignored); other annotations
are kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from glia.manifestcheck import DocProblems, show
from glia.model import service as m
from glia.model.service import HealthCheck, LBAlgorithm, ProbeType

MAX_AFFINITY_MIN_READY = 0xFFFF  # a frontend has at most this many slots (a __u16 count)
GLIA_ANNOTATION_PREFIX = "service.glia.io/"

_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_COUNT = re.compile(r"^[0-9]+$")


def _count(text: str) -> int | None:
    """A decimal count of at most 9 digits (int() raises a bare ValueError past 4300)."""
    return int(text) if len(text) <= 9 and _COUNT.match(text) else None


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


def annotation_fields(doc: DocProblems, ann: Mapping[str, str]) -> dict[str, Any] | None:
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


def _affinity_min_ready(doc: DocProblems, ann: Mapping[str, str], path: str, affinity: str) -> int:
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


def _health(doc: DocProblems, ann: Mapping[str, str], path: Callable[[str], str]) -> HealthCheck:
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
