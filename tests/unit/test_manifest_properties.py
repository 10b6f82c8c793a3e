"""Properties of manifest parsing (hypothesis): junk only ever raises ManifestError; round trips."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from glia.model.service import (
    HealthCheck,
    LBAlgorithm,
    ProbeType,
    Protocol,
    ServicePort,
    ServiceSpec,
)
from glia.service.manifest import (
    ManifestError,
    load_yaml,
    parse_refs,
    parse_service,
    parse_services,
)
from glia.service.manifest_render import to_manifest
from glia.service.yamlload import MAX_EXPANDED

FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "spec", "status", "name", "namespace", "labels",
    "annotations", "selector", "ports", "port", "targetPort", "protocol", "clusterIP",
    "clusterIPs", "type", "sessionAffinity", "sessionAffinityConfig", "clientIP",
    "timeoutSeconds", "nodePort", "externalIPs", "service.cilium.io/global",
    "service.glia.io/health-check", "service.glia.io/health-check-interval",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["v1", "Service", "TCP", "UDP", "ClientIP", "None", "web", "100.64.0.1", ""]),
    st.binary(max_size=4),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.integers(), st.none())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=25,
)

VALID: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "annotations": {"service.glia.io/health-check": "http"}},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "a", "port": 80, "targetPort": "http"}, {"name": "b", "port": 53}],
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}},
    },
}


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(VALID)


@given(st.lists(junk, min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_junk_only_raises_manifest_errors(docs: list[Any]) -> None:
    for fn in (
        lambda: parse_services(docs, "j.yaml", service_cidr="100.64.0.0/16"),
        lambda: parse_refs(docs, "j.yaml"),
    ):
        try:
            fn()
        except ManifestError as e:
            assert e.problems and all(p.startswith("j.yaml: ") for p in e.problems)


@given(st.sampled_from(PATHS), junk)
@settings(max_examples=300, deadline=None)
def test_one_bad_value_in_a_valid_service_only_raises_manifest_errors(
    path: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(VALID)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    try:
        spec = parse_service(doc, "j.yaml")
    except ManifestError as e:
        assert all(p.startswith("j.yaml: document 1") for p in e.problems)
    else:
        assert spec.name  # accepted: then it is a complete spec
        assert parse_service(to_manifest(spec)) == spec


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_any_text_loads_or_raises_manifest_error(text: str) -> None:
    try:
        docs = load_yaml(text, "t.yaml")
    except ManifestError as e:
        assert e.problems[0].startswith("t.yaml: ")
    else:
        assert docs and all(d is not None for d in docs)


dns = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")
port_names = st.from_regex(r"\A[a-z]([a-z0-9]{0,6})\Z")
label = st.text(min_size=1, max_size=5)


@st.composite
def specs(draw: st.DrawFn) -> ServiceSpec:
    n = draw(st.integers(1, 4))
    numbers = draw(st.lists(st.integers(1, 65535), min_size=n, max_size=n, unique=True))
    names = draw(st.lists(port_names, min_size=n, max_size=n, unique=True))
    ports = [
        ServicePort(
            port=p,
            target_port=draw(st.one_of(st.integers(1, 65535), port_names)),
            protocol=draw(st.sampled_from(Protocol)),
            name=name if n > 1 or draw(st.booleans()) else "",
        )
        for p, name in zip(numbers, names, strict=True)
    ]
    ptype = draw(st.sampled_from(ProbeType))
    return ServiceSpec(
        namespace=draw(dns),
        name=draw(dns),
        cluster_ip=draw(st.sampled_from(["", "100.64.0.7", "100.64.3.200"])),
        ports=ports,
        selector=draw(st.dictionaries(label, st.text(max_size=5), min_size=1, max_size=3)),
        session_affinity=(aff := draw(st.booleans())),
        affinity_timeout=draw(st.integers(1, 86400)) if aff else 10800,
        lb_algorithm=draw(st.sampled_from(LBAlgorithm)),
        health=HealthCheck(
            type=ptype,
            path=draw(st.sampled_from(["/", "/healthz"])) if ptype is ProbeType.HTTP else "/",
            interval=draw(st.sampled_from([0.1, 0.5, 1.0, 2.0, 30.0])),
            timeout=draw(st.sampled_from([0.2, 1.0, 3.0])),
            failure_threshold=draw(st.integers(1, 100)),
            success_threshold=draw(st.integers(1, 100)),
        ),
        global_=draw(st.booleans()),
        shared=draw(st.booleans()),
        affinity=(side := draw(st.sampled_from(["", "local", "remote", "none"]))),
        affinity_min_ready=draw(st.integers(0, 65535)) if side in ("local", "remote") else 0,
        labels=draw(st.dictionaries(label, st.text(max_size=5), max_size=2)),
    )


@given(specs())
@settings(max_examples=200, deadline=None)
def test_to_manifest_then_parse_gives_the_spec_back(spec: ServiceSpec) -> None:
    back = parse_service(to_manifest(spec), service_cidr="100.64.0.0/16")
    # The annotations now say what the fields said; everything else is identical.
    assert replace(back, annotations={}) == spec
    assert parse_service(to_manifest(back)) == back


# -- YAML text, bounded ---------------------------------------------------------------

VALID_YAML = """apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""


@st.composite
def hostile_fields(draw: st.DrawFn) -> str:
    """A YAML value that is big, deep, aliased or malformed (indented under a key)."""
    kind = draw(st.sampled_from(["laughs", "deep", "scalar", "aliases", "cycle", "tag", "junk"]))
    n = draw(st.integers(1, 12))
    if kind == "laughs":
        rows = ["\n  l0: &l0 [" + ", ".join(['"lol"'] * 9) + "]"]
        rows += [f"\n  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, n)]
        return "".join(rows)
    if kind == "deep":
        depth = draw(st.integers(1, 200))
        return " " + "[" * depth + "]" * depth
    if kind == "scalar":
        return " " + "x" * draw(st.integers(0, 300_000))
    if kind == "aliases":
        return " &a [" + ", ".join(["1"] * 3) + "]\n  b: [" + ", ".join(["*a"] * n * 100) + "]"
    if kind == "cycle":
        return " &c {a: [*c]}"
    if kind == "tag":
        return " " + draw(st.sampled_from(["!!int x", "!!binary '@'", "!!float y", "!!set {a}"]))
    return " " + draw(st.text(max_size=50)).replace("\n", " ")


@given(
    st.sampled_from(["status:", "metadata:\n  labels:", "spec:\n  x:", "x:"]),
    hostile_fields(),
    st.integers(0, 2),
)
@settings(max_examples=150, deadline=None)
def test_hostile_yaml_only_raises_manifest_errors(where: str, value: str, copies: int) -> None:
    text = "---\n".join([VALID_YAML] * copies + [VALID_YAML + where + value + "\n"])
    try:
        docs = load_yaml(text, "h.yaml")
        parse_services(docs, "h.yaml", service_cidr="100.64.0.0/16")
    except ManifestError as e:
        assert e.problems and all(p.startswith("h.yaml: ") for p in e.problems)
    else:
        # Accepted: then what the CLI sends is bounded, whatever the aliases (a
        # character becomes at most a 6-character JSON escape, a value adds ", ").
        assert len(json.dumps(docs, default=str)) <= 8 * MAX_EXPANDED
