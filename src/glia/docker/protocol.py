"""The libnetwork remote driver protocol: each call's request checked, each answer built.

Pure. Called by :mod:`glia.docker.driver` (which does the work) for the calls
dockerd POSTs to the plugin socket (:mod:`glia.docker.server`). The calls and
their fields are libnetwork's remote network driver and remote IPAM APIs
(docs/docker.md). A request that is wrong raises :class:`DriverError` naming
the field; the server answers it as ``{"Err": "..."}``, which dockerd shows to
the user.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PLUGIN_NAME = "glia"
ADDRESS_SPACE = "glia"  # glia's one address space: the node's pod CIDR
GATEWAY_TYPE = "com.docker.network.gateway"  # RequestAddress Options.RequestAddressType
CONTAINER_IFNAME = "eth0"  # what the endpoint record says; docker names it eth<N>
DST_PREFIX = "eth"
_ID = re.compile(r"[0-9a-f]{64}")


class DriverError(Exception):
    """A call glia refuses; ``str()`` is the message dockerd shows."""


@dataclass(frozen=True, slots=True)
class PoolRequest:
    pool: str  # "" when docker lets the driver choose
    v6: bool


@dataclass(frozen=True, slots=True)
class AddressRequest:
    pool_id: str
    address: str  # "" for any
    gateway: bool


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    network_id: str
    endpoint_id: str
    address: str  # the IPv4 address RequestAddress gave, without prefix


@dataclass(frozen=True, slots=True)
class JoinRequest:
    network_id: str
    endpoint_id: str
    sandbox_key: str


def activate() -> dict[str, Any]:
    return {"Implements": ["NetworkDriver", "IpamDriver"]}


def network_capabilities() -> dict[str, Any]:
    # Local: every dockerd creates the network itself; global connectivity: its
    # containers reach the other nodes' endpoints (glia routes them).
    return {"Scope": "local", "ConnectivityScope": "global"}


def ipam_capabilities() -> dict[str, Any]:
    return {"RequiresMACAddress": False, "RequiresRequestReplay": False}


def address_spaces() -> dict[str, Any]:
    return {"LocalDefaultAddressSpace": ADDRESS_SPACE, "GlobalDefaultAddressSpace": ADDRESS_SPACE}


def _body(body: Any) -> Mapping[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise DriverError("glia: request body must be a JSON object")
    return body


def _id(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise DriverError(f"glia: {field} must be 64 lowercase hex digits, got {value!r:.80}")
    return value


def _str(body: Mapping[str, Any], field: str) -> str:
    value = body.get(field) or ""
    if not isinstance(value, str):
        raise DriverError(f"glia: {field} must be a string, got {value!r:.80}")
    return value


def _options(body: Mapping[str, Any]) -> Mapping[str, Any]:
    opts = body.get("Options") or {}
    if not isinstance(opts, Mapping):
        raise DriverError(f"glia: Options must be an object, got {opts!r:.80}")
    return opts


def parse_pool(body: Any, node_cidr: str) -> PoolRequest:
    """RequestPool: the node's pod CIDR, or the same CIDR asked for by ``--subnet``."""
    b = _body(body)
    space = _str(b, "AddressSpace")
    if space and space != ADDRESS_SPACE:
        raise DriverError(f"glia: address space {space[:60]!r} is not glia's ({ADDRESS_SPACE!r})")
    if b.get("V6"):
        raise DriverError("glia: IPv6 pools are not supported (glia endpoints are IPv4 only)")
    pool, sub = _str(b, "Pool"), _str(b, "SubPool")
    if sub:
        raise DriverError("glia: --ip-range is not supported; addresses come from the pod CIDR")
    if pool:
        try:
            want = ipaddress.ip_network(pool, strict=False)
        except ValueError:
            raise DriverError(f"glia: --subnet {pool[:60]!r} is not a network") from None
        if want != ipaddress.ip_network(node_cidr):
            raise DriverError(
                f"glia: --subnet {pool} is not this node's pod CIDR {node_cidr} "
                "(each node's network uses its own pod CIDR: `glia status` shows it)"
            )
    return PoolRequest(pool, False)


def pool_asked_again(node_cidr: str) -> str:
    """Why a second RequestPool without --subnet is refused (see DockerDriver.request_pool)."""
    return (
        f"glia: dockerd asked again for the pool {node_cidr} it already holds: it checks a pool "
        "it did not name against the node's routes, and glia's pod routes are there as soon as "
        f"pods run (or another network holds the pool); create the network with --subnet "
        f"{node_cidr}, this node's pod CIDR, which dockerd takes as given"
    )


def pool_id(node_cidr: str) -> str:
    return f"{ADDRESS_SPACE}/{node_cidr}"


def pool_answer(node_cidr: str) -> dict[str, Any]:
    return {"PoolID": pool_id(node_cidr), "Pool": node_cidr, "Data": {}}


def check_pool_id(body: Any, node_cidr: str) -> None:
    """ReleasePool and the address calls name the pool RequestPool gave."""
    given = _str(_body(body), "PoolID")
    if given != pool_id(node_cidr):
        raise DriverError(
            f"glia: PoolID {given[:80]!r} is not this node's pool {pool_id(node_cidr)!r}"
        )


def parse_address(body: Any, node_cidr: str) -> AddressRequest:
    b = _body(body)
    check_pool_id(b, node_cidr)
    kind = _options(b).get("RequestAddressType", "")
    address = _str(b, "Address")
    if address:
        try:
            ip = ipaddress.ip_interface(address).ip
        except ValueError:
            raise DriverError(f"glia: Address {address[:60]!r} is not an IP address") from None
        if ip.version != 4:
            raise DriverError(f"glia: Address {ip} is IPv6; glia endpoints are IPv4 only")
        address = str(ip)
    return AddressRequest(pool_id(node_cidr), address, kind == GATEWAY_TYPE)


def address_answer(ip: str, prefix: int) -> dict[str, Any]:
    return {"Address": f"{ip}/{prefix}", "Data": {}}


def parse_release_address(body: Any, node_cidr: str) -> str:
    b = _body(body)
    check_pool_id(b, node_cidr)
    address = _str(b, "Address")
    try:
        return str(ipaddress.ip_interface(address).ip)
    except ValueError:
        raise DriverError(f"glia: Address {address[:60]!r} is not an IP address") from None


def parse_create_network(body: Any, node_cidr: str) -> str:
    """CreateNetwork: the network id; its IPv4 pool must be glia's (``--ipam-driver glia``)."""
    b = _body(body)
    nid = _id(b, "NetworkID")
    v6 = b.get("IPv6Data") or []
    if v6:
        raise DriverError("glia: IPv6 networks are not supported (glia endpoints are IPv4 only)")
    v4 = b.get("IPv4Data") or []
    if not isinstance(v4, list) or len(v4) != 1 or not isinstance(v4[0], Mapping):
        raise DriverError("glia: the network needs exactly one IPv4 pool: use --ipam-driver glia")
    pool = v4[0].get("Pool")
    if pool != node_cidr:
        raise DriverError(
            f"glia: the network's pool {str(pool)[:60]} is not this node's pod CIDR {node_cidr}: "
            "create it with --ipam-driver glia"
        )
    return nid


def parse_network_id(body: Any) -> str:
    return _id(_body(body), "NetworkID")


def parse_endpoint_ids(body: Any) -> tuple[str, str]:
    b = _body(body)
    return _id(b, "NetworkID"), _id(b, "EndpointID")


def parse_create_endpoint(body: Any, node_cidr: str) -> EndpointRequest:
    b = _body(body)
    nid, eid = parse_endpoint_ids(b)
    _options(b)
    iface = b.get("Interface") or {}
    if not isinstance(iface, Mapping):
        raise DriverError("glia: Interface must be an object")
    if iface.get("AddressIPv6"):
        raise DriverError("glia: IPv6 addresses are not supported (glia endpoints are IPv4 only)")
    if iface.get("MacAddress"):
        raise DriverError("glia: --mac-address is not supported; glia chooses the MAC")
    address = iface.get("Address")
    if not isinstance(address, str) or not address:
        raise DriverError(
            "glia: Interface.Address is missing: create the network with --ipam-driver glia"
        )
    try:
        ip = ipaddress.ip_interface(address).ip
    except ValueError:
        raise DriverError(
            f"glia: Interface.Address {address[:60]!r} is not an IP address"
        ) from None
    if ip not in ipaddress.ip_network(node_cidr):
        raise DriverError(
            f"glia: address {ip} is not from this node's pod CIDR {node_cidr}: "
            "create the network with --ipam-driver glia"
        )
    return EndpointRequest(nid, eid, str(ip))


def create_endpoint_answer() -> dict[str, Any]:
    # The address is docker's already (from glia's IPAM): giving one back, even
    # the same, makes dockerd refuse "driver modified interface address".
    return {"Interface": {}}


def parse_join(body: Any) -> JoinRequest:
    b = _body(body)
    nid, eid = parse_endpoint_ids(b)
    key = _str(b, "SandboxKey")
    if not key.startswith("/"):
        raise DriverError(f"glia: SandboxKey must be an absolute path, got {key[:80]!r}")
    _options(b)
    return JoinRequest(nid, eid, key)


def join_answer(src_ifname: str, gateway: str) -> dict[str, Any]:
    """Docker moves ``src_ifname`` into the sandbox as eth<N>, addresses it (/32),
    adds the connected route to ``gateway``, then the default route through it.

    ``gateway`` is the node's IP, not the pod CIDR's gateway: docker sets no
    neighbour entry for it, and the node answers ARP for its own address on
    the host side of the veth (glia routes by destination, whatever the next hop).
    """
    return {
        "InterfaceName": {"SrcName": src_ifname, "DstPrefix": DST_PREFIX},
        "Gateway": gateway,
        "StaticRoutes": [{"Destination": f"{gateway}/32", "RouteType": 1}],
        "DisableGatewayService": False,
    }


def unsupported(call: str) -> DriverError:
    return DriverError(f"glia: {call} is not supported (swarm-scope networks are not)")
