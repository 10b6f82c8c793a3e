"""Label selectors compiled for matching, scoped as Cilium scopes them, and indexed.

Pure. :func:`subject_selector` and :func:`peer_selector` turn a policy's
:class:`~glia.policy.model.LabelSelector` into a hashable :class:`Selector`
(called by :mod:`glia.policy.compiled`); :class:`SelectorIndex` and
:class:`LabelIndex` find, without testing every pair, which selectors match a
label set and which label sets a selector matches (used by
:mod:`glia.policy.engine`, so 1,000 rules meet 1,000 identities quickly).

Scoping (docs/policy.md): an endpoint's labels carry ``io.kubernetes.pod.namespace``
and ``io.cilium.k8s.policy.cluster`` (:mod:`glia.model.identity`). A policy's
``endpointSelector`` always selects in the policy's namespace and cluster; a
``fromEndpoints``/``toEndpoints`` selector is restricted to the policy's
namespace unless it names the namespace label, and to the policy's cluster
unless it names the cluster label (matchLabels or matchExpressions, any
operator), as in Cilium (with ``policy-default-local-cluster``).

The cluster label of an identity must come from the cluster that minted it, not
from the labels it claims: :func:`endpoint_labels` sets it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL
from glia.policy.model import LabelSelector, Operator

Labels = Mapping[str, str]
# A label set is indexed under (key, value) and (key, None) for each label, a
# selector under the tokens of one requirement every matching label set has.
Token = tuple[str, str | None]

# Source prefixes Cilium allows on selector keys; glia's labels have no source.
SOURCE_PREFIXES = ("k8s:", "any:")


def normalize_key(key: str) -> str:
    """``k8s:app`` and ``any:app`` mean ``app``."""
    for prefix in SOURCE_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def endpoint_labels(labels: Labels, cluster: str) -> dict[str, str]:
    """An identity's labels as policy sees them: the cluster label is the minting cluster's."""
    out = dict(labels)
    out[CLUSTER_LABEL] = cluster
    return out


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Labels) -> bool:
        if self.op is Operator.IN:
            v = labels.get(self.key)
            return v is not None and v in self.values
        if self.op is Operator.NOT_IN:
            v = labels.get(self.key)
            return v is None or v not in self.values
        if self.op is Operator.EXISTS:
            return self.key in labels
        return self.key not in labels

    def tokens(self) -> list[Token] | None:
        """Tokens one of which every matching label set has; None if there are none."""
        if self.op is Operator.IN:
            return [(self.key, v) for v in sorted(self.values)]
        if self.op is Operator.EXISTS:
            return [(self.key, None)]
        return None

    def sort_key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.key, self.op.value, tuple(sorted(self.values)))


@dataclass(frozen=True, slots=True)
class Selector:
    """Every requirement holds (an empty selector matches every label set)."""

    requirements: tuple[Requirement, ...]

    @staticmethod
    def of(requirements: Iterable[Requirement]) -> Selector:
        return Selector(tuple(sorted(set(requirements), key=Requirement.sort_key)))

    def matches(self, labels: Labels) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def index_tokens(self) -> list[Token] | None:
        """The tokens to index this selector under: those of its most selective
        positive requirement (workload labels before namespace and cluster, few
        values before many); None when it has no positive requirement."""
        best: tuple[tuple[int, int], list[Token]] | None = None
        for r in self.requirements:
            tokens = r.tokens()
            if tokens is None:
                continue
            scope = 2 if r.key == CLUSTER_LABEL else 1 if r.key == NAMESPACE_LABEL else 0
            rank = (scope, len(tokens) if r.op is Operator.IN else 1000)
            if best is None or rank < best[0]:
                best = (rank, tokens)
        return None if best is None else best[1]

    def __str__(self) -> str:
        parts = []
        for r in self.requirements:
            if r.op is Operator.IN and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            elif r.op in (Operator.IN, Operator.NOT_IN):
                parts.append(f"{r.key} {r.op.value} ({','.join(sorted(r.values))})")
            elif r.op is Operator.EXISTS:
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) or "<all>"


def _requirements(sel: LabelSelector) -> list[Requirement]:
    reqs = [
        Requirement(normalize_key(k), Operator.IN, frozenset([v]))
        for k, v in sel.match_labels.items()
    ]
    reqs += [
        Requirement(normalize_key(e.key), e.operator, frozenset(e.values))
        for e in sel.match_expressions
    ]
    return reqs


def subject_selector(sel: LabelSelector, namespace: str, cluster: str) -> Selector:
    """An ``endpointSelector``: always in the policy's namespace and cluster."""
    reqs = _requirements(sel)
    reqs.append(Requirement(NAMESPACE_LABEL, Operator.IN, frozenset([namespace])))
    reqs.append(Requirement(CLUSTER_LABEL, Operator.IN, frozenset([cluster])))
    return Selector.of(reqs)


def peer_selector(sel: LabelSelector, namespace: str, cluster: str) -> Selector:
    """A ``fromEndpoints``/``toEndpoints`` selector: the policy's namespace and cluster
    unless it names them."""
    reqs = _requirements(sel)
    keys = {r.key for r in reqs}
    if NAMESPACE_LABEL not in keys:
        reqs.append(Requirement(NAMESPACE_LABEL, Operator.IN, frozenset([namespace])))
    if CLUSTER_LABEL not in keys:
        reqs.append(Requirement(CLUSTER_LABEL, Operator.IN, frozenset([cluster])))
    return Selector.of(reqs)


def label_tokens(labels: Labels) -> list[Token]:
    return [(k, v) for k, v in labels.items()] + [(k, None) for k in labels]


class SelectorIndex:
    """Selectors, found by the label sets they match (each tested only if it could match)."""

    def __init__(self) -> None:
        self._by_token: dict[Token, set[Selector]] = {}
        self._unindexed: set[Selector] = set()
        self._tokens: dict[Selector, list[Token] | None] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, sel: Selector) -> bool:
        return sel in self._tokens

    def add(self, sel: Selector) -> None:
        if sel in self._tokens:
            return
        tokens = sel.index_tokens()
        self._tokens[sel] = tokens
        if tokens is None:
            self._unindexed.add(sel)
            return
        for t in tokens:
            self._by_token.setdefault(t, set()).add(sel)

    def remove(self, sel: Selector) -> None:
        if sel not in self._tokens:
            return
        tokens = self._tokens.pop(sel)
        if tokens is None:
            self._unindexed.discard(sel)
            return
        for t in tokens:
            bucket = self._by_token.get(t)
            if bucket is not None:
                bucket.discard(sel)
                if not bucket:
                    del self._by_token[t]

    def matching(self, labels: Labels) -> set[Selector]:
        found = {s for s in self._unindexed if s.matches(labels)}
        for t in label_tokens(labels):
            for s in self._by_token.get(t, ()):
                if s not in found and s.matches(labels):
                    found.add(s)
        return found


K = TypeVar("K")


class LabelIndex(Generic[K]):
    """Label sets by key, found by the selectors that match them."""

    def __init__(self) -> None:
        self.labels: dict[K, Labels] = {}
        self._by_token: dict[Token, set[K]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, key: K, labels: Labels) -> None:
        self.remove(key)
        self.labels[key] = labels
        for t in label_tokens(labels):
            self._by_token.setdefault(t, set()).add(key)

    def remove(self, key: K) -> None:
        labels = self.labels.pop(key, None)
        if labels is None:
            return
        for t in label_tokens(labels):
            bucket = self._by_token.get(t)
            if bucket is not None:
                bucket.discard(key)
                if not bucket:
                    del self._by_token[t]

    def select(self, sel: Selector) -> set[K]:
        tokens = sel.index_tokens()
        if tokens is None:
            candidates: Iterable[K] = self.labels
        else:
            found: set[K] = set()
            for t in tokens:
                found |= self._by_token.get(t, set())
            candidates = found
        return {k for k in candidates if sel.matches(self.labels[k])}
