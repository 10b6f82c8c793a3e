"""Pure data shared by every subsystem: no I/O, no kernel, no etcd.

Every value that crosses a process boundary (etcd, the agent API) is one of these
dataclasses, encoded with :mod:`glia.model.codec`, which validates on decode.
"""

from glia.model.cluster import MAX_CLUSTER_ID, ClusterRef
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.identity import (
    CLUSTER_LABEL,
    NAMESPACE_LABEL,
    Identity,
    ReservedIdentity,
    identity_cluster,
    make_cluster_identity,
)
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node, PodCIDRAllocation

__all__ = [
    "CLUSTER_LABEL",
    "MAX_CLUSTER_ID",
    "NAMESPACE_LABEL",
    "ClusterRef",
    "Endpoint",
    "EndpointState",
    "IPCacheEntry",
    "Identity",
    "Node",
    "PodCIDRAllocation",
    "ReservedIdentity",
    "identity_cluster",
    "make_cluster_identity",
]
