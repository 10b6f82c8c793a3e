"""What an endpoint becomes once its runtime's labels are known (pure).

Called by :class:`glia.endpoint.manager.EndpointManager` after ADD, when the
runtime (podman, dockerd) has answered: the namespace its labels ask for (kept
when another endpoint of the node already has that namespace and name), the
identity labels (the runtime's through the label filter, then glia's own two),
and the DNS aliases (those of ADD, then the runtime's names of the container).
Everything it decided against is in ``notes``, for the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from glia.endpoint import request
from glia.endpoint.hooks import RuntimeInfo
from glia.identity.labelfilter import LabelFilter
from glia.model.endpoint import Endpoint, merge_aliases
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL


def base_labels(namespace: str, cluster: str) -> dict[str, str]:
    """glia's own labels of every endpoint: they are always part of its identity."""
    return {NAMESPACE_LABEL: namespace, CLUSTER_LABEL: cluster}


@dataclass(frozen=True, slots=True)
class Relabel:
    namespace: str
    labels: dict[str, str]
    aliases: tuple[str, ...]
    namespace_refused: str | None = None  # why the labels' namespace was not taken
    notes: list[str] = field(default_factory=list)  # debug: labels and aliases left out


def relabel(
    ep: Endpoint,
    runtime: RuntimeInfo,
    others: Iterable[Endpoint],
    label_filter: LabelFilter,
    cluster: str,
) -> Relabel:
    """``ep`` with the runtime's labels and names; ``others``: the node's other endpoints."""
    notes: list[str] = []
    # The endpoint keeps its name (its records' key); the runtime's names of the
    # container (Docker's) become DNS aliases next to those of ADD.
    aliases, skipped = merge_aliases(ep.aliases, runtime.aliases, ep.name)
    notes += [f"alias left out: {why}" for why in skipped]
    namespace, problem = request.namespace_from_labels(runtime.labels, ep.namespace)
    if problem is None and any((o.namespace, o.name) == (namespace, ep.name) for o in others):
        problem = f"an endpoint named {namespace}/{ep.name} exists already on this node"
        namespace = ep.namespace
    # The record keeps only what makes the identity (as Cilium shows an endpoint's
    # identity labels): a restart reaches the same identity.
    labels = {**label_filter.apply(runtime.labels), **base_labels(namespace, cluster)}
    if dropped := sorted(set(runtime.labels) - labels.keys()):
        notes.append(f"labels not in its identity: {dropped}")
    return Relabel(namespace, labels, aliases, problem, notes)
