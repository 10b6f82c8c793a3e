"""Container names of the cluster, for DNS: a reflector handler on the endpoint records.

The agent runs one :class:`glia.kvstore.reflector.Reflector` over
``endpoints/v2/<cluster>/`` with a :class:`PodNames` as handler (every node's
records, this node's too); :mod:`glia.dns.names` looks names up in it. Each
record is checked by :func:`glia.validate.endpoints.check_endpoint` first: a
rejected one is counted and names nothing.

An endpoint is known by its name and by each of its aliases (``podman run
--network-alias db``, and the container's short id, which podman adds as an
alias): an alias answers exactly as a name does, and a name or alias shared by
several endpoints answers with all their addresses.
"""

from __future__ import annotations

from glia.kvstore.client import KeyValue
from glia.validate.bounds import ClusterBounds
from glia.validate.endpoints import check_endpoint
from glia.validate.errors import Rejected


class PodNames:
    def __init__(self, bounds: ClusterBounds) -> None:
        self._bounds = bounds
        self._by_key: dict[str, tuple[set[str], str, str]] = {}  # key -> (names, ns, ip)
        self._by_name: dict[str, dict[str, tuple[str, str]]] = {}  # name -> key -> (ns, ip)
        self.rejected = 0
        self.version = 0  # changes with every record (glia.dns.cache)

    def lookup(self, name: str) -> list[tuple[str, str]]:
        """(namespace, ip) of every endpoint named or aliased ``name`` (lower case)."""
        return list(self._by_name.get(name, {}).values())

    def on_upsert(self, key: str, kv: KeyValue) -> None:
        self.version += 1
        self._drop(key)
        try:
            ep = check_endpoint(key, kv.value, self._bounds)
        except Rejected:
            self.rejected += 1
            return
        names = {ep.name.lower(), *ep.aliases}
        self._by_key[key] = (names, ep.namespace, ep.ip)
        for name in names:
            self._by_name.setdefault(name, {})[key] = (ep.namespace, ep.ip)

    def on_delete(self, key: str, old: KeyValue | None) -> None:
        self.version += 1
        self._drop(key)

    def on_synced(self) -> None:
        return None

    def _drop(self, key: str) -> None:
        old = self._by_key.pop(key, None)
        if old is None:
            return
        for name in old[0]:
            of = self._by_name.get(name, {})
            of.pop(key, None)
            if not of:
                self._by_name.pop(name, None)

    def __len__(self) -> int:
        return len(self._by_key)
