"""Name resolution for pods (pure): a name and a query type to an answer.

Called by :mod:`glia.dns.server` for every query, with lookups into the
agent's in-memory state (:class:`Sources`), never the kvstore. The names
(docs/dns.md):

- ``<service>.<namespace>.svc.cluster.local``: the Service's ClusterIP;
- ``<service>.<namespace>.svc.clusterset.local``: the same, for global
  Services only (the MCS API's name);
- ``<container>.cluster.local`` (as podman's own ``<container>.dns.podman``),
  ``<container>`` and ``<container>.<namespace>.pod.cluster.local``: the pod
  IPs of the cluster's endpoints of that name (a container's name in any
  namespace; the last form tells namespaces apart).

Short forms (``web``, ``web.shop``, ``web.shop.svc``) reach the first form
through the ``search`` domains of the pods' ``resolv.conf``. A name we know
answers every type: A with its addresses, anything else with no data
(NOERROR), so a resolver asking AAAA does not conclude the name is gone. A
name under our zones we do not know is NXDOMAIN; any other name is
:attr:`Verdict.ELSEWHERE` (forwarded, or NXDOMAIN when no upstream is set).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

CLUSTER_ZONE = "cluster.local"
CLUSTERSET_ZONE = "clusterset.local"
TTL = 5  # seconds: Services and pods change; resolvers must ask again soon


class Verdict(enum.Enum):
    ANSWER = "answer"  # a name we know: its addresses (A) or no data (other types)
    NXDOMAIN = "nxdomain"  # under our zones, unknown
    ELSEWHERE = "elsewhere"  # not ours: forward or NXDOMAIN


@dataclass(frozen=True, slots=True)
class ServiceName:
    cluster_ip: str
    global_: bool


@dataclass(frozen=True, slots=True)
class Sources:
    """Lookups into the agent's state; each must be cheap (a dict lookup)."""

    service: Callable[[str, str], ServiceName | None]  # (namespace, name)
    pods: Callable[[str], Sequence[tuple[str, str]]]  # container name -> [(namespace, ip)]
    # Changes whenever what the two answer may change; the server keeps built answers
    # while it stays the same (glia.dns.cache). None: nothing is kept.
    version: Callable[[], Hashable] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    addresses: tuple[str, ...] = ()  # IPv4, only for A queries


def _labels(name: str) -> list[str]:
    return [p for p in name.lower().rstrip(".").split(".") if p]


def resolve(name: str, qtype: str, src: Sources) -> Answer:
    """The answer to ``name`` (any case, trailing dot or not) of type ``qtype`` ("A", ...)."""
    labels = _labels(name)
    addresses = _addresses(labels, src)
    if addresses is None:
        # A bare label is a container name or nothing: forwarding it is pointless.
        ours = len(labels) <= 1 or ".".join(labels[-2:]) in (CLUSTER_ZONE, CLUSTERSET_ZONE)
        return Answer(Verdict.NXDOMAIN if ours else Verdict.ELSEWHERE)
    return Answer(Verdict.ANSWER, tuple(addresses) if qtype == "A" else ())


def _addresses(labels: list[str], src: Sources) -> list[str] | None:
    """The addresses of a known name, or None for an unknown one."""
    if len(labels) == 1 or (len(labels) == 3 and ".".join(labels[1:]) == CLUSTER_ZONE):
        found = src.pods(labels[0])
        return sorted({ip for _, ip in found}) or None
    zone = ".".join(labels[-2:])
    if len(labels) == 5 and labels[2] == "svc" and zone in (CLUSTER_ZONE, CLUSTERSET_ZONE):
        svc = src.service(labels[1], labels[0])
        if svc is None or (zone == CLUSTERSET_ZONE and not svc.global_):
            return None
        return [svc.cluster_ip]
    if len(labels) == 5 and labels[2] == "pod" and zone == CLUSTER_ZONE:
        ips = sorted({ip for ns, ip in src.pods(labels[0]) if ns == labels[1]})
        return ips or None
    return None
