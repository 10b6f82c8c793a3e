"""Where a remote cluster's imported state goes: the agent's tables.

Built by the agent (:mod:`glia.agent.daemon`) and handed to
:class:`glia.clustermesh.mesh.ClusterMesh`; each remote cluster's import
(:mod:`glia.clustermesh.remote_import`) and Services
(:mod:`glia.clustermesh.remote_services`) write into it. Its own module so
that those need not import the remote cluster that owns them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glia.agent.identities import IdentityCache
    from glia.agent.ipcache import IPCacheSync
    from glia.agent.services import AgentServices


@dataclass(frozen=True, slots=True)
class MeshSinks:
    """Where an imported cluster's state goes: the agent's tables."""

    ipcache: IPCacheSync
    identities: IdentityCache
    services: AgentServices
