"""The kvstore key layout. STABLE: other clusters read these keys.

One writer per prefix (see DESIGN.md, "State and ownership", and
docs/kvstore.md). Every key is versioned so a layout change gets a new
prefix, never an in-place reinterpretation. Helpers build keys; :func:`parse`
takes them apart again.

Layout v2 (this version) puts the writing node right after the cluster in
every key an agent writes, so etcd's prefix-based RBAC can give each agent its
own user that may write only its own node's records
(:mod:`glia.kvstore.rbac`)::

    glia/state/nodes/v2/<cluster>/<node>                      Node, that agent
    glia/state/ip/v2/<cluster>/<node>/<ip>                    IPCacheEntry, that agent
    glia/state/endpoints/v2/<cluster>/<node>/<ns>/<name>      Endpoint, that agent
    glia/state/health/v1/<cluster>/<node>                     BackendHealth, that agent
    glia/state/identities/v2/<cluster>/id/<n>                 Identity, any agent (allocator)
    glia/state/identities/v2/<cluster>/labels/<digest>        id, any agent (allocator)
    glia/state/identities/v2/<cluster>/refs/<node>/<n>        "", that agent
    glia/state/podcidrs/v1/<cluster>/nodes/<node>             PodCIDRAllocation, operator
    glia/state/podcidrs/v1/<cluster>/cidrs/<cidr>             node name, operator
    glia/state/services/v1/<cluster>/<ns>/<name>              ClusterService, operator
    glia/state/operator/v1/<cluster>/leader                   operator replica, operator
    glia/state/cluster/v1/<cluster>                           ClusterInfo, operator
    glia/.heartbeat                                           operator
    glia/config/v1/<kind>/<ns>/<name>                         declared resources, CLI path
    glia/config/v1/clusterips/<ip>                            ClusterIP reservation, CLI path

v1 put the IP (or namespace) first, so one etcd user had to be allowed to
write every node's records. Readers of v2 still check that what a node wrote
is its own (an IP inside the pod CIDR the operator gave that node): RBAC keeps
a node to its own keys, validation keeps it to its own addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "glia/"
STATE = "glia/state/"
CONFIG = "glia/config/v1/"
HEARTBEAT = "glia/.heartbeat"

NODES = "glia/state/nodes/v2/"
IPCACHE = "glia/state/ip/v2/"
ENDPOINTS = "glia/state/endpoints/v2/"
IDENTITIES = "glia/state/identities/v2/"
SERVICES = "glia/state/services/v1/"
# Pod CIDR allocations are the operator's (not under a node's lease: a node
# that restarts must get its CIDR back, its endpoints still hold IPs from it).
PODCIDRS = "glia/state/podcidrs/v1/"
OPERATOR = "glia/state/operator/v1/"
# Probe results of the backends an agent hosts, on that agent's lease.
HEALTH = "glia/state/health/v1/"
# The cluster record (name, id, pod pools, service CIDR) other clusters of the
# mesh check before importing anything; the operator's, not on a lease.
CLUSTERS = "glia/state/cluster/v1/"
# ClusterIP reservations, created in the same transaction as the Service config.
CLUSTERIPS = "glia/config/v1/clusterips/"
# Declared CiliumNetworkPolicies (glia.policy.store); the one part of the
# config other clusters of the mesh may read (glia policy trace judges their
# endpoints by their own cluster's policies).
POLICIES_KIND = "policies"
POLICIES = f"{CONFIG}{POLICIES_KIND}/"


def _check(part: str, what: str) -> str:
    if not part or "/" in part:
        raise ValueError(f"{what} {part!r} must be non-empty and contain no '/'")
    return part


def node(cluster: str, name: str) -> str:
    return f"{NODES}{_check(cluster, 'cluster')}/{_check(name, 'node')}"


def nodes(cluster: str) -> str:
    return f"{NODES}{_check(cluster, 'cluster')}/"


def ipcache(cluster: str, node_name: str, ip: str) -> str:
    return f"{ipcaches(cluster, node_name)}{_check(ip, 'ip')}"


def ipcaches(cluster: str, node_name: str | None = None) -> str:
    """Every ipcache entry of ``cluster``, or only those ``node_name`` wrote."""
    base = f"{IPCACHE}{_check(cluster, 'cluster')}/"
    return base if node_name is None else f"{base}{_check(node_name, 'node')}/"


def endpoint(cluster: str, node_name: str, namespace: str, name: str) -> str:
    return f"{endpoints(cluster, node_name)}{_check(namespace, 'namespace')}/{_check(name, 'name')}"


def endpoints(cluster: str, node_name: str | None = None) -> str:
    """Every endpoint record of ``cluster``, or only those of ``node_name``."""
    base = f"{ENDPOINTS}{_check(cluster, 'cluster')}/"
    return base if node_name is None else f"{base}{_check(node_name, 'node')}/"


# Identities (allocator layout, per cluster etcd):
#   .../id/<numeric>              -> Identity (labels)          master key, no lease
#   .../labels/<labels_key>       -> numeric id                 reverse index, no lease
#   .../refs/<node>/<numeric>     -> ""                         on the user node's lease
def identity_id(cluster: str, numeric: int) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/id/{numeric}"


def identity_ids(cluster: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/id/"


def identity_labels(cluster: str, lkey: str) -> str:
    return f"{identity_labels_prefix(cluster)}{_check(lkey, 'labels key')}"


def identity_labels_prefix(cluster: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/labels/"


def identity_ref(cluster: str, numeric: int, node_name: str) -> str:
    return f"{identity_refs(cluster, node_name)}{numeric}"


def identity_refs(cluster: str, node_name: str | None = None) -> str:
    """Every reference of ``cluster``, or only those ``node_name`` holds."""
    base = f"{IDENTITIES}{_check(cluster, 'cluster')}/refs/"
    return base if node_name is None else f"{base}{_check(node_name, 'node')}/"


def parse_identity_ref(cluster: str, key: str) -> tuple[str, int] | None:
    """``(node, numeric)`` of a reference key of ``cluster``; None if it is not one."""
    rest = key.removeprefix(identity_refs(cluster))
    node_name, sep, numeric = rest.partition("/")
    if rest == key or not sep or not node_name or not numeric.isdigit() or len(numeric) > 10:
        return None
    return node_name, int(numeric)


def identities(cluster: str) -> str:
    return f"{IDENTITIES}{_check(cluster, 'cluster')}/"


def podcidr_node(cluster: str, node_name: str) -> str:
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/nodes/{_check(node_name, 'node')}"


def podcidrs(cluster: str) -> str:
    """Every pod CIDR record of ``cluster`` (allocations and blocks)."""
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/"


def podcidr_nodes(cluster: str) -> str:
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/nodes/"


def podcidr_block(cluster: str, cidr: str) -> str:
    # '/' is not allowed in a key component: 10.1.2.0/24 -> 10.1.2.0_24
    return f"{PODCIDRS}{_check(cluster, 'cluster')}/cidrs/{cidr.replace('/', '_')}"


def operator_leader(cluster: str) -> str:
    return f"{OPERATOR}{_check(cluster, 'cluster')}/leader"


def cluster_info(cluster: str) -> str:
    return f"{CLUSTERS}{_check(cluster, 'cluster')}"


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
    sorted(
        (
            NODES,
            IPCACHE,
            ENDPOINTS,
            IDENTITIES,
            SERVICES,
            PODCIDRS,
            OPERATOR,
            HEALTH,
            CLUSTERS,
            CONFIG,
        ),
        key=len,
    )
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
