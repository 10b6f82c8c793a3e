"""Keeps the node's BPF ipcache equal to what the cluster's kvstore says, validated.

Called by the agent: three reflectors feed it (the cluster's ``nodes/``, the
operator's pod CIDR allocations ``podcidrs/`` and the ``ip/`` entries). Every
record is untrusted (any node's credentials may have written it): it is
checked on arrival for shape (:mod:`glia.validate`), and
:func:`plan_ipcache` (pure) places each entry against the node that wrote it
(an IP of that node's operator-allocated pod CIDR, tunnelled to that node's
own node IP). A rejected record is counted and reported and never reaches the
map; every other record keeps syncing.

The syncer applies the difference to the map, entry by entry when a batch
fails, so one entry the kernel refuses cannot stop the others. On the first
full sync it diffs against the map read back, so entries left by an earlier
agent run that no longer exist are removed, and entries that still exist are
never dropped (traffic keeps flowing across an agent restart).

The node table it keeps (valid nodes and their pod CIDRs) is also what the
Service validation checks backends against (:attr:`IPCacheSync.cidrs`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from glia.datapath.loader import Datapath
from glia.datapath.maps import IPCacheInfo
from glia.datapath.runner import RunDatapath
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model.identity import ReservedIdentity
from glia.model.node import Node
from glia.validate.bounds import ClusterBounds
from glia.validate.errors import Rejected
from glia.validate.ipcache import KeyedEntry, check_entry, check_placement
from glia.validate.nodes import (
    Allocation,
    NodeEntry,
    check_node,
    check_podcidr,
    node_cidrs,
    unique_node_ips,
)
from glia.validate.rejects import RejectLog

log = logging.getLogger(__name__)

PARTS = ("nodes", "podcidrs", "ip")


@dataclass(frozen=True, slots=True)
class Desired:
    identity: int
    tunnel_endpoint: str  # "" = not tunnelled (local, or to the node stack)
    cluster_id: int


@dataclass(frozen=True, slots=True)
class Plan:
    desired: dict[str, Desired]  # prefix -> map value
    rejected: dict[str, str]  # kvstore key -> reason (placement; shape is checked earlier)
    nodes: dict[str, Node]  # valid nodes by name
    cidrs: dict[str, IPv4Network]  # their pod CIDRs (operator's allocations)


def plan_ipcache(
    entries: Mapping[str, KeyedEntry],
    nodes: Mapping[str, NodeEntry],
    allocs: Mapping[str, Allocation],
    bounds: ClusterBounds,
    self_node: str,
    self_ip: str,
) -> Plan:
    """Map content for this node, and which records are refused (pure)."""
    rejected: dict[str, str] = {}
    cidrs, bad_cidrs = node_cidrs(allocs)
    for name, reason in bad_cidrs.items():
        rejected[keys.podcidr_node(bounds.cluster, name)] = reason
    valid, bad_nodes = unique_node_ips(nodes)
    for name, reason in bad_nodes.items():
        rejected[keys.node(bounds.cluster, name)] = reason
    out: dict[str, Desired] = {}
    for name, node in valid.items():
        ident = ReservedIdentity.HOST if name == self_node else ReservedIdentity.REMOTE_NODE
        out[f"{node.node_ip}/32"] = Desired(int(ident), "", bounds.cluster_id)
    # This node's own address comes from its configuration, not from the kvstore.
    out[f"{self_ip}/32"] = Desired(int(ReservedIdentity.HOST), "", bounds.cluster_id)
    node_prefixes = set(out)
    for key, e in entries.items():
        try:
            check_placement(e, valid.get(e.node), cidrs.get(e.node), bounds)
        except Rejected as err:
            rejected[key] = str(err)
            continue
        prefix = f"{e.entry.ip}/32"
        if prefix in node_prefixes:  # cannot happen with a pod pool apart from node IPs
            rejected[key] = f"ip {e.entry.ip} is a node IP"
            continue
        tunnel = "" if e.node == self_node else e.entry.tunnel_endpoint
        out[prefix] = Desired(e.entry.identity, tunnel, e.entry.cluster_id)
    return Plan(out, rejected, valid, cidrs)


class IPCacheSync:
    def __init__(
        self,
        datapath: Datapath,
        run_dp: RunDatapath,
        bounds: ClusterBounds,
        self_node: str,
        self_ip: str,
    ) -> None:
        self._dp = datapath
        self._run_dp = run_dp
        self._bounds = bounds
        self._self = self_node
        self._self_ip = self_ip
        self.entries: dict[str, KeyedEntry] = {}  # ip key -> entry that passed the shape check
        self.nodes: dict[str, NodeEntry] = {}  # node name -> record that passed
        self.allocs: dict[str, Allocation] = {}  # node name -> operator's allocation
        self._node_keys: dict[str, str] = {}  # kvstore key -> node name (nodes and podcidrs)
        self._shape: dict[str, str] = {}  # key -> reason, refused on arrival
        self._applied: dict[str, Desired] = {}
        self._synced_parts: set[str] = set()
        self._initialized = False
        self.rejects = RejectLog("ipcache")
        self.map_errors = 0  # entries the kernel refused
        self.last_map_error: str | None = None
        self.valid_nodes: dict[str, Node] = {}
        self.cidrs: dict[str, IPv4Network] = {}
        self._cidr_listeners: list[Callable[[], Any]] = []

    # Reflector handlers ------------------------------------------------

    def handler(self, part: str) -> Any:
        if part not in PARTS:
            raise ValueError(f"unknown ipcache input {part!r}")
        sync = self

        class _H:
            async def on_upsert(self, key: str, kv: KeyValue) -> None:
                sync._upsert(part, key, kv)
                await sync._apply()

            async def on_delete(self, key: str, old: KeyValue | None) -> None:
                sync._remove(part, key)
                await sync._apply()

            async def on_synced(self) -> None:
                sync._synced_parts.add(part)
                await sync._apply()

        return _H()

    def on_cidrs_changed(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` after the node CIDR table changed (Service validation depends on it)."""
        self._cidr_listeners.append(fn)

    @property
    def synced(self) -> bool:
        return self._synced_parts == set(PARTS)

    def _upsert(self, part: str, key: str, kv: KeyValue) -> None:
        self._remove(part, key)
        try:
            if part == "ip":
                self.entries[key] = check_entry(key, kv.value, self._bounds)
            elif part == "nodes":
                node = check_node(key, kv.value, self._bounds)
                self.nodes[node.name] = NodeEntry(node, kv.create_revision)
                self._node_keys[key] = node.name
            else:
                name, cidr = check_podcidr(key, kv.value, self._bounds)
                self.allocs[name] = Allocation(cidr, kv.create_revision)
                self._node_keys[key] = name
        except Rejected as e:
            self._shape[key] = str(e)

    def _remove(self, part: str, key: str) -> None:
        self._shape.pop(key, None)
        if part == "ip":
            self.entries.pop(key, None)
            return
        name = self._node_keys.pop(key, None)
        if name is None:
            return
        if part == "nodes":
            self.nodes.pop(name, None)
        else:
            self.allocs.pop(name, None)

    async def _apply(self) -> None:
        if not self.synced:
            return  # a partial view would delete entries that are only not yet listed
        plan = plan_ipcache(
            self.entries, self.nodes, self.allocs, self._bounds, self._self, self._self_ip
        )
        self.rejects.sync({**self._shape, **plan.rejected})
        self.valid_nodes = plan.nodes
        if plan.cidrs != self.cidrs:
            self.cidrs = plan.cidrs
            for fn in self._cidr_listeners:
                result = fn()
                if inspect.isawaitable(result):
                    await result
        want = plan.desired
        if not self._initialized:
            await self._initial_diff(want)
            self._initialized = True
        upserts = {p: d for p, d in want.items() if self._applied.get(p) != d}
        deletes = [p for p in self._applied if p not in want]
        if upserts:
            await self._upsert_map(upserts)
        for p in deletes:
            try:
                await self._run_dp(functools.partial(self._dp.ipcache.delete, p))
            except Exception as e:  # the kernel's word on one entry must not stop the rest
                self._map_error(p, e)
                continue
            self._applied.pop(p, None)

    async def _upsert_map(self, upserts: dict[str, Desired]) -> None:
        infos = {p: _info(d) for p, d in upserts.items()}
        try:
            await self._run_dp(lambda: self._dp.ipcache.upsert_many(infos))
            self._applied.update(upserts)
            return
        except Exception as e:
            log.warning("ipcache batch update of %d entries failed (%s): one by one", len(infos), e)
        for p, info in infos.items():
            try:
                await self._run_dp(functools.partial(self._dp.ipcache.upsert_many, {p: info}))
            except Exception as e:
                self._map_error(p, e)
                continue
            self._applied[p] = upserts[p]

    def _map_error(self, prefix: str, e: Exception) -> None:
        self.map_errors += 1
        self.last_map_error = f"{prefix}: {e}"
        log.warning("ipcache map refused %s: %s", prefix, e)

    async def _initial_diff(self, want: dict[str, Desired]) -> None:
        current = await self._run_dp(self._dp.ipcache.items)
        for prefix, info in current:
            d = Desired(info.identity, info.tunnel_endpoint or "", info.cluster_id)
            if prefix not in want:
                try:
                    await self._run_dp(functools.partial(self._dp.ipcache.delete, prefix))
                except Exception as e:
                    self._map_error(prefix, e)
            else:
                self._applied[prefix] = d

    def status(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "entries": len(self._applied),
            "nodes": len(self.valid_nodes),
            "map_errors": self.map_errors,
            "last_map_error": self.last_map_error,
            **self.rejects.status(),
        }


def _info(d: Desired) -> IPCacheInfo:
    return IPCacheInfo(
        identity=d.identity, tunnel_endpoint=d.tunnel_endpoint or None, cluster_id=d.cluster_id
    )
