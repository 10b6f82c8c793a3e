"""The Docker network and IPAM driver's work: libnetwork calls on glia's IPAM and endpoints.

Created by :mod:`glia.agent.docker_start`; :mod:`glia.docker.server` calls one
method per libnetwork call with the decoded body and answers what it returns
(or ``{"Err": ...}`` for a :class:`~glia.docker.protocol.DriverError`).

- RequestAddress allocates from the node's IPAM (persistent: docker never
  replays allocations) for a provisional owner ``docker:<random>``; the
  gateway is the node's glia gateway, never allocated.
- CreateEndpoint records which address the endpoint got (``docker.json`` in
  the agent's state dir, so an agent restart between the calls loses nothing).
- Join hands the address over to the endpoint manager, which builds the
  endpoint (veth, endpoint map, keys, identity from labels) like a CNI ADD; the
  endpoint's container id is docker's endpoint id; the answer routes the
  container through the node's IP.
- Leave does nothing (docker moves the interface out); DeleteEndpoint removes
  the endpoint, ReleaseAddress frees a still provisional address.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from glia.cni.spec import CniError
from glia.docker import protocol as p
from glia.docker.protocol import DriverError
from glia.docker.veth import create_docker_veth, peer_ifname_for
from glia.endpoint.manager import EndpointManager
from glia.ipam.local import IPAMError, LocalIPAM
from glia.ipam.pool import PoolExhausted, gateway_ip

log = logging.getLogger(__name__)

PENDING = "docker:"  # IPAM owner prefix of an address not yet joined


class DockerState:
    """Endpoint id -> (network id, address), persisted as JSON (atomic writes)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._eps: dict[str, dict[str, str]] = {}
        if path.exists():
            raw = json.loads(path.read_text() or "{}")
            self._eps = {str(k): dict(v) for k, v in (raw.get("endpoints") or {}).items()}

    def get(self, eid: str) -> dict[str, str] | None:
        return self._eps.get(eid)

    def ids(self) -> list[str]:
        return sorted(self._eps)

    def put(self, eid: str, network: str, ip: str) -> None:
        self._eps[eid] = {"network": network, "ip": ip}
        self._save()

    def pop(self, eid: str) -> None:
        if self._eps.pop(eid, None) is not None:
            self._save()

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"endpoints": self._eps}, sort_keys=True))
        os.replace(tmp, self._path)


class DockerDriver:
    def __init__(
        self, ipam: LocalIPAM, endpoints: EndpointManager, state: DockerState, node_ip: str
    ) -> None:
        """``node_ip``: the containers' gateway (:func:`glia.docker.protocol.join_answer`)."""
        self._node_ip = node_ip
        self._unnamed_pools = 0  # pools handed out to RequestPool without --subnet, held
        self._ipam = ipam
        self._eps = endpoints
        self.state = state

    @property
    def _cidr(self) -> str:
        return self._ipam.cidr

    async def call(self, name: str, body: Any) -> dict[str, Any]:
        """The answer to libnetwork call ``name`` (e.g. ``NetworkDriver.Join``)."""
        handler = _CALLS.get(name)
        if handler is None:
            raise DriverError(f"glia: unknown call {name[:80]!r}")
        return await handler(self, body)

    # -- plugin and IPAM ------------------------------------------------

    async def activate(self, body: Any) -> dict[str, Any]:
        return p.activate()

    async def ipam_capabilities(self, body: Any) -> dict[str, Any]:
        return p.ipam_capabilities()

    async def address_spaces(self, body: Any) -> dict[str, Any]:
        return p.address_spaces()

    async def request_pool(self, body: Any) -> dict[str, Any]:
        # Without --subnet, libnetwork checks the pool it gets against the node's
        # routes and, when they overlap, keeps it and asks again, forever: glia has
        # only the one pool, and every pod adds a /32 route inside it. The second
        # pool-less request while the first is held ends that loop with an error
        # that says what to do; with --subnet dockerd does not check.
        req = p.parse_pool(body, self._cidr)
        if not req.pool:
            if self._unnamed_pools:
                raise DriverError(p.pool_asked_again(self._cidr))
            self._unnamed_pools += 1
        return p.pool_answer(self._cidr)

    async def release_pool(self, body: Any) -> dict[str, Any]:
        p.check_pool_id(body, self._cidr)
        # Which request this releases is not said (one pool id): the count only errs
        # towards allowing, and an agent restart starts it at 0.
        self._unnamed_pools = max(0, self._unnamed_pools - 1)
        return {}

    async def request_address(self, body: Any) -> dict[str, Any]:
        req = p.parse_address(body, self._cidr)
        net = ipaddress.ip_network(self._cidr)
        gw = gateway_ip(self._cidr)
        if req.gateway:
            if req.address and req.address != gw:
                raise DriverError(f"glia: the gateway of {self._cidr} is {gw}, not {req.address}")
            return p.address_answer(gw, net.prefixlen)
        owner = PENDING + secrets.token_hex(8)
        try:
            ip = self._ipam.allocate(owner, req.address or None)
        except PoolExhausted as e:
            raise DriverError(f"glia: {e}") from None
        except IPAMError as e:
            # With an Address: `docker run --ip`; the user reads this as docker's error.
            what = f"--ip {req.address}" if req.address else "address"
            raise DriverError(f"glia: {what} refused: {e}") from None
        return p.address_answer(ip, 32)

    async def release_address(self, body: Any) -> dict[str, Any]:
        ip = p.parse_release_address(body, self._cidr)
        holder = self._ipam.holder(ip)
        if holder is not None and holder.startswith(PENDING):
            self._ipam.release(ip)
        # Otherwise: the gateway, or an endpoint's (DeleteEndpoint released it).
        return {}

    # -- network driver -------------------------------------------------

    async def network_capabilities(self, body: Any) -> dict[str, Any]:
        return p.network_capabilities()

    async def create_network(self, body: Any) -> dict[str, Any]:
        nid = p.parse_create_network(body, self._cidr)
        log.info("docker: network %s created", nid[:12])
        return {}

    async def delete_network(self, body: Any) -> dict[str, Any]:
        p.parse_network_id(body)
        return {}

    async def create_endpoint(self, body: Any) -> dict[str, Any]:
        req = p.parse_create_endpoint(body, self._cidr)
        holder = self._ipam.holder(req.address)
        known = self.state.get(req.endpoint_id)
        if not (holder or "").startswith(PENDING) and not (known and known["ip"] == req.address):
            raise DriverError(
                f"glia: address {req.address} was not given by glia's IPAM for this endpoint "
                f"(held by {holder or 'nobody'}): create the network with --ipam-driver glia"
            )
        self.state.put(req.endpoint_id, req.network_id, req.address)
        return p.create_endpoint_answer()

    async def endpoint_info(self, body: Any) -> dict[str, Any]:
        _nid, eid = p.parse_endpoint_ids(body)
        rec = self.state.get(eid)
        return {"Value": {"glia.address": rec["ip"]} if rec else {}}

    async def join(self, body: Any) -> dict[str, Any]:
        req = p.parse_join(body)
        rec = self.state.get(req.endpoint_id)
        if rec is None or rec["network"] != req.network_id:
            raise DriverError(
                f"glia: endpoint {req.endpoint_id[:12]} is unknown (no CreateEndpoint seen)"
            )
        ip = rec["ip"]
        holder = self._ipam.holder(ip)
        if holder is not None and holder.startswith(PENDING):
            self._ipam.release(ip)  # the endpoint manager takes it (explicit request)
        peer = peer_ifname_for(req.endpoint_id)
        make = functools.partial(create_docker_veth, peer_ifname=peer)
        try:
            await self._eps.add_prepared(req.endpoint_id, req.sandbox_key, ip, make)
        except CniError as e:
            raise DriverError(f"glia: {e.msg}" + (f" ({e.details})" if e.details else "")) from None
        return p.join_answer(peer, self._node_ip)

    async def leave(self, body: Any) -> dict[str, Any]:
        p.parse_endpoint_ids(body)
        return {}

    async def delete_endpoint(self, body: Any) -> dict[str, Any]:
        _nid, eid = p.parse_endpoint_ids(body)
        try:
            await self._eps.delete({"container_id": eid, "ifname": p.CONTAINER_IFNAME})
        except CniError as e:
            raise DriverError(f"glia: {e.msg}") from None
        self.state.pop(eid)
        return {}

    async def nothing(self, body: Any) -> dict[str, Any]:
        return {}

    async def swarm_only(self, body: Any) -> dict[str, Any]:
        raise p.unsupported("AllocateNetwork/FreeNetwork")


_CALLS = {
    "Plugin.Activate": DockerDriver.activate,
    "IpamDriver.GetCapabilities": DockerDriver.ipam_capabilities,
    "IpamDriver.GetDefaultAddressSpaces": DockerDriver.address_spaces,
    "IpamDriver.RequestPool": DockerDriver.request_pool,
    "IpamDriver.ReleasePool": DockerDriver.release_pool,
    "IpamDriver.RequestAddress": DockerDriver.request_address,
    "IpamDriver.ReleaseAddress": DockerDriver.release_address,
    "NetworkDriver.GetCapabilities": DockerDriver.network_capabilities,
    "NetworkDriver.CreateNetwork": DockerDriver.create_network,
    "NetworkDriver.DeleteNetwork": DockerDriver.delete_network,
    "NetworkDriver.CreateEndpoint": DockerDriver.create_endpoint,
    "NetworkDriver.EndpointOperInfo": DockerDriver.endpoint_info,
    "NetworkDriver.DeleteEndpoint": DockerDriver.delete_endpoint,
    "NetworkDriver.Join": DockerDriver.join,
    "NetworkDriver.Leave": DockerDriver.leave,
    "NetworkDriver.DiscoverNew": DockerDriver.nothing,
    "NetworkDriver.DiscoverDelete": DockerDriver.nothing,
    "NetworkDriver.ProgramExternalConnectivity": DockerDriver.nothing,
    "NetworkDriver.RevokeExternalConnectivity": DockerDriver.nothing,
    "NetworkDriver.AllocateNetwork": DockerDriver.swarm_only,
    "NetworkDriver.FreeNetwork": DockerDriver.swarm_only,
}
