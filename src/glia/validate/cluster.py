"""Cluster records (``cluster/v1/<cluster>``, the operator's) and whether clusters fit in one mesh.

A remote cluster is the least trusted writer there is, and its cluster
record decides what it may claim: its pod pools bound the addresses it may
announce, its id the identities. So before anything of a remote cluster is
imported, the agent checks:

- :func:`check_cluster_info`: the record alone — shape, key, name and id
  valid (and the id the one configured for that cluster, if any), pod pools
  and the service CIDR canonical IPv4 networks of unicast space, pools
  disjoint from each other and from the service CIDR. The operator runs the
  same check on its own record before publishing it.
- :func:`mesh_conflicts`: the records side by side — every remote cluster
  whose name or id is ours or another remote's, whose pod pools overlap ours
  or another remote's, or whose service CIDR overlaps a pod pool (or whose
  pod pool overlaps a service CIDR) is refused, with the reason; so is one
  whose pod pools overlap a network this cluster reserves (its nodes' and
  etcd's network: a pod pool there would let that cluster announce our node
  or etcd addresses as its pods'). Between two remotes, one already in the
  mesh keeps its place against a newcomer; otherwise both are refused.

Service CIDRs of different clusters may overlap each other (Kubernetes
clusters often share 10.96.0.0/12): a ClusterIP is only ever programmed in its
own cluster; a global Service imports remote *backends*, never remote
frontends.

Pure; tested in tests/unit/test_validate_cluster.py.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Set
from ipaddress import IPv4Network

from glia.kvstore import keys
from glia.model.cluster import MAX_CLUSTER_ID, ClusterInfo, validate_name
from glia.validate.common import decode
from glia.validate.errors import Rejected

MAX_POOLS = 16
MIN_PREFIXLEN = 8  # a pool of more than a /8 claims a good part of the Internet
# Address blocks no host owns (as glia.validate.addresses.unicast): a pool or
# service CIDR touching one would let a cluster claim loopback, multicast, ...
_SPECIAL = tuple(
    (IPv4Network(net), what)
    for net, what in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)


_Nets = tuple[list[IPv4Network], IPv4Network | None]  # pod pools, service CIDR


def _cidr(text: object, what: str) -> IPv4Network:
    """A canonical IPv4 network of unicast space, no wider than a /8."""
    if not isinstance(text, str):
        raise Rejected(f"{what} must be a CIDR string, got {type(text).__name__}")
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as e:
        raise Rejected(f"{what} {text!r} is not an IPv4 CIDR ({e})") from None
    if str(net) != text:
        raise Rejected(f"{what} {text!r} is not in canonical form ({net})")
    if net.prefixlen < MIN_PREFIXLEN:
        raise Rejected(f"{what} {net} is wider than a /{MIN_PREFIXLEN}")
    for special, name in _SPECIAL:
        if net.overlaps(special):
            raise Rejected(f"{what} {net} overlaps {name}")
    return net


def _networks(info: ClusterInfo) -> _Nets:
    """The record's pod pools and service CIDR as networks; :class:`Rejected` if not valid."""
    if not isinstance(info.pod_pools, list) or not 1 <= len(info.pod_pools) <= MAX_POOLS:
        raise Rejected(f"pod_pools must list 1..{MAX_POOLS} CIDRs")
    pools = [_cidr(p, f"pod_pools[{i}]") for i, p in enumerate(info.pod_pools)]
    for i, a in enumerate(pools):
        for j in range(i):
            if a.overlaps(pools[j]):
                raise Rejected(f"pod_pools[{i}] {a} overlaps pod_pools[{j}] {pools[j]}")
    service = None if info.service_cidr is None else _cidr(info.service_cidr, "service_cidr")
    if service is not None:
        for i, p in enumerate(pools):
            if p.overlaps(service):
                raise Rejected(f"service_cidr {service} overlaps pod_pools[{i}] {p}")
    return pools, service


def _check_record(info: ClusterInfo) -> _Nets:
    """Name, id and networks of a record on its own; its networks, or :class:`Rejected`."""
    if not isinstance(info.name, str):
        raise Rejected(f"name must be a string, got {type(info.name).__name__}")
    try:
        validate_name("cluster", info.name)
    except ValueError as e:
        raise Rejected(str(e)) from None
    if not isinstance(info.id, int) or isinstance(info.id, bool):
        raise Rejected(f"id must be an integer, got {type(info.id).__name__}")
    if not 1 <= info.id <= MAX_CLUSTER_ID:
        raise Rejected(f"id {info.id} is not in 1..{MAX_CLUSTER_ID}")
    return _networks(info)


def check_cluster_info(
    key: str, raw: bytes, expected_name: str, expected_id: int | None = None
) -> ClusterInfo:
    """The record of cluster ``expected_name`` stored at ``key``; :class:`Rejected` if unfit.

    ``expected_id``: the id the configuration says this cluster has (None:
    any valid id).
    """
    try:
        parts = keys.parse(key)
    except ValueError as e:
        raise Rejected(str(e)) from None
    if parts.prefix != keys.CLUSTERS or len(parts.parts) != 1:
        raise Rejected(f"key does not have the layout {keys.CLUSTERS}<cluster>")
    (cluster,) = parts.parts
    if cluster != expected_name:
        raise Rejected(f"key is of cluster {cluster!r}, expected {expected_name!r}")
    info = decode(ClusterInfo, raw)
    # The decoder would take true or "2" for 2: an id is a JSON integer, nothing else.
    data = json.loads(raw)
    raw_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(raw_id, int) or isinstance(raw_id, bool):
        raise Rejected(f"id must be an integer, got {json.dumps(raw_id)}")
    if info.name != cluster:
        raise Rejected(f"name {info.name!r} does not match its key ({cluster!r})")
    _check_record(info)
    if expected_id is not None and info.id != expected_id:
        raise Rejected(f"id {info.id} is not the configured cluster_id {expected_id}")
    return info


def _pair_conflict(
    a: ClusterInfo,
    a_nets: _Nets,
    b: ClusterInfo,
    b_nets: _Nets,
    b_what: str,
) -> str | None:
    """Why ``a`` cannot sit beside ``b`` (named ``b_what`` in the reason), or None."""
    if a.id == b.id:
        return f"cluster id {a.id} is also {b_what}'s"
    if a.name == b.name:
        return f"cluster name {a.name!r} is also {b_what}'s"
    (a_pools, a_svc), (b_pools, b_svc) = a_nets, b_nets
    for p in a_pools:
        for q in b_pools:
            if p.overlaps(q):
                return f"pod pool {p} overlaps {b_what}'s pod pool {q}"
        if b_svc is not None and p.overlaps(b_svc):
            return f"pod pool {p} overlaps {b_what}'s service CIDR {b_svc}"
    if a_svc is not None:
        for q in b_pools:
            if a_svc.overlaps(q):
                return f"service CIDR {a_svc} overlaps {b_what}'s pod pool {q}"
    return None


def _reserved_conflict(nets: _Nets, reserved: Mapping[str, IPv4Network]) -> str | None:
    for p in nets[0]:
        for what in sorted(reserved):
            if p.overlaps(reserved[what]):
                return f"pod pool {p} overlaps this cluster's {what} {reserved[what]}"
    return None


def mesh_conflicts(
    local: ClusterInfo,
    remotes: Mapping[str, ClusterInfo],
    incumbents: Set[str] = frozenset(),
    reserved: Mapping[str, IPv4Network] | None = None,
) -> dict[str, str]:
    """Every remote cluster that cannot join the mesh beside ``local`` and the others, and why.

    ``remotes``: the checked records (:func:`check_cluster_info`) by the name
    each cluster is configured under. A remote is refused when it clashes
    with ``local`` (same name or id, overlapping pod pools, a pod pool
    overlapping a service CIDR either way). Among the remotes left, a clash
    between two of them is settled by ``incumbents`` (the remotes that were
    in the mesh before this change): an incumbent keeps its place and the
    newcomer is refused, so a cluster cannot push an established one out of
    the mesh by copying its id or pools; two incumbents or two newcomers
    that clash are both refused (nothing says which one is right), until
    one is fixed or removed. A remote refused for clashing with ``local``
    pushes no other remote out. The result does not depend on the order of
    ``remotes``, and a record that is not valid is refused, never raised;
    ``local`` must be valid (:class:`Rejected` otherwise: a configuration error).
    ``reserved``: networks of ours, by what they are ("node network"), that no
    remote pod pool may overlap.
    """
    local_nets = _check_record(local)
    refused: dict[str, list[str]] = {}
    nets: dict[str, _Nets] = {}
    for name in sorted(remotes):
        info = remotes[name]
        if info.name != name:
            refused[name] = [f"its record names cluster {info.name!r}"]
            continue
        try:
            nets[name] = _check_record(info)
        except Rejected as e:
            refused[name] = [f"invalid cluster record: {e}"]
            continue
        clash = _pair_conflict(info, nets[name], local, local_nets, "this cluster")
        clash = clash or _reserved_conflict(nets[name], reserved or {})
        if clash is not None:
            refused[name] = [clash]
    left = [n for n in sorted(remotes) if n not in refused]
    # Incumbents first: a newcomer clashing with an incumbent is refused, and
    # then no longer counts against anyone.
    olds = [n for n in left if n in incumbents]
    news = [n for n in left if n not in incumbents]
    lost: set[str] = set()
    for new in news:
        for old in olds:
            clash = _pair_conflict(remotes[new], nets[new], remotes[old], nets[old], old)
            if clash is not None:
                refused.setdefault(new, []).append(f"{clash}, which was in the mesh first")
                lost.add(new)
    for group in (olds, [n for n in news if n not in lost]):
        for i, a in enumerate(group):
            for b in group[i + 1 :]:
                clash = _pair_conflict(remotes[a], nets[a], remotes[b], nets[b], b)
                if clash is None:
                    continue
                back = _pair_conflict(remotes[b], nets[b], remotes[a], nets[a], a) or clash
                both = " (both refused until one of them is fixed or removed)"
                refused.setdefault(a, []).append(clash + both)
                refused.setdefault(b, []).append(back + both)
    return {name: "; ".join(reasons) for name, reasons in sorted(refused.items())}
