"""Cluster naming rules shared by the lab, the agent and ClusterMesh."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CLUSTER_ID = 255
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


def validate_name(kind: str, name: str) -> str:
    """Cluster and node names end up in etcd keys, file names and bpffs paths."""
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be 1-32 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """A cluster as the rest of the mesh knows it: its name and numeric id (1..255)."""

    name: str
    id: int

    def __post_init__(self) -> None:
        validate_name("cluster", self.name)
        if not 1 <= self.id <= MAX_CLUSTER_ID:
            raise ValueError(f"cluster id {self.id} must be in 1..{MAX_CLUSTER_ID}")
