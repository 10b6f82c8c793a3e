"""Keeps the node's BPF ipcache equal to what the kvstore says, validated.

Called by the agent: per source cluster (its own, and with ClusterMesh each
remote one), three reflectors feed a
:class:`~glia.agent.ipcache_table.ClusterTable` — node records, the
operator's pod CIDR allocations (``podcidrs/``) and ipcache entries
(``ip/``). Every record is untrusted (any node's credentials may have written
it): checked for shape on arrival, then placed against the node that wrote it
(an IP of that node's operator-allocated pod CIDR, tunnelled to that node's
own node IP), event by event. A rejected record is counted and reported and
never reaches the map; every other record keeps syncing.

:class:`IPCacheSync` merges the tables and applies the changed prefixes to
the map, entry by entry when a batch fails, so one entry the kernel refuses
cannot stop the others. On the first full sync it diffs against the map read
back, so entries left by an earlier agent run that no longer exist are
removed, and entries that still exist are never dropped (traffic keeps
flowing across an agent restart).

One more input, after every cluster's: the CIDR identities of policy
(:meth:`IPCacheSync.set_cidr_identities`, from :mod:`glia.agent.policy`):
``prefix -> node-local identity``, not tunnelled, cluster id 0 (world).
Endpoint and node /32s are more specific and win the LPM lookup; a prefix a
cluster table also wants keeps the table's value. Pinned CIDR entries are kept
until policy has given its first set (so a restart never turns a named prefix
back into ``world``, even briefly).

:func:`plan_ipcache` computes one cluster's result from scratch (pure): the
reference the incremental table is tested against, and what test harnesses
use to write the ipcache an agent would.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from glia.agent.ipcache_table import PARTS, ClusterTable, Desired, Taken
from glia.datapath.loader import Datapath
from glia.datapath.nodemaps import IPCacheInfo
from glia.datapath.runner import RunDatapath
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model.identity import ReservedIdentity
from glia.model.node import Node
from glia.policy.cidr import is_cidr_identity
from glia.validate.bounds import ClusterBounds
from glia.validate.errors import Rejected
from glia.validate.ipcache import KeyedEntry, check_placement
from glia.validate.nodes import (
    Allocation,
    NodeEntry,
    node_cidrs,
    unique_node_ips,
)
from glia.validate.rejects import RejectLog

log = logging.getLogger(__name__)

CIDR_SOURCE = 0  # the cluster id of CIDR entries (world), and their source in ``_orphans``


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
    taken: Taken | None = None,
) -> Plan:
    """Map content for this node, and which records are refused (pure). ``taken``:
    as :class:`~glia.agent.ipcache_table.ClusterTable`'s."""
    rejected: dict[str, str] = {}
    cidrs, bad_cidrs = node_cidrs(allocs)
    for name, reason in bad_cidrs.items():
        rejected[keys.podcidr_node(bounds.cluster, name)] = reason
    valid, bad_nodes = unique_node_ips(nodes, taken)
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
    """Merges the tables of every source (this cluster first) into the BPF ipcache.

    One :class:`ClusterTable` per cluster; the local one exists from the start
    and gates the first write (a partial view would delete entries that are
    only not listed yet). A prefix takes the value of the first table, in
    source order, that wants it. Entries pinned by an earlier run that belong
    to a source not synced yet (by the cluster id the map holds) are kept until
    that source syncs or is removed.
    """

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
        self._local = bounds.cluster
        self.local = ClusterTable(bounds, self_node, self_ip)
        self._tables: dict[str, ClusterTable] = {bounds.cluster: self.local}
        self._applied: dict[str, Desired] = {}
        self._orphans: dict[str, int] = {}  # pinned prefix -> cluster id, awaiting its source
        self._initialized = False
        self.rejects = RejectLog("ipcache")
        self.map_errors = 0  # entries the kernel refused
        self.last_map_error: str | None = None
        self._cidrs_seen = self.local.cidrs
        self._cidr_listeners: list[Callable[[], Any]] = []
        self._node_listeners: list[Callable[[], Any]] = []
        self._nodes_notified: list[object] = []
        self._nodes_seen: object = None  # local valid nodes that _node_ips was built from
        self._node_ips: dict[str, str] = {}  # our node IPs -> node name
        self._nodes_judged = self.local.valid_nodes  # what remote nodes were last judged by
        self._cidr: dict[str, int] = {}  # policy's CIDR prefixes -> their identity
        self._cidr_synced = False

    def add_source(self, bounds: ClusterBounds) -> ClusterTable:
        """A remote cluster's table (ClusterMesh), merged after ours; its handlers
        come from :meth:`handler` with its name. Its nodes may not claim an
        address of ours (:meth:`ours`)."""
        if bounds.cluster in self._tables:
            raise ValueError(f"cluster {bounds.cluster} is already a source of the ipcache")
        table = ClusterTable(bounds, taken=self.ours)
        self._tables[bounds.cluster] = table
        return table

    def ours(self, ip: str) -> str | None:
        """Why ``ip`` is this cluster's (a node's address, inside our pod pools or
        service CIDR), None when it is not: no remote cluster's node may claim it."""
        local = self.local
        if local.valid_nodes is not self._nodes_seen:
            self._nodes_seen = local.valid_nodes
            self._node_ips = {n.node_ip: name for name, n in local.valid_nodes.items()}
        b = local.bounds
        name = self._node_ips.get(ip) or (local.self_node if ip == local.self_ip else None)
        if name is not None:
            return f"the address of our node {b.cluster}/{name}"
        try:
            addr = IPv4Address(ip)
        except ValueError:
            return None  # not an address: the record's own check refuses it
        if (pool := b.pool_of(addr)) is not None:
            return f"inside our pod pool {pool} (cluster {b.cluster})"
        if b.service_cidr is not None and addr in b.service_cidr:
            return f"inside our service CIDR {b.service_cidr} (cluster {b.cluster})"
        return None

    async def remove_source(self, cluster: str) -> None:
        """Withdraw everything ``cluster`` put into the map (its file was removed,
        it went stale for too long, or it was refused)."""
        if cluster == self._local:
            raise ValueError("the local cluster is not a removable source")
        table = self._tables.get(cluster)
        if table is None:
            return
        table.clear()
        dirty = table.take_dirty()
        del self._tables[cluster]
        for prefix, cid in list(self._orphans.items()):
            if cid == table.bounds.cluster_id:
                del self._orphans[prefix]
                dirty.add(prefix)
        await self._apply(dirty)

    async def set_cidr_identities(self, prefixes: Mapping[str, int]) -> None:
        """Exactly these CIDR prefixes (policy's whole set each time; normalised prefixes)."""
        old, self._cidr = self._cidr, dict(prefixes)
        dirty = {p for p in old.keys() | self._cidr.keys() if old.get(p) != self._cidr.get(p)}
        if not self._cidr_synced:
            self._cidr_synced = True
            dirty |= self._orphans_of_synced()
        await self._apply(dirty)

    async def held_cidr_identities(self) -> dict[str, int]:
        """The CIDR entries the map holds (an earlier run's): policy adopts their numbers."""
        current = await self._run_dp(self._dp.ipcache.items)
        return {p: info.identity for p, info in current if is_cidr_identity(info.identity)}

    def table(self, cluster: str) -> ClusterTable | None:
        return self._tables.get(cluster)

    @property
    def valid_nodes(self) -> dict[str, Node]:
        return self.local.valid_nodes

    @property
    def cidrs(self) -> dict[str, IPv4Network]:
        """This cluster's node CIDRs (what Service backends are checked against)."""
        return self.local.cidrs

    # Reflector handlers ------------------------------------------------

    def handler(self, part: str, cluster: str | None = None) -> Any:
        """The reflector handler feeding ``part`` of ``cluster``'s table (default: ours)."""
        if part not in PARTS:
            raise ValueError(f"unknown ipcache input {part!r}")
        sync = self
        table = self._tables[cluster or self._local]

        # A first list (100,000 entries of a remote cluster) is applied once, at its
        # end, in one batch: a map write per entry cost a thread hop each, and
        # importing 100,000 remote endpoints took 40 s (bench/mesh.py).
        class _H:
            async def on_upsert(self, key: str, kv: KeyValue) -> None:
                table.upsert(part, key, kv.value, kv.create_revision)
                if part in table.synced_parts:
                    await sync._apply()

            async def on_delete(self, key: str, old: KeyValue | None) -> None:
                table.delete(part, key)
                if part in table.synced_parts:
                    await sync._apply()

            async def on_synced(self) -> None:
                table.synced_parts.add(part)
                await sync._apply()

        return _H()

    def on_cidrs_changed(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` after the node CIDR table changed (Service validation depends on it)."""
        self._cidr_listeners.append(fn)

    def on_nodes_changed(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` after any cluster's valid nodes or node CIDRs changed (egress
        routing and masquerade depend on them: :mod:`glia.agent.egress`)."""
        self._node_listeners.append(fn)

    def node_tables(self) -> list[ClusterTable]:
        """Every source's table, ours first (their ``valid_nodes``, ``cidrs``, ``bounds``)."""
        return list(self._tables.values())

    @property
    def synced(self) -> bool:
        return self.local.synced

    async def _apply(self, also: set[str] | None = None) -> None:
        """Write what changed; ``also``: prefixes a removed source left behind."""
        if not self.local.synced:
            return  # a partial view would delete entries that are only not yet listed
        self.rejects.sync(self.local.rejected())
        if self.local.cidrs is not self._cidrs_seen:
            self._cidrs_seen = self.local.cidrs
            for fn in self._cidr_listeners:
                result = fn()
                if inspect.isawaitable(result):
                    await result
        # The tables replace these dicts on every change (held, so compared by identity).
        seen: list[object] = [o for t in self._tables.values() for o in (t.valid_nodes, t.cidrs)]
        if len(seen) != len(self._nodes_notified) or any(
            a is not b for a, b in zip(seen, self._nodes_notified, strict=True)
        ):
            self._nodes_notified = seen
            for fn in self._node_listeners:
                result = fn()
                if inspect.isawaitable(result):
                    await result
        if self.local.valid_nodes is not self._nodes_judged:
            # Our nodes changed: a remote node may now claim (or no longer) one's address.
            self._nodes_judged = self.local.valid_nodes
            for t in self._tables.values():
                if t is not self.local:
                    t.recheck_nodes()
        dirty: set[str] = set(also or ())
        for t in self._tables.values():
            dirty |= t.take_dirty()
        if self._orphans:
            dirty |= self._orphans_of_synced()
        if not self._initialized:
            await self._initial_diff()
            self._initialized = True
            dirty |= {p for t in self._tables.values() for p in t.wanted()}
            dirty |= set(self._cidr)
        upserts: dict[str, Desired] = {}
        deletes: list[str] = []
        for prefix in dirty:
            want = self._merged(prefix)
            if want is None:
                if prefix in self._applied and prefix not in self._orphans:
                    deletes.append(prefix)
            elif self._applied.get(prefix) != want:
                upserts[prefix] = want
                self._orphans.pop(prefix, None)
        if upserts:
            await self._upsert_map(upserts)
        for p in sorted(deletes):
            try:
                await self._run_dp(functools.partial(self._dp.ipcache.delete, p))
            except Exception as e:  # the kernel's word on one entry must not stop the rest
                self._map_error(p, e)
                continue
            self._applied.pop(p, None)

    def _orphans_of_synced(self) -> set[str]:
        """Pinned prefixes whose source has synced since: no longer waiting."""
        synced = {t.bounds.cluster_id for t in self._tables.values() if t.synced}
        done = {
            p
            for p, cid in self._orphans.items()
            if (cid == CIDR_SOURCE and self._cidr_synced) or (cid != CIDR_SOURCE and cid in synced)
        }
        for p in done:
            del self._orphans[p]
        return done

    def _merged(self, prefix: str) -> Desired | None:
        for t in self._tables.values():
            d = t.want(prefix)
            if d is not None:
                return d
        cidr = self._cidr.get(prefix)
        if cidr is not None:
            return Desired(cidr, "", CIDR_SOURCE)
        return None

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

    async def _initial_diff(self) -> None:
        """Adopt what an earlier run pinned; drop what no source can want any more."""
        current = await self._run_dp(self._dp.ipcache.items)
        waiting = {t.bounds.cluster_id for t in self._tables.values() if not t.synced}
        for prefix, info in current:
            d = Desired(info.identity, info.tunnel_endpoint or "", info.cluster_id)
            self._applied[prefix] = d
            if self._merged(prefix) is not None:
                continue
            if is_cidr_identity(info.identity) and not self._cidr_synced:
                self._orphans[prefix] = CIDR_SOURCE
                continue
            if info.cluster_id in waiting:
                self._orphans[prefix] = info.cluster_id
                continue
            try:
                await self._run_dp(functools.partial(self._dp.ipcache.delete, prefix))
                del self._applied[prefix]
            except Exception as e:
                self._map_error(prefix, e)

    def status(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "entries": len(self._applied),
            "nodes": len(self.local.valid_nodes),
            "cidr_prefixes": len(self._cidr),
            "map_errors": self.map_errors,
            "last_map_error": self.last_map_error,
            **self.rejects.status(),
        }


def _info(d: Desired) -> IPCacheInfo:
    return IPCacheInfo(
        identity=d.identity, tunnel_endpoint=d.tunnel_endpoint or None, cluster_id=d.cluster_id
    )
