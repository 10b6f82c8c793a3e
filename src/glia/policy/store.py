"""Declared CiliumNetworkPolicies in the kvstore: records to apply/delete, and reading them back.

Called by the agent's config API (:mod:`glia.agent.api_config`): ``glia
apply/delete -f`` stores policies next to Services in one transaction
(:func:`glia.service.store.apply` with these :class:`~glia.service.store.Record`
s), ``glia get policies`` lists them. Layout (docs/policy.md):
``glia/config/v1/policies/<ns>/<name>``: the :class:`~glia.policy.model.Policy`
as JSON (:mod:`glia.model.codec`), with the cluster of the agent that stored it.

Records read back are checked for meaning (:func:`glia.policy.manifest.check_stored`):
a damaged one is skipped with a warning, never handed on. :func:`read_policies`
also says which were skipped and why, and each policy's revision (``glia
policy trace`` and ``glia policy get``, also over a remote cluster's
read-only connection, :meth:`glia.clustermesh.remote.RemoteCluster.list_policies`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from glia.kvstore import keys
from glia.kvstore.client import KeyValue, KVClient
from glia.model import codec
from glia.policy.manifest import PolicyDoc, PolicyRef, check_stored
from glia.policy.model import Policy
from glia.service.manifest import ManifestError
from glia.service.store import Record

log = logging.getLogger(__name__)

KIND = keys.POLICIES_KIND  # the key's kind
RESULT_KIND = "ciliumnetworkpolicy"  # as results and the CLI name it


def config_key(namespace: str, name: str) -> str:
    return keys.config(KIND, namespace, name)


def record(doc: PolicyDoc) -> Record:
    """The record that stores a parsed policy."""
    p = doc.policy
    return Record(
        RESULT_KIND,
        p.namespace,
        p.name,
        config_key(p.namespace, p.name),
        codec.encode(p),
        doc.where,
    )


def ref_record(ref: PolicyRef) -> Record:
    """The record of a named policy, to delete it."""
    return Record(RESULT_KIND, ref.namespace, ref.name, config_key(ref.namespace, ref.name))


@dataclass(frozen=True, slots=True)
class PolicyListing:
    """The valid policies under a prefix, as read at one store revision."""

    policies: list[Policy]  # sorted by namespace and name
    revision: int  # the store revision of the read
    mod_revisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (ns, name) ->
    skipped: list[str] = field(default_factory=list)  # "<key>: <why>" of each invalid record


def _decode(item: KeyValue, skipped: list[str] | None = None) -> Policy | None:
    try:
        policy = check_stored(codec.decode(Policy, item.value))
    except (codec.InvalidValue, ManifestError) as e:
        why = str(e)
    else:
        if item.key == config_key(policy.namespace, policy.name):
            return policy
        why = f"holds policy {policy.namespace}/{policy.name}, which belongs at another key"
    log.warning("skipping invalid stored policy %s: %s", item.key, why)
    if skipped is not None:
        skipped.append(f"{item.key}: {why}")
    return None


async def get_policy(kv: KVClient, namespace: str, name: str) -> Policy | None:
    item = await kv.get(config_key(namespace, name))
    return None if item is None else _decode(item)


async def read_policies(kv: KVClient, namespace: str | None = None) -> PolicyListing:
    """Every valid declared policy (of ``namespace`` if given), with what was skipped."""
    prefix = keys.configs(KIND) + (f"{namespace}/" if namespace else "")
    items, revision = await kv.list(prefix)
    skipped: list[str] = []
    out: list[Policy] = []
    mods: dict[tuple[str, str], int] = {}
    for item in items:
        p = _decode(item, skipped)
        if p is not None:
            out.append(p)
            mods[(p.namespace, p.name)] = item.mod_revision
    out.sort(key=lambda p: (p.namespace, p.name))
    return PolicyListing(out, revision, mods, skipped)


async def list_policies(kv: KVClient, namespace: str | None = None) -> list[Policy]:
    """Every valid declared policy (of ``namespace`` if given), sorted by namespace and name."""
    return (await read_policies(kv, namespace)).policies
