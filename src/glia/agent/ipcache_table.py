"""One cluster's contribution to the ipcache, kept up to date event by event (pure).

The agent keeps one :class:`ClusterTable` per source of ipcache state: its own
cluster, and (ClusterMesh) each remote cluster it reads. A table holds what
its cluster's kvstore says — node records, the operator's pod CIDR
allocations, ipcache entries — checked for shape on arrival
(:mod:`glia.validate`), and places each entry against the node that wrote it
(:func:`glia.validate.ipcache.check_placement`). Work per event is bounded by
what the event can change: an entry is placed alone; a node record or an
allocation re-places only that node's entries (after re-deriving the node
table, which is as large as the number of nodes). So importing 100,000
entries costs 100,000 placements, never 100,000 full passes.

:func:`glia.agent.ipcache.plan_ipcache` computes the same result from scratch;
a property test checks that every sequence of events leaves a table equal to
it. The table never touches a map: it reports which prefixes changed
(:meth:`ClusterTable.take_dirty`) and what it wants for each
(:meth:`ClusterTable.want`); :class:`glia.agent.ipcache.IPCacheSync` merges
the tables and writes the map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network

from glia.kvstore import keys
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

PARTS = ("nodes", "podcidrs", "ip")


@dataclass(frozen=True, slots=True)
class Desired:
    identity: int
    tunnel_endpoint: str  # "" = not tunnelled (local, or to the node stack)
    cluster_id: int


Taken = Callable[[str], str | None]  # an address -> why it is not the cluster's to claim


class ClusterTable:
    """What one cluster's records put into the ipcache (see the module docstring).

    ``self_node``/``self_ip``: this agent's node when the table is its own
    cluster (its entries are local: not tunnelled; its address is HOST and
    comes from configuration); None for a remote cluster. ``taken`` (a
    remote cluster): why a node IP is ours (one of our nodes' addresses,
    inside our pod pools or service CIDR), None when it is not; a node
    claiming one is refused. It may change its answers:
    :meth:`recheck_nodes` then.
    """

    def __init__(
        self,
        bounds: ClusterBounds,
        self_node: str | None = None,
        self_ip: str | None = None,
        taken: Taken | None = None,
    ) -> None:
        self.bounds = bounds
        self.self_node = self_node
        self.self_ip = self_ip
        self._taken = taken
        self.nodes: dict[str, NodeEntry] = {}  # name -> record that passed its checks
        self.allocs: dict[str, Allocation] = {}  # name -> the operator's allocation
        self.entries: dict[str, KeyedEntry] = {}  # ip key -> entry that passed its checks
        self._node_keys: dict[str, str] = {}  # node or allocation key -> node name
        self._by_node: dict[str, set[str]] = {}  # node name -> its ip keys
        self._by_prefix: dict[str, set[str]] = {}  # "ip/32" -> ip keys claiming it
        self._shape: dict[str, str] = {}  # key -> why it was refused on arrival
        self._placement: dict[str, str] = {}  # ip key -> why its placement was refused
        self._derived: dict[str, str] = {}  # node/alloc key -> refused (overlap, shared IP)
        self.valid_nodes: dict[str, Node] = {}
        self.cidrs: dict[str, IPv4Network] = {}
        self._placed: dict[str, str] = {}  # ip key -> prefix it contributes
        self._want: dict[str, Desired] = {}  # prefix -> what this cluster wants there
        self._dirty: set[str] = set()
        self._node_prefixes: set[str] = set()  # node IPs (and ours) as /32 prefixes
        self.synced_parts: set[str] = set()
        if self_ip is not None:
            self._node_prefixes.add(f"{self_ip}/32")
            self._set(f"{self_ip}/32", Desired(int(ReservedIdentity.HOST), "", bounds.cluster_id))

    # --- reading ---------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self.synced_parts == set(PARTS)

    @property
    def placed(self) -> int:
        """Entries accepted into the map (for status counts)."""
        return len(self._placed)

    def want(self, prefix: str) -> Desired | None:
        return self._want.get(prefix)

    def wanted(self) -> dict[str, Desired]:
        return dict(self._want)

    def rejected(self) -> dict[str, str]:
        """Every refused key and why (shape first: a key has one reason)."""
        return {**self._derived, **self._placement, **self._shape}

    def take_dirty(self) -> set[str]:
        """Prefixes whose wanted value may have changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    # --- events ------------------------------------------------------------------

    def upsert(self, part: str, key: str, value: bytes, create_revision: int) -> None:
        if part == "ip":
            self._entry_gone(key)
            self._shape.pop(key, None)
            try:
                e = check_entry(key, value, self.bounds)
            except Rejected as err:
                self._shape[key] = str(err)
                return
            self.entries[key] = e
            self._by_node.setdefault(e.node, set()).add(key)
            self._by_prefix.setdefault(f"{e.entry.ip}/32", set()).add(key)
            self._place(key)
            return
        self._shape.pop(key, None)
        before = self._node_keys.pop(key, None)
        try:
            if part == "nodes":
                node = check_node(key, value, self.bounds)
                name = node.name
                self.nodes[name] = NodeEntry(node, create_revision)
            else:
                name, cidr = check_podcidr(key, value, self.bounds)
                self.allocs[name] = Allocation(cidr, create_revision)
            self._node_keys[key] = name
        except Rejected as err:
            self._shape[key] = str(err)
            if before is not None and part == "nodes":
                self.nodes.pop(before, None)
            elif before is not None:
                self.allocs.pop(before, None)
        self._nodes_changed()

    def delete(self, part: str, key: str) -> None:
        self._shape.pop(key, None)
        if part == "ip":
            self._entry_gone(key)
            return
        name = self._node_keys.pop(key, None)
        if name is not None:
            if part == "nodes":
                self.nodes.pop(name, None)
            else:
                self.allocs.pop(name, None)
        self._nodes_changed()

    def recheck_nodes(self) -> None:
        """Judge the nodes again (what ``taken`` says changed)."""
        self._nodes_changed()

    def clear(self) -> None:
        """Forget everything (a source removed): every prefix it wanted becomes dirty."""
        self._dirty.update(self._want)
        self._want.clear()
        self._placed.clear()
        self.entries.clear()
        self.nodes.clear()
        self.allocs.clear()
        self._node_keys.clear()
        self._by_node.clear()
        self._by_prefix.clear()
        self._shape.clear()
        self._placement.clear()
        self._derived.clear()
        self.valid_nodes = {}
        self.cidrs = {}
        self._node_prefixes = set()

    # --- internals -----------------------------------------------------------------

    def _set(self, prefix: str, d: Desired | None) -> None:
        if self._want.get(prefix) != d:
            if d is None:
                del self._want[prefix]
            else:
                self._want[prefix] = d
            self._dirty.add(prefix)

    def _entry_gone(self, key: str) -> None:
        self._unplace(key)
        e = self.entries.pop(key, None)
        if e is not None:
            for index, at in ((self._by_node, e.node), (self._by_prefix, f"{e.entry.ip}/32")):
                keys_of = index.get(at)
                if keys_of is not None:
                    keys_of.discard(key)
                    if not keys_of:
                        del index[at]

    def _unplace(self, key: str) -> None:
        self._placement.pop(key, None)
        prefix = self._placed.pop(key, None)
        if prefix is not None:
            self._set(prefix, None)

    def _place(self, key: str) -> None:
        """Place an entry that holds no prefix now (callers unplace first)."""
        e = self.entries[key]
        prefix = f"{e.entry.ip}/32"
        try:
            check_placement(e, self.valid_nodes.get(e.node), self.cidrs.get(e.node), self.bounds)
            if prefix in self._node_prefixes:
                raise Rejected(f"ip {e.entry.ip} is a node IP")
        except Rejected as err:
            self._placement[key] = str(err)
            return
        self._placed[key] = prefix
        tunnel = "" if e.node == self.self_node else e.entry.tunnel_endpoint
        self._set(prefix, Desired(e.entry.identity, tunnel, e.entry.cluster_id))

    def _nodes_changed(self) -> None:
        """Derive the node table again; place again the entries it can affect.

        Order matters within one event: node prefixes that went away are freed,
        every affected entry is unplaced before any is placed again (a block may
        move from one node to another), and node prefixes are set last (a node's
        address wins over an entry claiming it).
        """
        cidrs, bad_cidrs = node_cidrs(self.allocs)
        valid, bad_nodes = unique_node_ips(self.nodes, self._taken)
        self._derived = {
            **{keys.podcidr_node(self.bounds.cluster, n): r for n, r in bad_cidrs.items()},
            **{keys.node(self.bounds.cluster, n): r for n, r in bad_nodes.items()},
        }
        changed = {
            n
            for n in valid.keys() | self.valid_nodes.keys() | cidrs.keys() | self.cidrs.keys()
            if valid.get(n) != self.valid_nodes.get(n) or cidrs.get(n) != self.cidrs.get(n)
        }
        if not changed:
            return
        old_prefixes = self._node_prefixes
        self.valid_nodes, self.cidrs = valid, cidrs
        node_prefix = {f"{n.node_ip}/32": name for name, n in valid.items()}
        self._node_prefixes = set(node_prefix)
        if self.self_ip is not None:
            self._node_prefixes.add(f"{self.self_ip}/32")
        for prefix in old_prefixes - self._node_prefixes:
            self._set(prefix, None)
        affected = {k for n in changed for k in self._by_node.get(n, ())}
        # Besides the changed nodes' own entries, only entries whose address became
        # or stopped being a node IP can place differently: found through the index,
        # never by a pass over every entry (a remote cluster of 100,000 entries adds
        # its nodes one event at a time).
        for prefix in old_prefixes ^ self._node_prefixes:
            affected |= self._by_prefix.get(prefix, set())
        for key in affected:
            self._unplace(key)
        for key in affected:
            self._place(key)
        for prefix, name in node_prefix.items():
            if prefix == f"{self.self_ip}/32":
                continue  # this node's own address comes from its configuration
            ident = (
                ReservedIdentity.HOST if name == self.self_node else ReservedIdentity.REMOTE_NODE
            )
            self._set(prefix, Desired(int(ident), "", self.bounds.cluster_id))
