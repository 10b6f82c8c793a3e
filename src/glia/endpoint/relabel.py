"""What an endpoint is before its runtime's labels are known, and after (pure).

:func:`initial_endpoint` is the record ADD starts with: identity ``init``, glia's
own labels, waiting for its identity. :func:`relabel` is called by
:class:`glia.endpoint.manager.EndpointManager` after ADD, when the
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
from glia.model.endpoint import Endpoint, EndpointState, HostPort, merge_aliases
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, ReservedIdentity


def base_labels(namespace: str, cluster: str) -> dict[str, str]:
    """glia's own labels of every endpoint: they are always part of its identity."""
    return {NAMESPACE_LABEL: namespace, CLUSTER_LABEL: cluster}


def initial_endpoint(
    *,
    cid: str,
    namespace: str,
    name: str,
    cluster: str,
    node: str,
    ip: str,
    ifname: str,
    host_ifname: str,
    netns: str,
    mac: str,
    host_mac: str,
    aliases: tuple[str, ...],
    ports: tuple[HostPort, ...],
) -> Endpoint:
    """The record of a new endpoint, complete before its veth exists."""
    return Endpoint(
        container_id=cid,
        namespace=namespace,
        name=name,
        cluster=cluster,
        node=node,
        ip=ip,
        identity=int(ReservedIdentity.INIT),
        labels=base_labels(namespace, cluster),
        state=EndpointState.WAITING_FOR_IDENTITY,
        ifname=ifname,
        host_ifname=host_ifname,
        netns=netns,
        mac=mac,
        host_mac=host_mac,
        aliases=aliases,
        ports=ports,
    )


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
