"""Chained endpoints: glia on an interface and address that a previous CNI plugin owns.

Called by :class:`glia.endpoint.manager.EndpointManager` (ADD with a
``prevResult``, DEL, GC, restore, label updates), under its lock. glia adds
to such a pod only what it adds to any endpoint — its programs on the host
veth, the endpoint map entry, the ipcache and endpoint keys, its record (with
``chained=True``) — and removes only that: the interface, its address and its
routes belong to the previous plugin (``ptp``), which removes them on its own
DEL, after glia-cni's. The address is never in glia's IPAM. docs/chaining.md.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from glia.cni.spec import ERR_INVALID_CONFIG, ERR_IO, CniError
from glia.datapath import chained_link, netlink
from glia.datapath.errors import DatapathError
from glia.datapath.loader import Datapath
from glia.datapath.nodemaps import EndpointInfo
from glia.datapath.runner import RunDatapath
from glia.endpoint.chained_request import ChainedPrev, check_address
from glia.endpoint.endpoint_keys import EndpointKeys
from glia.endpoint.request import AddRequest
from glia.endpoint.store import EndpointStore
from glia.ipam.local import LocalIPAM
from glia.ipam.pool import gateway_ip
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.identity import ReservedIdentity

log = logging.getLogger(__name__)


class ChainedEndpoints:
    """Set up, look up and take down the glia part of chained endpoints."""

    def __init__(
        self,
        cluster: str,
        node: str,
        ipam: LocalIPAM,
        keys: EndpointKeys,
        store: EndpointStore,
        datapath: Datapath,
        run_dp: RunDatapath,
    ) -> None:
        self._cluster = cluster
        self._node = node
        self._ipam = ipam
        self._keys = keys
        self._store = store
        self._dp = datapath
        self._run_dp = run_dp

    async def add(
        self, r: AddRequest, prev: ChainedPrev, labels: dict[str, str], others: list[Endpoint]
    ) -> Endpoint:
        """The endpoint for ``r`` on the previous plugin's interface; rolled back on failure."""
        check_address(
            prev.ip, self._ipam.cidr, gateway_ip(self._ipam.cidr), self._ipam.holder(prev.ip)
        )
        for o in others:
            if o.ip == prev.ip:
                raise CniError(
                    ERR_INVALID_CONFIG,
                    f"the previous plugin's address {prev.ip} is already endpoint "
                    f"{o.namespace}/{o.name}'s (container {o.container_id[:12]})",
                )
        try:
            link = await self._run_dp(lambda: chained_link.find(r.netns, r.ifname, prev.host_names))
        except DatapathError as e:
            raise CniError(ERR_INVALID_CONFIG, f"chained ADD: {e}") from None
        if prev.ip not in link.addresses:
            raise CniError(
                ERR_INVALID_CONFIG,
                f"prevResult gives {r.ifname} the address {prev.ip}, the kernel shows "
                f"{', '.join(link.addresses) or 'none'} on it",
            )
        ep = Endpoint(
            container_id=r.container_id,
            namespace=r.namespace,
            name=r.name,
            cluster=self._cluster,
            node=self._node,
            ip=prev.ip,
            identity=int(ReservedIdentity.INIT),
            labels=labels,
            state=EndpointState.WAITING_FOR_IDENTITY,
            ifname=r.ifname,
            host_ifname=link.host_ifname,
            netns=r.netns,
            mac=link.container_mac,
            host_mac=link.host_mac,
            aliases=r.aliases,
            chained=True,
        )
        undo: list[Callable[[], Awaitable[Any]]] = []
        try:
            undo.append(lambda: self._keys.withdraw(ep))
            await self._keys.publish(ep)
            undo.append(lambda: self._run_dp(lambda: self._dp.detach(link.host_ifindex)))
            await self._run_dp(lambda: self._dp.attach_endpoint(link.host_ifindex))
            undo.append(lambda: self._run_dp(lambda: self._dp.endpoints.delete(ep.ip)))
            await self.program(ep, link.host_ifindex)
            self._store.save(ep)
        except BaseException as e:
            for step in reversed(undo):
                with contextlib.suppress(Exception):
                    await step()
            with contextlib.suppress(OSError):
                self._store.remove(ep.container_id, ep.ifname)
            if isinstance(e, Exception) and not isinstance(e, CniError):
                raise CniError(ERR_IO, f"chaining {r.namespace}/{r.name} failed: {e}") from e
            raise
        log.info(
            "chained endpoint %s/%s added: %s on %s", r.namespace, r.name, ep.ip, ep.host_ifname
        )
        return ep

    async def host_ifindex(self, ep: Endpoint, links: dict[str, int] | None = None) -> int | None:
        """Any endpoint's host veth's ifindex now, None if it is gone (a chained pod's
        when the previous plugin removed it). ``links``: the node's glia veths (name ->
        ifindex) when the caller listed them already."""
        if ep.chained:
            return await self._run_dp(lambda: chained_link.host_index(ep.host_ifname))
        if links is None:
            links = dict(await self._run_dp(lambda: netlink.list_links(netlink.HOST_PREFIX)))
        return links.get(ep.host_ifname)

    async def program(self, ep: Endpoint, ifindex: int) -> None:
        info = EndpointInfo(ifindex=ifindex, identity=ep.identity, mac=ep.mac, node_mac=ep.host_mac)
        await self._run_dp(lambda: self._dp.endpoints.upsert(ep.ip, info))

    async def remove(self, ep: Endpoint) -> None:
        """Map entry, keys, programs (if the veth is still there) and record; never the veth."""
        await self._run_dp(lambda: self._dp.endpoints.delete(ep.ip))
        await self._keys.withdraw(ep)
        index = await self.host_ifindex(ep)
        if index is not None:
            await self._run_dp(lambda: self._dp.detach(index))
        self._store.remove(ep.container_id, ep.ifname)
        log.info("chained endpoint %s/%s removed (%s stays)", ep.namespace, ep.name, ep.ip)
