"""Declared CiliumNetworkPolicies in the kvstore: records to apply/delete, and reading them back.

Called by the agent's config API (:mod:`glia.agent.api_config`): ``glia
apply/delete -f`` stores policies next to Services in one transaction
(:func:`glia.service.store.apply` with these :class:`~glia.service.store.Record`
s), ``glia get policies`` lists them. Layout (docs/policy.md):
``glia/config/v1/policies/<ns>/<name>``: the :class:`~glia.policy.model.Policy`
as JSON (:mod:`glia.model.codec`), with the cluster of the agent that stored it.

Records read back are checked for meaning (:func:`glia.policy.manifest.check_stored`):
a damaged one is skipped with a warning, never handed on.
"""

from __future__ import annotations

import logging

from glia.kvstore import keys
from glia.kvstore.client import KeyValue, KVClient
from glia.model import codec
from glia.policy.manifest import PolicyDoc, PolicyRef, check_stored
from glia.policy.model import Policy
from glia.service.manifest import ManifestError
from glia.service.store import Record

log = logging.getLogger(__name__)

KIND = "policies"  # the key's kind
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


def _decode(item: KeyValue) -> Policy | None:
    try:
        return check_stored(codec.decode(Policy, item.value))
    except (codec.InvalidValue, ManifestError) as e:
        log.warning("skipping invalid stored policy %s: %s", item.key, e)
        return None


async def get_policy(kv: KVClient, namespace: str, name: str) -> Policy | None:
    item = await kv.get(config_key(namespace, name))
    return None if item is None else _decode(item)


async def list_policies(kv: KVClient, namespace: str | None = None) -> list[Policy]:
    """Every valid declared policy (of ``namespace`` if given), sorted by namespace and name."""
    prefix = keys.configs(KIND) + (f"{namespace}/" if namespace else "")
    items, _ = await kv.list(prefix)
    out = [p for item in items if (p := _decode(item)) is not None]
    return sorted(out, key=lambda p: (p.namespace, p.name))
