"""Probe results (``health/v1/<cluster>/<node>``, that node's agent).

A node speaks only for the backends it hosts: results for addresses outside
its pod CIDR are dropped, so a node cannot mark another node's backends down.
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

from glia.kvstore import keys
from glia.model.service import BackendHealth
from glia.validate.bounds import ClusterBounds
from glia.validate.common import decode, key_parts
from glia.validate.errors import Rejected

MAX_RESULTS = 1 << 20


def check_health(
    key: str, raw: bytes, bounds: ClusterBounds, cidr: IPv4Network | None
) -> tuple[BackendHealth, int]:
    """The node's results about its own addresses, and how many others were dropped."""
    _, node = key_parts(key, keys.HEALTH, 2, bounds)
    value = decode(BackendHealth, raw)
    if value.node != node:
        raise Rejected(f"node {value.node!r} does not match its key ({node!r})")
    if len(value.results) > MAX_RESULTS:
        raise Rejected(f"{len(value.results)} results; at most {MAX_RESULTS}")
    if cidr is None:
        raise Rejected(f"node {node!r} has no pod CIDR allocated by the operator")
    kept = []
    for r in value.results:
        try:
            ok = IPv4Address(r.ip) in cidr and 1 <= r.port <= 65535
        except ValueError:
            ok = False
        if ok:
            kept.append(r)
    dropped = len(value.results) - len(kept)
    if dropped:
        value = dataclasses.replace(value, results=kept)
    return value, dropped
