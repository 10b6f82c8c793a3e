"""A global Service's backends merged across the clusters of a mesh (pure).

Called by the agent (:mod:`glia.agent.services`) for one namespace/name
whenever our ClusterService record, a remote cluster's record of the same
namespace/name, or a remote cluster's freshness changes; the result goes to
the load-balancer planner (:mod:`glia.service.lbplan`) like any
ClusterService. No I/O; tests/unit/test_service_merge.py.

Input: this cluster's name, our record (or None), and the records of the same
namespace/name from remote clusters as :class:`RemoteRecord` (the record and
whether that cluster's state is stale: its etcd unreachable or its heartbeat
old), keyed by cluster name. Every record has been validated
(:func:`glia.validate.services.check_cluster_service`): its backends are that
cluster's and serve ports of its record.

Rules (docs/services.md, "Global services"):

1. No local record: None. A Service must exist in this cluster to be
   reachable here, as in Cilium: the frontend (ClusterIP, ports) is ours, and
   remote records alone program nothing.
2. Our record not global (``service.cilium.io/global`` or
   ``io.cilium/global-service``): our record exactly as it is; remote records
   are ignored, whatever they say.
3. Global: the frontend and every setting (ports, ClusterIP, algorithm,
   session affinity, health check, ``affinity``, ``affinity_min_ready``) come
   from our record. When clusters disagree, ours win: a remote record only
   ever contributes backends.
4. A remote record contributes only if it is itself global and shared; with
   ``shared: "false"`` a cluster uses the others' backends without exporting
   its own. Our own ``shared`` only matters to the other clusters.
5. Ports: a remote record contributes to our frontend port (port, protocol)
   only if it has the same (port, protocol) among its ports; its backends of
   other ports are left out. The merged backends carry our port's name.
6. New connections, decided per frontend port among its healthy backends
   (``ready`` in the records):

   a. Staleness first: while any healthy backend of a fresh cluster (ours is
      always fresh) exists, only fresh ones are candidates; the healthy
      backends of stale clusters are candidates only when there is none, so
      no share of the traffic goes into a cluster that may be gone, and a
      stale cluster still serves when it is all there is.
   b. Affinity ``local`` (``remote``): the candidates on the preferred side
      (this cluster's, or the remote clusters') take new connections alone
      while there are at least max(1, ``affinity_min_ready``) of them; with
      fewer, every candidate does (the other side shares the load of a few
      freshly ready preferred backends, or takes all of it when none is
      ready). ``none`` or unset: every candidate.

   An unhealthy backend never gets new connections, and a port with any
   healthy backend always has one that does.
7. Output backends: ``ready`` means "gets new connections" (what the planner
   gives slots; the others keep their existing connections through
   conntrack); ``preferred`` marks the affinity's side, ``stale`` a stale
   cluster's backends, ``standby`` a healthy backend held back by rule 6.
   These three fields of the input records are ignored.
8. A backend is identified by (frontend port, protocol, cluster, IP, port):
   the same one listed twice counts once (healthy wins), the same address in
   two clusters is two backends. Output order: by frontend port and protocol,
   ours before remote clusters', then cluster name, IP, port, endpoint;
   independent of the order of the remote mapping.

A call that breaks the input contract (our record of another cluster, a
remote record under another cluster's name or ours, a record of another
Service) raises ValueError: the caller's tables are keyed so it cannot happen.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from glia.model.service import Backend, ClusterService, Protocol, ServicePort

AFFINITY_LOCAL = "local"
AFFINITY_REMOTE = "remote"


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """A remote cluster's ClusterService and whether that cluster's state is stale."""

    service: ClusterService
    stale: bool = False


@dataclass(slots=True)
class _Candidate:
    backend: Backend
    local: bool
    stale: bool
    healthy: bool
    active: bool = False  # gets new connections (decided last)


_PortKey = tuple[int, Protocol]  # a frontend port: (port, protocol)
_BackendId = tuple[int, Protocol, str, str, int]  # frontend port, protocol, cluster, ip, port


def merge_service(
    cluster: str, local: ClusterService | None, remotes: Mapping[str, RemoteRecord]
) -> ClusterService | None:
    """The ClusterService this cluster's agent programs for one namespace/name (rules above)."""
    _check_contract(cluster, local, remotes)
    if local is None:
        return None
    if not local.global_:
        return local
    ports = {(p.port, p.protocol): p for p in local.ports}
    found: dict[_BackendId, _Candidate] = {}
    _collect(found, cluster, local.backends, ports, local=True, stale=False)
    for name, record in remotes.items():
        svc = record.service
        if not (svc.global_ and svc.shared):
            continue
        theirs = {(p.port, p.protocol) for p in svc.ports}
        shared_ports = {k: p for k, p in ports.items() if k in theirs}
        _collect(found, name, svc.backends, shared_ports, local=False, stale=record.stale)
    by_port: dict[_PortKey, list[_Candidate]] = {}
    for ident, cand in found.items():
        by_port.setdefault((ident[0], ident[1]), []).append(cand)
    affinity = local.affinity if local.affinity in (AFFINITY_LOCAL, AFFINITY_REMOTE) else ""
    enough = max(1, local.affinity_min_ready)
    out: list[Backend] = []
    for key in by_port:
        out += _decide(by_port[key], ports[key], affinity, enough)
    out.sort(key=lambda b: _order(b, cluster))
    return dataclasses.replace(local, backends=out)


def _check_contract(
    cluster: str, local: ClusterService | None, remotes: Mapping[str, RemoteRecord]
) -> None:
    if local is not None and local.cluster != cluster:
        raise ValueError(f"our record is of cluster {local.cluster!r}, we are {cluster!r}")
    names = {(r.service.namespace, r.service.name) for r in remotes.values()}
    if local is not None:
        names.add((local.namespace, local.name))
    if len(names) > 1:
        shown = ", ".join(f"{ns}/{n}" for ns, n in sorted(names))
        raise ValueError(f"records of different Services merged: {shown}")
    for name, record in remotes.items():
        if name == cluster:
            raise ValueError(f"remote record under our own cluster name {cluster!r}")
        if record.service.cluster != name:
            raise ValueError(
                f"remote record of cluster {record.service.cluster!r} under the name {name!r}"
            )


def _collect(
    found: dict[_BackendId, _Candidate],
    cluster: str,
    backends: Iterable[Backend],
    ports: Mapping[_PortKey, ServicePort],
    *,
    local: bool,
    stale: bool,
) -> None:
    """Add one record's backends of ``ports`` (validation made them all that record's)."""
    for b in backends:
        if b.cluster != cluster or (b.frontend_port, b.protocol) not in ports:
            continue  # not this record's to offer (validation drops these already)
        ident = (b.frontend_port, b.protocol, cluster, b.ip, b.port)
        held = found.get(ident)
        if held is None:
            found[ident] = _Candidate(b, local, stale, b.ready)
        elif b.ready and not held.healthy:
            held.backend, held.healthy = b, True


def _decide(
    cands: list[_Candidate], port: ServicePort, affinity: str, enough: int
) -> list[Backend]:
    """The backends of one frontend port, each told whether it gets new connections."""
    healthy = [c for c in cands if c.healthy]
    pool = [c for c in healthy if not c.stale] or healthy
    side = affinity == AFFINITY_LOCAL  # whether the preferred side is ours
    if affinity:
        preferred = [c for c in pool if c.local == side]
        if len(preferred) >= enough:
            pool = preferred
    for c in pool:
        c.active = True
    name = port.name
    out = []
    for c in cands:
        b = c.backend
        ready = c.active
        on_side = bool(affinity) and c.local == side
        standby = c.healthy and not ready
        if (
            b.ready == ready
            and b.preferred == on_side
            and b.stale == c.stale
            and b.standby == standby
            and b.port_name == name
        ):
            out.append(b)  # the common case, and Services can be large: no copy
            continue
        out.append(
            Backend(
                ip=b.ip,
                port=b.port,
                protocol=b.protocol,
                port_name=name,
                frontend_port=b.frontend_port,
                node=b.node,
                cluster=b.cluster,
                endpoint=b.endpoint,
                ready=ready,
                preferred=on_side,
                stale=c.stale,
                standby=standby,
            )
        )
    return out


def _order(b: Backend, ours: str) -> tuple[int, str, bool, str, bytes, str, int, str]:
    remote = b.cluster != ours
    return (b.frontend_port, b.protocol, remote, b.cluster, _ip_key(b.ip), b.ip, b.port, b.endpoint)


def _ip_key(ip: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, ip)  # strict dotted quad, in C
    except (OSError, TypeError):
        return b"\xff" * 5  # not an address (validation refuses these): after every one
