"""Keeps the node's BPF ipcache equal to what the cluster's kvstore says.

Called by the agent: two reflectors feed it (the cluster's ``ip/`` entries and
its ``nodes/``); :func:`desired_ipcache` (pure) turns them into the map
content, and the syncer applies the difference. On the first full sync it
diffs against the map read back, so entries left by an earlier agent run that
no longer exist are removed, and entries that still exist are never dropped
(traffic keeps flowing across an agent restart).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from glia.datapath.loader import Datapath
from glia.datapath.maps import IPCacheInfo
from glia.datapath.runner import RunDatapath
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.identity import ReservedIdentity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Desired:
    identity: int
    tunnel_endpoint: str  # "" = not tunnelled (local, or to the node stack)
    cluster_id: int


def desired_ipcache(
    entries: dict[str, IPCacheEntry], nodes: dict[str, Node], self_node: str
) -> dict[str, Desired]:
    """Map content (prefix -> Desired) for this node (pure)."""
    out: dict[str, Desired] = {}
    for node in nodes.values():
        ident = ReservedIdentity.HOST if node.name == self_node else ReservedIdentity.REMOTE_NODE
        out[f"{node.node_ip}/32"] = Desired(int(ident), "", node.cluster_id)
    for e in entries.values():
        tunnel = e.tunnel_endpoint
        if e.node == self_node:
            tunnel = ""  # local endpoints are delivered by the endpoints map
        out[f"{e.ip}/32"] = Desired(e.identity, tunnel, e.cluster_id)
    return out


class IPCacheSync:
    def __init__(
        self,
        datapath: Datapath,
        run_dp: RunDatapath,
        self_node: str,
    ) -> None:
        self._dp = datapath
        self._run_dp = run_dp
        self._self = self_node
        self.entries: dict[str, IPCacheEntry] = {}
        self.nodes: dict[str, Node] = {}
        self._applied: dict[str, Desired] = {}
        self._synced_parts: set[str] = set()
        self._initialized = False
        self.invalid = 0  # values that failed validation

    # Reflector handlers ------------------------------------------------

    def handler(self, part: str) -> Any:
        sync = self

        class _H:
            async def on_upsert(self, key: str, kv: KeyValue) -> None:
                await sync._upsert(part, key, kv)

            async def on_delete(self, key: str, old: KeyValue | None) -> None:
                if part == "ip":
                    sync.entries.pop(key, None)
                else:
                    sync.nodes.pop(key, None)
                await sync._apply()

            async def on_synced(self) -> None:
                sync._synced_parts.add(part)
                await sync._apply()

        return _H()

    async def _upsert(self, part: str, key: str, kv: KeyValue) -> None:
        try:
            if part == "ip":
                entry = codec.decode(IPCacheEntry, kv.value)
                if not key.endswith("/" + entry.ip):
                    raise codec.InvalidValue(f"ip {entry.ip} does not match its key")
                self.entries[key] = entry
            else:
                self.nodes[key] = codec.decode(Node, kv.value)
        except codec.InvalidValue as e:
            self.invalid += 1
            log.warning("ignoring invalid %s value at %s: %s", part, key, e)
            return
        await self._apply()

    async def _apply(self) -> None:
        if self._synced_parts != {"ip", "nodes"}:
            return  # a partial view would delete entries that are only not yet listed
        want = desired_ipcache(self.entries, self.nodes, self._self)
        if not self._initialized:
            await self._initial_diff(want)
            self._initialized = True
        upserts = {p: d for p, d in want.items() if self._applied.get(p) != d}
        deletes = [p for p in self._applied if p not in want]
        if upserts:
            infos = {
                p: IPCacheInfo(
                    identity=d.identity,
                    tunnel_endpoint=d.tunnel_endpoint or None,
                    cluster_id=d.cluster_id,
                )
                for p, d in upserts.items()
            }
            await self._run_dp(lambda: self._dp.ipcache.upsert_many(infos))
        for p in deletes:
            await self._run_dp(functools.partial(self._dp.ipcache.delete, p))
        self._applied = want

    async def _initial_diff(self, want: dict[str, Desired]) -> None:
        current = await self._run_dp(self._dp.ipcache.items)
        for prefix, info in current:
            d = Desired(info.identity, info.tunnel_endpoint or "", info.cluster_id)
            if prefix not in want:
                await self._run_dp(functools.partial(self._dp.ipcache.delete, prefix))
            else:
                self._applied[prefix] = d
