"""An endpoint: one container interface that glia gave an IP."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class EndpointState(enum.StrEnum):
    WAITING_FOR_IDENTITY = "waiting-for-identity"  # labels not yet known: identity init
    READY = "ready"
    DISCONNECTING = "disconnecting"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Value of ``glia/state/endpoints/v1/<cluster>/<namespace>/<name>``.

    Also the agent's local record of the endpoint (with the datapath fields), so a
    restarted agent can adopt it.
    """

    container_id: str
    namespace: str
    name: str
    cluster: str
    node: str
    ip: str
    identity: int
    labels: dict[str, str] = field(default_factory=dict)
    state: EndpointState = EndpointState.WAITING_FOR_IDENTITY
    ready: bool = True  # readiness (health probes, issue 3); True until probed otherwise
    ifname: str = "eth0"  # name inside the container
    host_ifname: str = ""  # host side of the veth, in the node's namespace
    netns: str = ""  # the container's network namespace path at ADD
    mac: str = ""  # container interface MAC
    host_mac: str = ""  # host-side veth MAC (the pod's gateway MAC)
