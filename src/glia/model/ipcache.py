"""ipcache entries: where an IP lives and which identity it carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IPCacheEntry:
    """Value of ``glia/state/ip/v1/<cluster>/<ip>`` (written by the endpoint's agent)."""

    ip: str
    identity: int
    tunnel_endpoint: str  # node IP of the node hosting the IP
    cluster_id: int
    node: str = ""
