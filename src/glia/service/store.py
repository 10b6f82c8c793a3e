"""Declared Services in the kvstore: apply, delete, list (with ClusterIP reservations).

Called by the agent's config API (:mod:`glia.agent.api_config`) for ``glia
apply/delete -f``, which stores a file's other declared resources (policies,
:mod:`glia.policy.store`) as plain :class:`Record` s in the same transaction,
and by whoever needs the declared Services (the operator's
:class:`~glia.operator.services.ServiceResolver` watches the same keys).

Layout (docs/services.md):

- ``glia/config/v1/services/<ns>/<name>``: the :class:`ServiceSpec` (JSON), with
  its ClusterIP filled in;
- ``glia/config/v1/clusterips/<ip>``: ``"<ns>/<name>"``, the reservation.

All Services (and records) of one apply are written in ONE etcd transaction whose compares
say that every Service key is still as it was read and that every ClusterIP is
still free (or still this Service's): either the whole file is stored or
nothing, and an address can never be reserved twice, however many appliers
race (the loser re-reads and tries again). That bounds one apply to what one
transaction may hold: etcd's ``--max-txn-ops`` (128 by default) compares, so
64 changed Services (or 128 records); larger files are refused with a clear message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from glia.kvstore import keys
from glia.kvstore.client import Compare, Delete, KeyValue, KVClient, Put
from glia.kvstore.errors import KVStoreError
from glia.model import codec
from glia.model.service import ServiceSpec
from glia.service import clusterip
from glia.service.manifest import ManifestError, ServiceDoc, ServiceRef

log = logging.getLogger(__name__)

KIND = "services"
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
MAX_ATTEMPTS = 30  # transaction conflicts with concurrent appliers before giving up
PROBE_ROUNDS = 3  # rounds of random ClusterIP candidates before listing every reservation

Action = Literal["created", "configured", "unchanged"]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    namespace: str
    name: str
    action: Action
    cluster_ip: str
    kind: str = "service"  # "service" or a record's kind ("ciliumnetworkpolicy")


@dataclass(frozen=True, slots=True)
class DeleteResult:
    namespace: str
    name: str
    action: Literal["deleted", "not found"]
    cluster_ip: str = ""
    kind: str = "service"


@dataclass(frozen=True, slots=True)
class Record:
    """A declared resource stored as its value alone, without reservations (a policy).

    ``value`` is empty when the record is only named (to delete it).
    """

    kind: str  # as results name it: "ciliumnetworkpolicy"
    namespace: str
    name: str
    key: str
    value: bytes = b""
    where: str = ""  # the document, for messages


class StoreConflict(KVStoreError):
    """Concurrent writers kept changing the same keys; nothing was stored."""


def config_key(namespace: str, name: str) -> str:
    return keys.config(KIND, namespace, name)


def owner(namespace: str, name: str) -> bytes:
    """The value of a ClusterIP reservation key."""
    return f"{namespace}/{name}".encode()


def _decode(kv: KeyValue | None) -> ServiceSpec | None:
    if kv is None:
        return None
    try:
        return codec.decode(ServiceSpec, kv.value)
    except codec.InvalidValue as e:
        # Overwritten by this apply; its ClusterIP reservation, if any, stays
        # (it may belong to the Service and cannot be told from here).
        log.warning("stored Service %s is invalid (%s): replacing it", kv.key, e)
        return None


async def _get_all(kv: KVClient, key_list: Sequence[str]) -> list[KeyValue | None]:
    """The key-values of ``key_list``, read concurrently; ``""`` reads as None."""

    async def get(key: str) -> KeyValue | None:
        return await kv.get(key) if key else None

    return list(await asyncio.gather(*(get(k) for k in key_list)))


def _as_doc(item: ServiceSpec | ServiceDoc) -> ServiceDoc:
    return item if isinstance(item, ServiceDoc) else ServiceDoc(item)


def _too_big(n_ops: int, max_txn_ops: int, what: str) -> ManifestError:
    return ManifestError(
        [
            f"{what}: {n_ops} operations do not fit in one etcd transaction (at most "
            f"{max_txn_ops}, etcd's --max-txn-ops): split the file, about "
            f"{max_txn_ops // 2} Services or {max_txn_ops} policies per file"
        ]
    )


async def apply(
    kv: KVClient,
    specs: Sequence[ServiceSpec | ServiceDoc],
    service_cidr: str,
    *,
    max_txn_ops: int = MAX_TXN_OPS,
    rng: random.Random | None = None,
    records: Sequence[Record] = (),
) -> list[ApplyResult]:
    """Store every Service and record, all or nothing; a missing ClusterIP is allocated.

    Results: the Services' in order, then the records'. ``service_cidr`` is
    needed only when there are Services.

    Raises :class:`ManifestError` (each problem naming the document and field)
    for a ClusterIP outside ``service_cidr``, taken by another Service, or
    changed on an existing Service (it is immutable, as in Kubernetes);
    :class:`~glia.service.clusterip.ClusterIPExhausted` when the CIDR is full;
    :class:`StoreConflict` if concurrent writers won ``MAX_ATTEMPTS`` times.
    """
    docs = [_as_doc(s) for s in specs]
    if docs:
        clusterip.parse_cidr(service_cidr)  # a bad agent setting fails before any I/O
    keys_seen: set[str] = set()
    for r in records:
        if r.key in keys_seen:
            raise ManifestError([f"{r.where}: metadata.name: the same {r.kind} is given twice"])
        keys_seen.add(r.key)
    seen: set[ServiceRef] = set()
    for d in docs:
        ref = ServiceRef(d.spec.namespace, d.spec.name)
        if ref in seen:
            raise ManifestError([f"{d.where}: metadata.name: the same Service is given twice"])
        seen.add(ref)
    delay = 0.002
    for _ in range(MAX_ATTEMPTS):
        results = await _try_apply(kv, docs, records, service_cidr, max_txn_ops, rng)
        if results is not None:
            return results
        await asyncio.sleep(random.uniform(0, delay))
        delay = min(delay * 2, 0.1)
    raise StoreConflict(
        f"gave up storing {len(docs) + len(records)} resource(s) after {MAX_ATTEMPTS} "
        "conflicts with "
        "concurrent writers; nothing was stored, try again"
    )


async def _try_apply(
    kv: KVClient,
    docs: Sequence[ServiceDoc],
    records: Sequence[Record],
    service_cidr: str,
    max_txn_ops: int,
    rng: random.Random | None,
) -> list[ApplyResult] | None:
    """One read-check-write round; None if the transaction lost a race."""
    current = await _get_all(kv, [config_key(d.spec.namespace, d.spec.name) for d in docs])
    record_current = await _get_all(kv, [r.key for r in records])
    existing = [_decode(c) for c in current]
    # The ClusterIP each Service will have ("" = allocate one).
    wanted: list[str] = []
    problems: list[str] = []
    for d, old in zip(docs, existing, strict=True):
        ip = d.spec.cluster_ip
        if old is not None and old.cluster_ip:
            if ip and ip != old.cluster_ip:
                problems.append(
                    f"{d.where}: spec.clusterIP: is immutable: the Service has "
                    f"{old.cluster_ip}, got {ip} (delete the Service to change it)"
                )
            ip = old.cluster_ip
        elif ip and (err := clusterip.check(ip, service_cidr)):
            problems.append(f"{d.where}: spec.clusterIP: {err}")
        wanted.append(ip)
    reservations = await _get_all(kv, [keys.cluster_ip(ip) if ip else "" for ip in wanted])
    for d, ip, res in zip(docs, wanted, reservations, strict=True):
        me = owner(d.spec.namespace, d.spec.name)
        if ip and res is not None and res.value != me:
            holder = res.value.decode(errors="replace")
            problems.append(
                f"{d.where}: spec.clusterIP: {ip} is already allocated to Service {holder}"
            )
    if problems:
        raise ManifestError(problems)
    missing = [i for i, ip in enumerate(wanted) if not ip]
    if missing:
        new = await _free_ips(kv, service_cidr, [ip for ip in wanted if ip], len(missing), rng)
        for i, ip in zip(missing, new, strict=True):
            wanted[i] = ip

    compares: list[Compare] = []
    ops: list[Put | Delete] = []
    results: list[ApplyResult] = []
    for i, d in enumerate(docs):
        spec = replace(d.spec, cluster_ip=wanted[i])
        key = config_key(spec.namespace, spec.name)
        me = owner(spec.namespace, spec.name)
        # res: this Service's reservation (checked above), None if the address is new to it.
        old, cur, res = existing[i], current[i], reservations[i]
        if old == spec and res is not None:
            results.append(ApplyResult(spec.namespace, spec.name, "unchanged", spec.cluster_ip))
            continue
        action: Action = "created" if cur is None else "configured"
        results.append(ApplyResult(spec.namespace, spec.name, action, spec.cluster_ip))
        if cur is None:
            compares.append(Compare(key, "create", "==", 0))
        else:
            compares.append(Compare(key, "mod", "==", cur.mod_revision))
        ops.append(Put(key, codec.encode(spec)))
        ipkey = keys.cluster_ip(spec.cluster_ip)
        if res is not None:
            compares.append(Compare(ipkey, "value", "==", me))
        else:
            compares.append(Compare(ipkey, "create", "==", 0))
            ops.append(Put(ipkey, me))
    for rec, rcur in zip(records, record_current, strict=True):
        if rcur is not None and rcur.value == rec.value:
            results.append(ApplyResult(rec.namespace, rec.name, "unchanged", "", rec.kind))
            continue
        action = "created" if rcur is None else "configured"
        results.append(ApplyResult(rec.namespace, rec.name, action, "", rec.kind))
        if rcur is None:
            compares.append(Compare(rec.key, "create", "==", 0))
        else:
            compares.append(Compare(rec.key, "mod", "==", rcur.mod_revision))
        ops.append(Put(rec.key, rec.value))
    if not ops:
        return results
    if max(len(compares), len(ops)) > max_txn_ops:
        first = docs[0].source if docs else records[0].where.split(":", 1)[0]
        raise _too_big(max(len(compares), len(ops)), max_txn_ops, first or "apply")
    if await kv.txn(compares, ops):
        return results
    return None


async def _free_ips(
    kv: KVClient, cidr: str, exclude: list[str], count: int, rng: random.Random | None
) -> list[str]:
    """Addresses without a reservation (the transaction re-checks: this only picks).

    Random candidates checked with gets are cheap however many Services
    exist while the CIDR is not crowded; when they keep being taken, the
    whole reservation list is read instead.
    """
    known = list(exclude)
    for _ in range(PROBE_ROUNDS):
        candidates = clusterip.allocate(cidr, known, count, rng=rng)
        found = await _get_all(kv, [keys.cluster_ip(ip) for ip in candidates])
        taken = [ip for ip, kv_ in zip(candidates, found, strict=True) if kv_ is not None]
        if not taken:
            return candidates
        known += taken
    items, _ = await kv.list(keys.CLUSTERIPS)
    return clusterip.allocate(cidr, [keys.last(i.key) for i in items] + exclude, count, rng=rng)


async def delete(
    kv: KVClient,
    refs: Sequence[tuple[str, str]],
    *,
    max_txn_ops: int = MAX_TXN_OPS,
    records: Sequence[Record] = (),
) -> list[DeleteResult]:
    """Remove the Services (releasing their ClusterIPs) and the records, in one transaction.

    Results: the Services' in order, then the records'.
    """
    unique = list(dict.fromkeys(ServiceRef(*r) for r in refs))
    unique_records = list({r.key: r for r in records}.values())
    for _ in range(MAX_ATTEMPTS):
        record_current = await _get_all(kv, [r.key for r in unique_records])
        current = await _get_all(kv, [config_key(ns, n) for ns, n in unique])
        specs = [_decode(c) for c in current]
        ips = [s.cluster_ip if s else "" for s in specs]
        reservations = await _get_all(kv, [keys.cluster_ip(ip) if ip else "" for ip in ips])
        compares: list[Compare] = []
        ops: list[Put | Delete] = []
        results: list[DeleteResult] = []
        for ref, cur, ip, res in zip(unique, current, ips, reservations, strict=True):
            if cur is None:
                results.append(DeleteResult(ref.namespace, ref.name, "not found"))
                continue
            results.append(DeleteResult(ref.namespace, ref.name, "deleted", ip))
            compares.append(Compare(cur.key, "mod", "==", cur.mod_revision))
            ops.append(Delete(cur.key))
            me = owner(ref.namespace, ref.name)
            if ip and res is not None and res.value == me:
                compares.append(Compare(res.key, "value", "==", me))
                ops.append(Delete(res.key))
        for rec, rcur in zip(unique_records, record_current, strict=True):
            if rcur is None:
                results.append(DeleteResult(rec.namespace, rec.name, "not found", "", rec.kind))
                continue
            results.append(DeleteResult(rec.namespace, rec.name, "deleted", "", rec.kind))
            compares.append(Compare(rcur.key, "mod", "==", rcur.mod_revision))
            ops.append(Delete(rcur.key))
        if not ops:
            return results
        if max(len(compares), len(ops)) > max_txn_ops:
            raise _too_big(max(len(compares), len(ops)), max_txn_ops, "delete")
        if await kv.txn(compares, ops):
            return results
        await asyncio.sleep(random.uniform(0, 0.01))
    raise StoreConflict(
        f"gave up deleting {len(unique) + len(unique_records)} resource(s) after "
        f"{MAX_ATTEMPTS} conflicts with "
        "concurrent writers; nothing was deleted, try again"
    )


async def get_spec(kv: KVClient, namespace: str, name: str) -> ServiceSpec | None:
    return _decode(await kv.get(config_key(namespace, name)))


async def list_specs(kv: KVClient, namespace: str | None = None) -> list[ServiceSpec]:
    """Every declared Service (of ``namespace`` if given), sorted by namespace and name."""
    prefix = keys.configs(KIND) + (f"{namespace}/" if namespace else "")
    items, _ = await kv.list(prefix)
    out = []
    for item in items:
        try:
            out.append(codec.decode(ServiceSpec, item.value))
        except codec.InvalidValue as e:
            log.warning("skipping invalid stored Service %s: %s", item.key, e)
    return sorted(out, key=lambda s: (s.namespace, s.name))
