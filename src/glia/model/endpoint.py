"""An endpoint: one container interface that glia gave an IP."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# DNS names of an endpoint besides its name (podman's --network-alias, and the
# container's short id podman adds; a Docker container's name and aliases, read
# after Join): single DNS labels, few. Checked at ADD (glia.endpoint.request),
# when added later (merge_aliases) and on every record read (glia.validate.endpoints).
MAX_ALIASES = 32
MAX_ALIAS = 63
_ALIAS = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def alias_problem(alias: str) -> str | None:
    """Why ``alias`` is not a usable DNS alias (lower case), or None if it is."""
    if len(alias) > MAX_ALIAS or not _ALIAS.fullmatch(alias):
        return (
            f"{alias[:80]!r} is not a DNS label (at most {MAX_ALIAS} lowercase letters, "
            "digits or '-', starting and ending with a letter or digit)"
        )
    return None


def merge_aliases(
    have: tuple[str, ...], more: Iterable[str], name: str = ""
) -> tuple[tuple[str, ...], list[str]]:
    """``have`` and then the names of ``more`` that are usable and new.

    Each is folded to lower case and checked as an ADD's ``--network-alias`` is;
    one that is not a DNS label, or beyond :data:`MAX_ALIASES`, is left out
    rather than failing the endpoint. Returns the aliases and why each left-out
    name was (for a log). ``name`` (the endpoint's own) is never an alias.
    """
    out = list(have)
    skipped: list[str] = []
    for raw in more:
        alias = raw.lower()
        if alias in out or alias == name.lower():
            continue
        problem = alias_problem(alias)
        if problem is None and len(out) >= MAX_ALIASES:
            problem = f"{alias!r} is one too many (at most {MAX_ALIASES} aliases)"
        if problem is not None:
            skipped.append(problem)
            continue
        out.append(alias)
    return tuple(out), skipped


HOST_PORT_PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, slots=True)
class HostPort:
    """One ``podman run -p`` mapping the agent serves on the lb maps (docs/hostport.md)."""

    host_port: int  # 1..65535, on the node's address(es)
    container_port: int  # 1..65535, on the endpoint's IP
    protocol: str = "tcp"  # "tcp" | "udp"
    host_ip: str = ""  # "" = the node IP and 127.0.0.1; else only this IPv4 address

    def overlaps(self, other: HostPort) -> bool:
        """Whether both would claim one frontend (an empty host IP claims every address)."""
        return (
            self.protocol == other.protocol
            and self.host_port == other.host_port
            and (not self.host_ip or not other.host_ip or self.host_ip == other.host_ip)
        )

    def __str__(self) -> str:
        where = f"{self.host_ip}:" if self.host_ip else ""
        return f"{where}{self.host_port}:{self.container_port}/{self.protocol}"


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
    aliases: tuple[str, ...] = ()  # DNS names besides ``name`` (--network-alias), lower case
    # The interface and address belong to a CNI plugin before glia-cni (docs/chaining.md):
    # glia removes only its programs, map entry and keys, never the veth or the address.
    chained: bool = False
    # Host ports (podman run -p, from the ADD's runtimeConfig.portMappings): served as
    # lb frontends by this node's agent (glia.service.hostports); none for chained
    # endpoints and Docker's (Docker publishes its own).
    ports: tuple[HostPort, ...] = ()
