"""A remote cluster's own record, checked before it may join the mesh and at every tick (pure).

Called by :class:`glia.clustermesh.remote.RemoteCluster`. The record
(``glia/state/cluster/...``, written by the remote's operator) says which
cluster id, pod pools and service CIDR the cluster claims; it is checked
(:func:`glia.validate.cluster.check_cluster_info`, with the id the cluster's
file expects) before the mesh is asked to admit it
(:func:`glia.validate.cluster.mesh_conflicts`, in
:class:`glia.clustermesh.mesh.ClusterMesh`). Once admitted, the record is read
again every tick: a change that keeps it valid and its bounds the same is
taken as it is; any other change must be checked and admitted again.
"""

from __future__ import annotations

from glia.model.cluster import ClusterInfo
from glia.validate.bounds import ClusterBounds
from glia.validate.cluster import check_cluster_info
from glia.validate.errors import Rejected


def check_record(key: str, raw: bytes, name: str, expected_id: int | None) -> ClusterInfo | str:
    """The record ``raw`` at ``key`` checked as cluster ``name``'s: its info, or why not."""
    try:
        return check_cluster_info(key, raw, name, expected_id)
    except Rejected as e:
        return f"cluster record {key}: {e}"


def still_admitted(
    key: str, raw: bytes, name: str, expected_id: int | None, bounds: ClusterBounds | None
) -> ClusterInfo | None:
    """A changed record's info when it may be taken without a new admission (valid,
    same ``bounds`` as the admitted one); None when it must be admitted again."""
    try:
        info = check_cluster_info(key, raw, name, expected_id)
    except Rejected:
        return None
    if ClusterBounds.from_info(info) != bounds:
        return None
    return info
