"""Properties of policy manifest parsing (hypothesis): any input gives a policy or a
ManifestError naming the file, never a traceback; to_manifest round-trips."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from json_strategies import json_values

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL
from glia.policy.manifest import parse_policies, parse_policy, parse_refs, to_manifest
from glia.policy.model import (
    CIDRRule,
    Entity,
    L4Proto,
    LabelRequirement,
    LabelSelector,
    Operator,
    PeerRule,
    Policy,
    PortProtocol,
    PortRule,
    Rule,
)
from glia.service.manifest import ManifestError, load_yaml

FIELD_NAMES = [
    "apiVersion", "kind", "metadata", "spec", "specs", "name", "namespace", "endpointSelector",
    "matchLabels", "matchExpressions", "key", "operator", "values", "ingress", "egress",
    "ingressDeny", "egressDeny", "fromEndpoints", "toEndpoints", "fromEntities", "toEntities",
    "fromCIDR", "toCIDR", "fromCIDRSet", "toCIDRSet", "cidr", "except", "toPorts", "ports",
    "port", "endPort", "protocol", "toFQDNs", "rules", "nodeSelector",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        [
            "cilium.io/v2",
            "CiliumNetworkPolicy",
            "TCP",
            "ANY",
            "In",
            "Exists",
            "world",
            "all",
            "10.0.0.0/8",
            "80",
            "",
            "k8s:app",
            "reserved:host",
        ]
    ),
    st.binary(max_size=4),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.integers(), st.none())
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)

VALID: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop", "labels": {"a": "b"}},
    "specs": [
        {
            "endpointSelector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
            },
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                    "fromEntities": ["host"],
                    "toPorts": [{"ports": [{"port": "80", "endPort": 90, "protocol": "TCP"}]}],
                }
            ],
            "egressDeny": [
                {
                    "toCIDR": ["10.0.0.0/8"],
                    "toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.0/25"]}],
                }
            ],
        }
    ],
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


def test_valid_is_valid() -> None:
    assert parse_policy(VALID, cluster="c1").name == "web"


@given(st.lists(st.one_of(junk, json_values), min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_junk_only_raises_manifest_errors(docs: list[Any]) -> None:
    for fn in (
        lambda: parse_policies(docs, "j.yaml", cluster="c1"),
        lambda: parse_refs(docs, "j.yaml"),
    ):
        try:
            fn()
        except ManifestError as e:
            assert e.problems and all(p.startswith("j.yaml: ") for p in e.problems)


@given(st.sampled_from(PATHS), st.one_of(junk, json_values))
@settings(max_examples=400, deadline=None)
def test_one_bad_value_in_a_valid_policy_only_raises_manifest_errors(
    path: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(VALID)
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    try:
        policy = parse_policy(doc, "j.yaml", cluster="c1")
    except ManifestError as e:
        assert all(p.startswith("j.yaml: document 1") for p in e.problems)
    else:
        assert parse_policy(to_manifest(policy), cluster="c1") == policy


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_text_loads_and_parses_or_raises_manifest_errors(text: str) -> None:
    try:
        parse_policies(load_yaml(text, "t.yaml"), "t.yaml")
    except ManifestError as e:
        assert e.problems[0].startswith("t.yaml")


# -- round trips of generated policies ------------------------------------------

label_keys = st.sampled_from(["app", "tier", "x.io/name", NAMESPACE_LABEL, CLUSTER_LABEL])
label_values = st.text(max_size=5)


@st.composite
def selectors(draw: st.DrawFn, subject: bool) -> LabelSelector:
    keys = label_keys.filter(lambda k: k != NAMESPACE_LABEL) if subject else label_keys
    exprs = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(Operator))
        values = (
            []
            if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST)
            else sorted(draw(st.sets(label_values, min_size=1, max_size=3)))
        )
        exprs.append(LabelRequirement(draw(keys), op, values))
    return LabelSelector(draw(st.dictionaries(keys, label_values, max_size=3)), exprs)


prefixes = st.sampled_from(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "0.0.0.0/0"])


@st.composite
def cidr_rules(draw: st.DrawFn) -> CIDRRule:
    cidr = draw(prefixes)
    inside = {"10.0.0.0/8": ["10.1.0.0/16", "10.1.2.0/24"], "10.1.0.0/16": ["10.1.2.0/24"]}
    excepts = draw(st.lists(st.sampled_from(inside.get(cidr, [cidr])), max_size=2, unique=True))
    return CIDRRule(cidr, excepts)


@st.composite
def ports(draw: st.DrawFn) -> PortProtocol:
    port = draw(st.integers(0, 65535))
    end = draw(st.integers(port + 1, 65535)) if 0 < port < 65535 and draw(st.booleans()) else 0
    return PortProtocol(port, end, draw(st.sampled_from(L4Proto)))


@st.composite
def peer_rules(draw: st.DrawFn) -> PeerRule:
    return PeerRule(
        endpoints=draw(st.lists(selectors(False), max_size=2)),
        entities=draw(st.lists(st.sampled_from(Entity), max_size=3, unique=True)),
        cidr=draw(st.lists(prefixes, max_size=2)),
        cidr_set=draw(st.lists(cidr_rules(), max_size=2)),
        to_ports=draw(
            st.lists(
                st.builds(PortRule, st.lists(ports(), min_size=1, max_size=3, unique=True)),
                max_size=2,
            )
        ),
    )


rules = st.builds(
    Rule,
    endpoint_selector=selectors(True),
    ingress=st.lists(peer_rules(), max_size=2),
    egress=st.lists(peer_rules(), max_size=2),
    ingress_deny=st.lists(peer_rules(), max_size=1),
    egress_deny=st.lists(peer_rules(), max_size=1),
    description=st.text(max_size=10),
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    spec = draw(st.one_of(st.none(), rules))
    specs = draw(st.lists(rules, min_size=0 if spec else 1, max_size=2))
    return Policy(
        namespace=draw(st.sampled_from(["default", "shop"])),
        name=draw(st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?\Z")),
        cluster="c1",
        spec=spec,
        specs=specs,
        labels=draw(
            st.dictionaries(st.text(min_size=1, max_size=4), st.text(max_size=4), max_size=2)
        ),
    )


@given(policies())
@settings(max_examples=200, deadline=None)
def test_to_manifest_then_parse_gives_the_policy_back(policy: Policy) -> None:
    try:
        back = parse_policy(to_manifest(policy), cluster="c1")
    except ManifestError as e:  # the generated name may not be a DNS subdomain ("a..b")
        assert all("metadata.name" in p for p in e.problems), e.problems
        return
    assert back == policy


@given(json_values, st.sampled_from(PATHS), st.one_of(junk, json_values))
@settings(max_examples=300, deadline=None)
def test_a_stored_record_decodes_and_checks_or_is_rejected_never_more(
    raw: Any, path: tuple[Any, ...], value: Any
) -> None:
    """What the store reads back (codec, then check_stored) is rejected cleanly or compiles."""
    from glia.model import codec
    from glia.policy.compiled import compile_policy
    from glia.policy.manifest import check_stored

    stored = codec.to_dict(parse_policy(VALID, cluster="c1"))
    candidates = [raw, stored]
    target: Any = copy.deepcopy(stored)
    candidates.append(target)
    for part in ("spec", "specs", 0, "ingress", 0, "to_ports", 0, "ports", 0)[: 1 + len(path) % 9]:
        if isinstance(target, dict) and part in target and isinstance(target[part], dict | list):
            target = target[part]
        elif isinstance(target, list) and isinstance(part, int) and target:
            target = target[0]
    if isinstance(target, dict) and target:
        target[sorted(target)[len(path) % len(target)]] = value
    for c in candidates:
        try:
            policy = check_stored(codec.from_dict(Policy, c))
        except (codec.InvalidValue, ManifestError):
            continue
        compile_policy(policy)
