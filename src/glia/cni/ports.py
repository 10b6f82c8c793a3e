"""Host ports (``podman run -p``) that glia can honour, checked by glia-cni at ADD.

Called by :func:`glia.cni.invocation.parse_invocation` and by the agent
(:func:`glia.endpoint.request.requested_ports`). podman hands the mappings
(``runtimeConfig.portMappings``) to every plugin of the list that declares
the ``portMappings`` capability; glia-cni does, and the agent serves them as
load-balancer frontends (docs/hostport.md). What the pod network cannot carry
(an IPv6 host address for an IPv4-only pod; SCTP, which glia's datapath does
not track) must fail the container's start, never be silently ignored.

Standard library only: imported by a process that must start fast.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

PROTOCOLS = ("tcp", "udp")


class PortMapping(NamedTuple):
    host_port: int
    container_port: int
    protocol: str  # "tcp" | "udp"
    host_ip: str  # "" = every address of the node


class PortMappingError(ValueError):
    """A mapping glia cannot honour; the message names it and says why."""


def _port(m: Mapping[str, Any], key: str, where: str) -> int:
    value = m.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PortMappingError(f"{where}.{key}: expected a port in 1..65535, got {value!r}")
    return value


def port_mappings(conf: Mapping[str, Any]) -> list[PortMapping]:
    """The configuration's ``runtimeConfig.portMappings``, checked; [] when absent."""
    runtime = conf.get("runtimeConfig")
    if runtime is None:
        return []
    if not isinstance(runtime, Mapping):
        raise PortMappingError(f"runtimeConfig: expected an object, got {type(runtime).__name__}")
    raw = runtime.get("portMappings")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PortMappingError(
            f"runtimeConfig.portMappings: expected a list, got {type(raw).__name__}"
        )
    out = []
    for i, m in enumerate(raw):
        where = f"runtimeConfig.portMappings[{i}]"
        if not isinstance(m, Mapping):
            raise PortMappingError(f"{where}: expected an object, got {json.dumps(m)[:100]}")
        host_port = _port(m, "hostPort", where)
        container_port = _port(m, "containerPort", where)
        proto = m.get("protocol") or "tcp"
        if not isinstance(proto, str) or proto.lower() not in PROTOCOLS:
            raise PortMappingError(
                f"-p {host_port}:{container_port}/{proto}: glia forwards host ports for "
                "tcp and udp only"
            )
        host_ip = m.get("hostIP") or ""
        if not isinstance(host_ip, str):
            raise PortMappingError(f"{where}.hostIP: expected an address, got {host_ip!r}")
        if host_ip:
            try:
                addr = ipaddress.ip_address(host_ip)
            except ValueError:
                raise PortMappingError(
                    f"{where}.hostIP: {host_ip!r} is not an IP address"
                ) from None
            if addr.version != 4:
                raise PortMappingError(
                    f"-p [{host_ip}]:{host_port}:{container_port}: glia's pod network is "
                    "IPv4 only; give an IPv4 host address or none"
                )
        out.append(PortMapping(host_port, container_port, proto.lower(), host_ip))
    return out
