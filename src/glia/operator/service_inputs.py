"""What the operator's Service resolution reads: declared Services, endpoints, probe results.

Owned by :class:`glia.operator.services.ServiceResolver`, which feeds it the
records of four reflectors (the pod CIDR allocations, the declared Services,
the cluster's endpoints and the agents' probe results) and resolves the
Services it marks. No I/O: every method takes a record as read and calls
``mark`` with the Services the change can affect, so it can be driven without
etcd.

Endpoints and probe results are untrusted (any node may have written them): an
endpoint becomes a backend only if its record is valid and its IP lies in the
pod CIDR of the node that wrote it (:mod:`glia.validate.endpoints`), and a
node's probe results count only for its own addresses
(:mod:`glia.validate.health`); both are placed again when that node's CIDR
changes. Rejections are counted and logged once
(:class:`~glia.validate.rejects.RejectLog`). Each Service is indexed under one
of its selector pairs, so a changed endpoint finds the Services it may belong
to without scanning every Service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.endpoint import Endpoint
from glia.model.service import ServiceSpec
from glia.service import store
from glia.service.resolve import HealthKey, selects
from glia.validate.bounds import ClusterBounds
from glia.validate.endpoints import check_endpoint, check_endpoint_placement
from glia.validate.errors import Rejected
from glia.validate.health import check_health
from glia.validate.nodes import check_podcidr
from glia.validate.rejects import RejectLog

log = logging.getLogger(__name__)

Ref = tuple[str, str]  # (namespace, name)


def ref_of(key: str, prefix: str) -> Ref | None:
    """(namespace, name) of a ``<prefix><ns>/<name>`` key."""
    parts = key[len(prefix) :].split("/")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def _service_ref(service: str) -> Ref | None:
    ns, sep, name = service.partition("/")
    return (ns, name) if sep and ns and name and "/" not in name else None


class ServiceInputs:
    def __init__(
        self, cluster: str, bounds: ClusterBounds, mark: Callable[[Iterable[Ref]], None]
    ) -> None:
        self._cluster = cluster
        self._bounds = bounds
        self._mark = mark  # the Services a change can affect, to resolve again
        self.rejects = RejectLog("services")
        self._cidrs: dict[str, Any] = {}  # node -> IPv4Network (operator's allocations)
        self._cidr_keys: dict[str, str] = {}  # allocation key -> node
        self._candidates: dict[str, Endpoint] = {}  # by key: valid records, placed or not
        self._health_raw: dict[str, bytes] = {}  # by node: to check again when CIDRs change
        self.config_prefix = keys.configs(store.KIND)  # where declared Services are
        self.specs: dict[Ref, ServiceSpec] = {}
        # Each Service is indexed under one of its selector pairs: an endpoint
        # can only match Services indexed under one of its own labels.
        self._index: dict[tuple[str, str, str], set[Ref]] = {}
        self.endpoints: dict[str, Endpoint] = {}  # by kvstore key: placed, possible backends
        self._by_ns: dict[str, dict[str, Endpoint]] = {}
        self._ip_node: dict[str, str] = {}
        self._health: dict[str, dict[HealthKey, bool]] = {}  # node -> probe results

    def namespace_endpoints(self, namespace: str) -> Iterable[Endpoint]:
        """The placed endpoints of ``namespace`` (what a Service there may select)."""
        return self._by_ns.get(namespace, {}).values()

    def probe(self, service: str, ip: str, port: int) -> bool | None:
        """The probe result of ``ip:port`` for ``service`` from the node that owns ``ip``."""
        node = self._ip_node.get(ip)
        return None if node is None else self._health.get(node, {}).get((service, ip, port))

    # --- declared Services ----------------------------------------------------------

    def _index_key(self, spec: ServiceSpec) -> tuple[str, str, str] | None:
        if not spec.selector:
            return None
        k = min(spec.selector)
        return (spec.namespace, k, spec.selector[k])

    def spec_upsert(self, key: str, kv: KeyValue) -> None:
        ref = ref_of(key, self.config_prefix)
        if ref is None:
            return
        try:
            spec = codec.decode(ServiceSpec, kv.value)
        except codec.InvalidValue as e:
            log.warning("ignoring invalid Service %s (keeping the last valid one): %s", key, e)
            return
        if (spec.namespace, spec.name) != ref:
            log.warning(
                "ignoring Service %s: its value names %s/%s", key, spec.namespace, spec.name
            )
            return
        self._unindex(ref)
        self.specs[ref] = spec
        if (ik := self._index_key(spec)) is not None:
            self._index.setdefault(ik, set()).add(ref)
        self._mark([ref])

    def spec_delete(self, key: str, old: KeyValue | None) -> None:
        ref = ref_of(key, self.config_prefix)
        if ref is None:
            return
        self._unindex(ref)
        self.specs.pop(ref, None)
        self._mark([ref])

    def _unindex(self, ref: Ref) -> None:
        old = self.specs.get(ref)
        if old is not None and (ik := self._index_key(old)) is not None:
            refs = self._index.get(ik)
            if refs is not None:
                refs.discard(ref)
                if not refs:
                    del self._index[ik]

    # --- endpoints -----------------------------------------------------------------

    def _affected(self, ep: Endpoint) -> set[Ref]:
        """Services whose selector matches the endpoint's labels (whatever its state)."""
        out: set[Ref] = set()
        for k, v in ep.labels.items():
            for ref in self._index.get((ep.namespace, k, v), ()):
                spec = self.specs.get(ref)
                if spec is not None and selects(spec.selector, ep.labels):
                    out.add(ref)
        return out

    def endpoint_upsert(self, key: str, kv: KeyValue) -> None:
        try:
            ep = check_endpoint(key, kv.value, self._bounds)
        except Rejected as e:
            self.rejects.reject(key, str(e))
            self.endpoint_delete(key, None)
            return
        self._candidates[key] = ep
        self._place(key, ep)

    def _place(self, key: str, ep: Endpoint) -> None:
        """Make ``ep`` a possible backend if it lies in its node's pod CIDR."""
        try:
            check_endpoint_placement(ep, self._cidrs.get(ep.node))
        except Rejected as e:
            self.rejects.reject(key, str(e))
            old = self._forget(key)
            if old is not None:
                self._mark(self._affected(old))
            return
        self.rejects.accept(key)
        old = self.endpoints.get(key)
        if old == ep:
            return
        self._forget(key)
        self.endpoints[key] = ep
        self._by_ns.setdefault(ep.namespace, {})[key] = ep
        self._ip_node[ep.ip] = ep.node
        self._mark(self._affected(ep) | (self._affected(old) if old else set()))

    def endpoint_delete(self, key: str, old_kv: KeyValue | None) -> None:
        self._candidates.pop(key, None)
        if old_kv is not None:
            self.rejects.forget(key)
        old = self._forget(key)
        if old is not None:
            self._mark(self._affected(old))

    def _forget(self, key: str) -> Endpoint | None:
        old = self.endpoints.pop(key, None)
        if old is not None:
            ns = self._by_ns.get(old.namespace, {})
            ns.pop(key, None)
            if not ns:
                self._by_ns.pop(old.namespace, None)
            if self._ip_node.get(old.ip) == old.node:
                del self._ip_node[old.ip]
                # An endpoint that moved namespace (new key, same IP) may have been
                # placed before its old key went: it still owns the address.
                for other in self._by_ns.values():
                    same = next((e for e in other.values() if e.ip == old.ip), None)
                    if same is not None:
                        self._ip_node[old.ip] = same.node
                        break
        return old

    # --- probe results ----------------------------------------------------------------

    def health_upsert(self, key: str, kv: KeyValue) -> None:
        node = keys.last(key)
        self._health_raw[node] = kv.value
        self._take_health(key, node, kv.value)

    def _take_health(self, key: str, node: str, raw: bytes) -> None:
        try:
            value, dropped = check_health(key, raw, self._bounds, self._cidrs.get(node))
        except Rejected as e:
            self.rejects.reject(key, str(e))
            self._health_changed(self._health.pop(node, {}), {})
            return
        if dropped:
            self.rejects.reject(key, f"{dropped} results about addresses not of node {node}")
        else:
            self.rejects.accept(key)
        new = {(r.service, r.ip, r.port): r.ready for r in value.results}
        self._health_changed(self._health.get(node, {}), new)
        self._health[node] = new

    def health_delete(self, key: str, old_kv: KeyValue | None) -> None:
        node = keys.last(key)
        self._health_raw.pop(node, None)
        self.rejects.forget(key)
        old = self._health.pop(node, {})
        self._health_changed(old, {})

    # --- pod CIDR allocations (what bounds each node's endpoints) -------------------

    def cidr_upsert(self, key: str, kv: KeyValue) -> None:
        try:
            node, cidr = check_podcidr(key, kv.value, self._bounds)
        except Rejected as e:
            self.rejects.reject(key, str(e))
            self.cidr_delete(key, None)
            return
        self.rejects.accept(key)
        self._cidr_keys[key] = node
        if self._cidrs.get(node) != cidr:
            self._cidrs[node] = cidr
            self._recheck(node)

    def cidr_delete(self, key: str, old_kv: KeyValue | None) -> None:
        node = self._cidr_keys.pop(key, None)
        if old_kv is not None:
            self.rejects.forget(key)
        if node is not None and self._cidrs.pop(node, None) is not None:
            self._recheck(node)

    def _recheck(self, node: str) -> None:
        """Place again what depends on ``node``'s CIDR (endpoints, probe results)."""
        for key, ep in list(self._candidates.items()):
            if ep.node == node:
                self._place(key, ep)
        raw = self._health_raw.get(node)
        if raw is not None:
            self._take_health(keys.health(self._cluster, node), node, raw)

    def _health_changed(self, old: dict[HealthKey, bool], new: dict[HealthKey, bool]) -> None:
        changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
        self._mark(ref for svc, _, _ in changed if (ref := _service_ref(svc)) is not None)
