"""``glia policy get``: the policies an agent's cluster enforces, as the agent sees them (pure).

Called by the agent's API (:mod:`glia.agent.api_policy`, ``GET /v1/policy``)
with what it read from its cluster's store (:func:`glia.policy.store.read_policies`)
and the label sets of its local endpoints. Each policy is its
``cilium.io/v2`` manifest (:func:`glia.policy.manifest.to_manifest`, so ``glia
get policies`` columns fit it) with a ``status``: the store revision of its
last change and how many of this node's endpoints its rules select.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from glia.policy.compiled import compile_policy
from glia.policy.manifest import to_manifest
from glia.policy.peers import Peer
from glia.policy.store import PolicyListing
from glia.policy.trace import policies_of


def policy_view(
    listing: PolicyListing, cluster: str, endpoints: Iterable[Mapping[str, str]]
) -> dict[str, Any]:
    """``{"cluster", "revision", "policies": [manifest + status], "skipped": [why]}``.

    ``endpoints``: the labels of the node's endpoints that have their identity.
    A record stored for another cluster governs nothing here: skipped, said why.
    """
    skipped = list(listing.skipped)
    subjects = [Peer.endpoint(labels, cluster) for labels in endpoints]
    items = []
    for p in policies_of(cluster, listing.policies, skipped):
        rules = compile_policy(p)
        selected = sum(1 for s in subjects if any(r.selects(s) for r in rules))
        manifest = to_manifest(p)
        manifest["status"] = {
            "cluster": cluster,
            "revision": listing.mod_revisions.get((p.namespace, p.name), 0),
            "endpoints": selected,
        }
        items.append(manifest)
    return {
        "cluster": cluster,
        "revision": listing.revision,
        "policies": items,
        "skipped": skipped,
    }
