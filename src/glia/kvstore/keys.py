"""The kvstore key layout. STABLE: other clusters read these keys.

One writer per prefix (see DESIGN.md, "State and ownership"). Every key is
versioned (``v1``) so a layout change gets a new prefix, never an in-place
reinterpretation. Helpers build keys; :func:`parse` takes them apart again.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "glia/"
STATE = "glia/state/"
CONFIG = "glia/config/v1/"
HEARTBEAT = "glia/.heartbeat"

NODES = "glia/state/nodes/v1/"
IPCACHE = "glia/state/ip/v1/"
ENDPOINTS = "glia/state/endpoints/v1/"
IDENTITIES = "glia/state/identities/v1/"
SERVICES = "glia/state/services/v1/"
# Pod CIDR allocations are the operator's (not under a node's lease: a node
# that restarts must get its CIDR back, its endpoints still hold IPs from it).
PODCIDRS = "glia/state/podcidrs/v1/"
OPERATOR = "glia/state/operator/v1/"
# Probe results of the backends an agent hosts, on that agent's lease.
HEALTH = "glia/state/health/v1/"
# ClusterIP reservations, created in the same transaction as the Service config.
CLUSTERIPS = "glia/config/v1/clusterips/"


def _check(part: str, what: str) -> str:
    if not part or "/" in part:
        raise ValueError(f"{what} {part!r} must be non-empty and contain no '/'")
    return part


def node(cluster: str, name: str) -> str:
    return f"{NODES}{_check(cluster, 'cluster')}/{_check(name, 'node')}"


def nodes(cluster: str) -> str:
    return f"{NODES}{_check(cluster, 'cluster')}/"


def ipcache(cluster: str, ip: str) -> str:
    return f"{IPCACHE}{_check(cluster, 'cluster')}/{_check(ip, 'ip')}"


def ipcaches(cluster: str) -> str:
    return f"{IPCACHE}{_check(cluster, 'cluster')}/"


def endpoint(cluster: str, namespace: str, name: str) -> str:
    return (
        f"{ENDPOINTS}{_check(cluster, 'cluster')}/"
        f"{_check(namespace, 'namespace')}/{_check(name, 'name')}"
    )


def endpoints(cluster: str) -> str:
    return f"{ENDPOINTS}{_check(cluster, 'cluster')}/"


# Identities (allocator layout, per cluster etcd):
#   .../id/<numeric>              -> Identity (labels)          master key, no lease
#   .../labels/<labels_key>       -> numeric id                 reverse index, no lease
#   .../refs/<numeric>/<node>     -> ""                         on the user node's lease
def identity_id(cluster: str, numeric: int) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/id/{numeric}"


def identity_ids(cluster: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/id/"


def identity_labels(cluster: str, lkey: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/labels/{_check(lkey, 'labels key')}"


def identity_ref(cluster: str, numeric: int, node_name: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/refs/{numeric}/{_check(node_name, 'node')}"


def identity_refs(cluster: str, numeric: int | None = None) -> str:
    base = f"{IDENTITIES}{_check(cluster, 'cluster')}/refs/"
    return base if numeric is None else f"{base}{numeric}/"


def identities(cluster: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/"


def podcidr_node(cluster: str, node_name: str) -> str:
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/nodes/{_check(node_name, 'node')}"


def podcidr_nodes(cluster: str) -> str:
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/nodes/"


def podcidr_block(cluster: str, cidr: str) -> str:
    # '/' is not allowed in a key component: 10.1.2.0/24 -> 10.1.2.0_24
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/cidrs/{cidr.replace('/', '_')}"


def operator_leader(cluster: str) -> str:
    return f"{OPERATOR}{_check(cluster, 'cluster')}/leader"


def service(cluster: str, namespace: str, name: str) -> str:
    return (
        f"{SERVICES}{_check(cluster, 'cluster')}/"
        f"{_check(namespace, 'namespace')}/{_check(name, 'name')}"
    )


def services(cluster: str) -> str:
    return f"{SERVICES}{_check(cluster, 'cluster')}/"


def health(cluster: str, node_name: str) -> str:
    return f"{HEALTH}{_check(cluster, 'cluster')}/{_check(node_name, 'node')}"


def healths(cluster: str) -> str:
    return f"{HEALTH}{_check(cluster, 'cluster')}/"


def cluster_ip(ip: str) -> str:
    return f"{CLUSTERIPS}{_check(ip, 'ip')}"


def configs(kind: str) -> str:
    return f"{CONFIG}{_check(kind, 'kind')}/"


def config(kind: str, namespace: str, name: str) -> str:
    return f"{CONFIG}{_check(kind, 'kind')}/{_check(namespace, 'namespace')}/{_check(name, 'name')}"


def prefix_end(prefix: str) -> str:
    """Smallest key greater than every key starting with ``prefix`` (etcd range end).

    Works on the UTF-8 bytes, as etcd does; a result that is not valid UTF-8
    comes back with surrogate escapes, which the kvstore client encodes back
    to the exact bytes (``encode("utf-8", "surrogateescape")``).
    """
    b = bytearray(prefix.encode("utf-8", "surrogateescape"))
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1]).decode("utf-8", "surrogateescape")
    return "\0"


def last(key: str) -> str:
    """Last component of a key."""
    return key.rsplit("/", 1)[-1]


# Longest first, so a prefix that extends another would win (none does today).
_KNOWN = tuple(
    sorted((NODES, IPCACHE, ENDPOINTS, IDENTITIES, SERVICES, PODCIDRS, OPERATOR, CONFIG), key=len)
)[::-1]


@dataclass(frozen=True, slots=True)
class KeyParts:
    prefix: str  # one of the prefix constants above, e.g. NODES
    parts: tuple[str, ...]  # the components after it; parts[0] is the cluster under STATE


def parse(key: str) -> KeyParts:
    """Split a key into its prefix and components; ValueError if it is not a glia key."""
    for prefix in _KNOWN:
        if key.startswith(prefix):
            parts = tuple(key[len(prefix) :].split("/"))
            if not all(parts):
                raise ValueError(f"key {key!r} has an empty component")
            return KeyParts(prefix, parts)
    raise ValueError(f"key {key!r} is not under a known glia prefix")
