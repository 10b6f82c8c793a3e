"""glia.declared: documents dispatched by kind, problems named by document in file order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia import declared
from glia.service.manifest import ManifestError

SVC: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
}
POL: dict[str, Any] = {
    "apiVersion": "cilium.io/v2",
    "kind": "CiliumNetworkPolicy",
    "metadata": {"name": "web"},
    "spec": {"endpointSelector": {}, "ingress": [{"fromEntities": ["cluster"]}]},
}


def problems(docs: list[Any]) -> list[str]:
    with pytest.raises(ManifestError) as e:
        declared.parse(docs, "f.yaml")
    return e.value.problems


def test_each_document_keeps_its_number_in_the_file() -> None:
    other = {**SVC, "metadata": {"name": "db"}}
    got = declared.parse([POL, SVC, other], "f.yaml", cluster="east")
    assert [d.index for d in got.services] == [2, 3]
    assert [d.index for d in got.policies] == [1]
    assert got.policies[0].policy.cluster == "east"


def test_problems_of_every_kind_in_file_order() -> None:
    bad_svc = {**SVC, "spec": {**SVC["spec"], "ports": [{"port": 0}]}}
    bad_pol = {**POL, "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["moon"]}]}}
    got = problems([bad_pol, {"kind": "Pod"}, bad_svc, "text", POL])
    assert [p.split(":", 2)[1].strip() for p in got] == [
        "document 1 (CiliumNetworkPolicy default/web)",
        "document 2",
        "document 3 (Service default/web)",
        "document 4",
        "document 5 (CiliumNetworkPolicy default/web)",
    ]
    assert got[4].endswith("metadata.name: the same policy is also document 1")


def test_a_wrong_api_version_is_named_by_the_kinds_parser() -> None:
    (p,) = problems([{**POL, "apiVersion": "cilium.io/v1"}])
    assert "apiVersion: expected 'cilium.io/v2' for a CiliumNetworkPolicy" in p
    (p,) = problems([{**SVC, "apiVersion": "apps/v1"}])
    assert "apiVersion: expected 'v1' for a Service" in p


def test_refs_need_only_names_and_list_each_once() -> None:
    broken = {**POL, "spec": "anything"}
    refs = declared.parse_refs([SVC, broken, POL, SVC], "f.yaml")
    assert [(n, tuple(r)) for n, r in refs.services] == [(1, ("default", "web"))]
    assert [(n, tuple(r)) for n, r in refs.policies] == [(2, ("default", "web"))]
    with pytest.raises(ManifestError, match="document 2: kind: expected"):
        declared.parse_refs([SVC, {"kind": ["x"]}], "f.yaml")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
documents = st.one_of(
    yaml_values,
    st.sampled_from([SVC, POL]).flatmap(
        lambda base: st.dictionaries(st.sampled_from(sorted(base)), yaml_values).map(
            lambda over: {**base, **over}
        )
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(documents, min_size=1, max_size=4))
def test_any_input_parses_or_raises_one_manifest_error(docs: list[Any]) -> None:
    for fn in (declared.parse, declared.parse_refs):
        try:
            fn(docs, "f.yaml")
        except ManifestError as e:
            assert e.problems
            assert all(p.startswith("f.yaml: document ") for p in e.problems), e.problems
