"""Label selectors: Kubernetes' matching, Cilium's scoping, and the indexes equal brute force."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL
from glia.policy.model import LabelRequirement, LabelSelector, Operator
from glia.policy.selector import (
    LabelIndex,
    Requirement,
    Selector,
    SelectorIndex,
    endpoint_labels,
    normalize_key,
    peer_selector,
    subject_selector,
)

IN, NOT_IN, EXISTS, DNE = Operator.IN, Operator.NOT_IN, Operator.EXISTS, Operator.DOES_NOT_EXIST


def req(key: str, op: Operator, *values: str) -> Requirement:
    return Requirement(key, op, frozenset(values))


def test_requirements_as_in_kubernetes() -> None:
    labels = {"app": "web", "tier": ""}
    assert req("app", IN, "web", "db").matches(labels)
    assert not req("app", IN, "db").matches(labels)
    assert not req("missing", IN, "x").matches(labels)
    assert req("app", NOT_IN, "db").matches(labels)
    assert req("missing", NOT_IN, "x").matches(labels)  # an absent label is "not in"
    assert not req("app", NOT_IN, "web").matches(labels)
    assert req("tier", EXISTS).matches(labels)
    assert not req("tier", DNE).matches(labels)
    assert req("missing", DNE).matches(labels)
    assert Selector.of([]).matches({})  # the empty selector matches everything


def test_keys_lose_their_source_prefix() -> None:
    assert normalize_key("k8s:app") == "app"
    assert normalize_key("any:app") == "app"
    assert normalize_key("container:app") == "container:app"


def test_scoping() -> None:
    sel = LabelSelector({"app": "client"})
    s = peer_selector(sel, "shop", "c1")
    assert str(s) == "app=client,io.cilium.k8s.policy.cluster=c1,io.kubernetes.pod.namespace=shop"
    named = LabelSelector(
        {"app": "client"}, [LabelRequirement(NAMESPACE_LABEL, NOT_IN, ["kube-system"])]
    )
    assert str(peer_selector(named, "shop", "c1")) == (
        "app=client,io.cilium.k8s.policy.cluster=c1,io.kubernetes.pod.namespace NotIn (kube-system)"
    )
    other_cluster = LabelSelector({"app": "client", CLUSTER_LABEL: "c2"})
    assert str(peer_selector(other_cluster, "shop", "c1")) == (
        "app=client,io.cilium.k8s.policy.cluster=c2,io.kubernetes.pod.namespace=shop"
    )
    # an endpointSelector is always in the policy's namespace and cluster, even when it
    # names a cluster (then it selects nothing unless that is the policy's own)
    subject = subject_selector(other_cluster, "shop", "c1")
    assert not subject.matches(endpoint_labels({"app": "client", NAMESPACE_LABEL: "shop"}, "c2"))
    assert not subject.matches(endpoint_labels({"app": "client", NAMESPACE_LABEL: "shop"}, "c1"))
    assert subject_selector(sel, "shop", "c1").matches(
        endpoint_labels({"app": "client", NAMESPACE_LABEL: "shop", CLUSTER_LABEL: "c9"}, "c1")
    )


KEYS = ["a", "b", "c", NAMESPACE_LABEL, CLUSTER_LABEL]
VALUES = ["x", "y", "z"]
requirements = st.builds(
    lambda k, op, vs: Requirement(k, op, frozenset() if op in (EXISTS, DNE) else frozenset(vs)),
    st.sampled_from(KEYS),
    st.sampled_from(Operator),
    st.sets(st.sampled_from(VALUES), min_size=1, max_size=3),
)
selectors = st.lists(requirements, max_size=4).map(Selector.of)
label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=5)


@given(
    st.lists(selectors, max_size=12),
    st.lists(label_sets, max_size=12),
    st.lists(st.integers(0, 11), max_size=4),
)
@settings(max_examples=500, deadline=None)
def test_indexes_find_what_testing_every_pair_finds(
    sels: list[Selector], sets: list[dict[str, str]], removed: list[int]
) -> None:
    si = SelectorIndex()
    li: LabelIndex[int] = LabelIndex()
    for s in sels:
        si.add(s)
    for i, labels in enumerate(sets):
        li.add(i, labels)
    gone = {sels[i % len(sels)] for i in removed} if sels else set()
    for s in gone:
        si.remove(s)
    for i in removed:
        li.remove(i)
    live_sels = set(sels) - gone
    live_sets = {i: labels for i, labels in enumerate(sets) if i not in removed}
    assert len(si) == len(live_sels) and len(li) == len(live_sets)
    for labels in sets:
        assert si.matching(labels) == {s for s in live_sels if s.matches(labels)}
    for s in sels:
        assert li.select(s) == {i for i, labels in live_sets.items() if s.matches(labels)}
