"""Endpoint lifecycle on one node: CNI ADD/DEL/CHECK/GC, restore after restart.

Owned by the agent; the only code that creates or removes endpoint veths, IPs,
endpoint map entries and the endpoint/ipcache keys of this node.

ADD: IP from the node's IPAM, veth into the container, program attached,
endpoint map entry, keys published on the agent's lease; the identity starts as
``init`` and becomes the one for the container's labels once the runtime has
told them (asynchronously, see :mod:`glia.agent.labels`). Any failure rolls back
what ADD did. DEL is idempotent; it returns once the endpoint map entry, the
keys, the IP and the record are gone, and leaves the veth to
:mod:`glia.endpoint.veth_removal` (an ADD reusing its name waits for it). The
keys live in :mod:`glia.endpoint.endpoint_keys`. On start, :meth:`EndpointManager.restore`
adopts the endpoints recorded on disk whose veth still exists and removes
leftovers (veths, map entries, IPs, this node's keys and identity references
in the kvstore) that no record claims.

Policy (:mod:`glia.agent.policy`) follows the endpoints through
:attr:`EndpointManager.hooks`: ``identity_ready`` is awaited before an
endpoint's new identity reaches the endpoint map (so its policy is programmed
first: a selected pod is never open for a moment), ``endpoints_changed`` after
any change of the set of endpoints or their identities.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from glia.cni import spec
from glia.cni.spec import CniError as CniError  # re-exported: the API catches it
from glia.datapath import netlink
from glia.datapath.loader import Datapath
from glia.datapath.nodemaps import EndpointInfo
from glia.datapath.runner import RunDatapath
from glia.endpoint import netns_check, request
from glia.endpoint.allocate import allocate_ip
from glia.endpoint.chained import ChainedEndpoints
from glia.endpoint.chained_request import ChainedPrev, parse_prev
from glia.endpoint.cni_result import add_result
from glia.endpoint.endpoint_keys import EndpointKeys
from glia.endpoint.hooks import EndpointHooks, LabelSource, RuntimeInfo
from glia.endpoint.relabel import base_labels, initial_endpoint, relabel
from glia.endpoint.store import EndpointStore, endpoint_key
from glia.endpoint.strays import remove_strays
from glia.endpoint.veth_removal import RemovalPending, VethRemovals
from glia.identity.allocator import IdentityAllocator
from glia.identity.labelfilter import LabelFilter
from glia.ipam.local import LocalIPAM
from glia.ipam.pool import gateway_ip
from glia.kvstore.client import KVClient
from glia.kvstore.publisher import LeasedPublisher
from glia.model.endpoint import Endpoint, EndpointState, HostPort
from glia.model.identity import ReservedIdentity

log = logging.getLogger(__name__)

# CNI spec error codes (https://www.cni.dev/docs/spec/#error), one definition
# with glia-cni's, as is the error (the API turns it into the error body).
CNI_INCOMPATIBLE_VERSION = spec.ERR_INCOMPATIBLE_VERSION
CNI_UNKNOWN_CONTAINER = spec.ERR_UNKNOWN_CONTAINER
CNI_INVALID_ENV = spec.ERR_INVALID_ENV
CNI_IO_ERROR = spec.ERR_IO
CNI_INVALID_CONFIG = spec.ERR_INVALID_CONFIG
CNI_TRY_AGAIN = spec.ERR_TRY_AGAIN_LATER
CNI_NOT_READY = spec.ERR_NOT_AVAILABLE


class EndpointManager:
    def __init__(
        self,
        *,
        cluster: str,
        cluster_id: int,
        node: str,
        node_ip: str,
        mtu: int,
        store: EndpointStore,
        ipam: LocalIPAM,
        identities: IdentityAllocator,
        publisher: LeasedPublisher,
        kv: KVClient,
        datapath: Datapath,
        run_dp: RunDatapath,
        labels: LabelSource,
        label_filter: LabelFilter | None = None,
        dns_nameserver: str | None = None,
    ) -> None:
        """``label_filter``: which runtime labels make the identity (default: the
        agent config's defaults). ``dns_nameserver``: the node IP when the agent
        serves DNS on its port 53 (then ADD results carry it, with the namespace's
        search list), else None."""
        self._cluster = cluster
        self._node = node
        self._mtu = mtu
        self._store = store
        self._ipam = ipam
        self._ids = identities
        self._keys = EndpointKeys(
            publisher=publisher,
            kv=kv,
            cluster=cluster,
            cluster_id=cluster_id,
            node=node,
            node_ip=node_ip,
        )
        self._kv = kv
        self._dp = datapath
        self._run_dp = run_dp
        self._labels = labels
        self._label_filter = label_filter or LabelFilter()
        self._dns_nameserver = dns_nameserver
        self._eps: dict[str, Endpoint] = {}  # endpoint_key -> endpoint
        self._lock = asyncio.Lock()  # ADD/DEL/GC/label updates are serialised
        self._label_tasks: dict[str, asyncio.Task[None]] = {}
        self.removals = VethRemovals(netlink.delete_endpoint_veth)
        self._chained = ChainedEndpoints(cluster, node, ipam, self._keys, store, datapath, run_dp)
        self.hooks: EndpointHooks | None = None

    def _changed(self) -> None:
        if self.hooks is not None:
            self.hooks.endpoints_changed()

    # ---- queries -------------------------------------------------------

    def all(self) -> list[Endpoint]:
        return sorted(self._eps.values(), key=lambda e: (e.namespace, e.name, e.ifname))

    @property
    def gateway(self) -> str:
        return gateway_ip(self._ipam.cidr)

    # ---- CNI -----------------------------------------------------------

    async def add(self, req: dict[str, Any]) -> dict[str, Any]:
        # Everything about the request is checked before anything is allocated.
        r = request.parse_add(req)
        prev = req.get("prev_result")  # chained after another plugin (docs/chaining.md)
        chained = None if prev is None else parse_prev(prev, r.ifname, r.ip)
        cid, netns, ifname = r.container_id, r.netns, r.ifname
        name, namespace, cni_version = r.name, r.namespace, r.cni_version
        target = await asyncio.to_thread(netns_check.check_pod_netns, netns)
        key = endpoint_key(cid, ifname)
        async with self._lock:
            request.check_one_netns(cid, netns, target, await self._attached(cid))
            existing = self._eps.get(key)
            if existing is not None:
                # A runtime retrying ADD: same answer, nothing allocated twice.
                return self._result(existing, cni_version, chained)
            if chained is None:  # a chained endpoint's host ports are not glia's
                request.check_host_ports(r.ports, self._eps.values())
            await self._claim(cid, ifname, name, namespace, wait=chained is None)
            if chained is not None:
                others = list(self._eps.values())
                ep = await self._chained.add(r, chained, self._base_labels(namespace), others)
                self._eps[key] = ep
            else:
                ep = await self._add_locked(
                    cid, netns, ifname, name, namespace, r.ip, r.aliases, r.ports
                )
        if ep.ports:  # served from ADD on, not only once the labels are known
            self._changed()
        self._resolve_labels_later(ep)
        return self._result(ep, cni_version, chained)

    async def add_prepared(
        self, cid: str, netns: str, ip: str, make_veth: Callable[..., netlink.VethInfo]
    ) -> Endpoint:
        """Docker's Join (docs/docker.md): endpoint eth0 at ``ip``, veth by ``make_veth``."""
        ns, key, name = request.DEFAULT_NAMESPACE, endpoint_key(cid, "eth0"), cid[:12]
        async with self._lock:
            if key in self._eps:
                return self._eps[key]
            await self._claim(cid, "eth0", name, ns)
            ep = await self._add_locked(cid, netns, "eth0", name, ns, ip, make_veth=make_veth)
        self._resolve_labels_later(ep)
        return ep

    async def _claim(self, cid: str, ifname: str, name: str, ns: str, wait: bool = True) -> None:
        """Refuse a name taken on this node; wait for this container's old veth."""
        for other in self._eps.values():
            if (other.namespace, other.name) == (ns, name):
                raise CniError(
                    CNI_INVALID_CONFIG,
                    f"an endpoint named {ns}/{name} already exists on this node "
                    f"(container {other.container_id[:12]})",
                )
        try:  # a DEL of this container a moment ago (a restart): its veth goes first
            if wait:
                await self.removals.wait(netlink.host_ifname_for(cid, ifname))
        except RemovalPending as e:
            raise CniError(CNI_TRY_AGAIN, str(e)) from None

    def _result(self, ep: Endpoint, version: str, prev: ChainedPrev | None) -> dict[str, Any]:
        if prev is not None:  # the previous plugin's result, passed on as the spec says
            return prev.result
        return add_result(ep, self.gateway, version, self._dns_nameserver)

    async def _add_locked(
        self,
        cid: str,
        netns: str,
        ifname: str,
        name: str,
        namespace: str,
        requested: str | None,
        aliases: tuple[str, ...] = (),
        ports: tuple[HostPort, ...] = (),
        make_veth: Callable[..., netlink.VethInfo] = netlink.create_endpoint_veth,
    ) -> Endpoint:
        undo: list[Callable[[], Awaitable[Any]]] = []
        try:
            ip = await allocate_ip(
                self._ipam,
                endpoint_key(cid, ifname),
                requested,
                node=self._node,
                holder=self._holder,
                kv=self._kv,
                cluster=self._cluster,
            )
            undo.append(lambda: asyncio.sleep(0, self._ipam.release(ip)))
            host_ifname = netlink.host_ifname_for(cid, ifname)
            # MACs chosen here, so the record is complete before the veth exists.
            mac, host_mac = netlink.random_mac(), netlink.random_mac()
            ep = initial_endpoint(
                cid=cid, namespace=namespace, name=name, cluster=self._cluster,
                node=self._node, ip=ip, ifname=ifname, host_ifname=host_ifname, netns=netns,
                mac=mac, host_mac=host_mac, aliases=aliases, ports=ports,
            )  # fmt: skip
            # The keys go to etcd while the kernel builds the veth: they name no
            # interface, and nothing reaches the pod before ADD returns. The
            # withdrawal waits for the put, so a rollback leaves no key behind.
            publishing = asyncio.ensure_future(self._keys.publish(ep))
            undo.append(lambda: self._withdraw_after(publishing, ep))
            try:
                veth = await self._run_dp(
                    lambda: make_veth(
                        netns_path=netns,
                        ifname=ifname,
                        host_ifname=host_ifname,
                        ip=ip,
                        gateway=self.gateway,
                        mtu=self._mtu,
                        host_mac=host_mac,
                        container_mac=mac,
                    )
                )
            finally:
                await asyncio.wait({publishing})
            undo.append(lambda: self._run_dp(lambda: netlink.delete_endpoint_veth(host_ifname)))
            await publishing  # its error, if any, rolls everything back
            await self._run_dp(lambda: self._dp.attach_endpoint(veth.host_ifindex))
            await self._program(ep, veth.host_ifindex)
            undo.append(lambda: self._unprogram(ep))
            self._store.save(ep)
            self._eps[endpoint_key(cid, ifname)] = ep
            log.info("endpoint %s/%s added: %s on %s", namespace, name, ip, host_ifname)
            return ep
        except BaseException as e:
            for step in reversed(undo):
                with contextlib.suppress(Exception):
                    await step()
            # The rollback must not replace the error the caller needs to see.
            with contextlib.suppress(OSError):
                self._store.remove(cid, ifname)
            if isinstance(e, CniError):
                raise
            if isinstance(e, Exception):
                raise CniError(CNI_IO_ERROR, f"setting up {namespace}/{name} failed: {e}") from e
            raise

    async def _withdraw_after(self, publishing: asyncio.Future[None], ep: Endpoint) -> None:
        await asyncio.wait({publishing})
        if not publishing.cancelled():
            publishing.exception()  # retrieved: the error that matters is raised elsewhere
        await self._keys.withdraw(ep)

    def _holder(self, owner: str) -> str:
        ep = self._eps.get(owner)
        if ep is None:
            return f"container {owner[:12]} (being set up or removed)"
        return f"{ep.namespace}/{ep.name} (container {ep.container_id[:12]})"

    async def delete(self, req: dict[str, Any]) -> None:
        cid = str(req.get("container_id") or "")
        ifname = str(req.get("ifname") or "eth0")
        if not cid:
            raise CniError(CNI_INVALID_ENV, "container_id is required")
        async with self._lock:
            ep = self._eps.pop(endpoint_key(cid, ifname), None)
            task = self._label_tasks.pop(endpoint_key(cid, ifname), None)
            if task:
                task.cancel()
            if ep is None:
                # Nothing known: still free an IP a crashed ADD may have left.
                self._ipam.release_owner(endpoint_key(cid, ifname))
                self.removals.remove(netlink.host_ifname_for(cid, ifname))
                return
            try:
                await self._remove(ep)
            finally:
                self._changed()

    async def _remove(self, ep: Endpoint) -> None:
        if ep.chained:  # the veth and the address are the previous plugin's
            await self._chained.remove(ep)
            await self._ids.release(ep.identity)
            return
        # The map entry first: nothing is redirected to a dying interface. The
        # veth goes in the background (the kernel takes ~20 ms); the IP has a
        # cool-down before reuse, and an ADD reusing the name waits for it.
        await self._unprogram(ep)
        await self._keys.withdraw(ep)
        self.removals.remove(ep.host_ifname)
        self._ipam.release(ep.ip)
        await self._ids.release(ep.identity)
        self._store.remove(ep.container_id, ep.ifname)
        log.info("endpoint %s/%s removed (%s)", ep.namespace, ep.name, ep.ip)

    async def check(self, req: dict[str, Any]) -> None:
        r = request.parse_check(req)
        cid, ifname = r.container_id, r.ifname
        target = await asyncio.to_thread(netns_check.check_pod_netns, r.netns)
        request.check_one_netns(cid, r.netns, target, await self._attached(cid))
        ep = self._eps.get(endpoint_key(cid, ifname))
        if ep is None:
            raise CniError(CNI_UNKNOWN_CONTAINER, f"no endpoint for container {cid[:12]}/{ifname}")
        request.check_prev_matches(ep, r.prev_result)
        if await self._chained.host_ifindex(ep) is None:
            raise CniError(CNI_IO_ERROR, f"host interface {ep.host_ifname} is missing")
        if await self._run_dp(lambda: self._dp.endpoints.get(ep.ip)) is None:
            raise CniError(CNI_IO_ERROR, f"endpoint map has no entry for {ep.ip}")

    async def _attached(self, cid: str) -> list[tuple[Endpoint, request.NetnsId | None]]:
        """The container's endpoints, each with the namespace its path names now."""
        eps = [ep for ep in self._eps.values() if ep.container_id == cid]
        ids = [await asyncio.to_thread(netns_check.identity, ep.netns) for ep in eps]
        return list(zip(eps, ids, strict=True))

    async def gc(self, valid: list[tuple[str, str]]) -> int:
        """Remove every endpoint whose (container id, ifname) is not in ``valid``."""
        keep = {endpoint_key(c, i) for c, i in valid}
        removed = 0
        async with self._lock:
            for key, ep in list(self._eps.items()):
                if key not in keep:
                    del self._eps[key]
                    try:
                        await self._remove(ep)
                    finally:
                        self._changed()
                    removed += 1
        return removed

    # ---- restore -------------------------------------------------------

    async def restore(self) -> dict[str, int]:
        """Adopt recorded endpoints whose veth exists; clean up everything else."""
        stats = {"adopted": 0, "stale_records": 0}
        links = dict(await self._run_dp(lambda: netlink.list_links(netlink.HOST_PREFIX)))
        async with self._lock:
            for ep in self._store.load_all():
                ifindex = await self._chained.host_ifindex(ep, links)
                if ifindex is None or not (ep.chained or ep.ip in self._ipam.allocations()):
                    stats["stale_records"] += 1
                    self._store.remove(ep.container_id, ep.ifname)
                    self._ipam.release(ep.ip)
                    continue
                await self._run_dp(functools.partial(self._dp.attach_endpoint, ifindex))
                if ep.state == EndpointState.READY and ep.identity >= 256:
                    # Filtered again: a record an older agent wrote may hold every
                    # runtime label, and the rules may have changed since.
                    labels = self._label_filter.apply(ep.labels)
                    ident = await self._ids.allocate(labels)
                    ep = replace(ep, labels=labels, identity=ident.id)
                else:
                    ep = replace(ep, identity=int(ReservedIdentity.INIT))
                await self._program(ep, ifindex)
                await self._keys.publish(ep)
                self._eps[endpoint_key(ep.container_id, ep.ifname)] = ep
                self._store.save(ep)
                stats["adopted"] += 1
            stats |= await remove_strays(
                list(self._eps.values()), links, self._dp, self._run_dp, self._ipam
            )
            # Keys of endpoints that went while no agent ran (a DEL queued by the
            # plugin, a veth gone with its pod) still sit on the dead agent's
            # lease: other nodes would route to them until it expires.
            stats["stray_keys"] = await self._keys.withdraw_strays()
            stats["stray_refs"] = await self._ids.prune_refs()
        for ep in self._eps.values():
            if ep.state != EndpointState.READY:
                self._resolve_labels_later(ep)
        self._changed()
        log.info("endpoint restore: %s", stats)
        return stats

    # ---- labels -> identity ---------------------------------------------

    def _resolve_labels_later(self, ep: Endpoint) -> None:
        key = endpoint_key(ep.container_id, ep.ifname)
        self._label_tasks[key] = asyncio.create_task(
            self._resolve_labels(key), name=f"labels-{key}"
        )

    async def _resolve_labels(self, key: str) -> None:
        ep = self._eps.get(key)
        if ep is None:
            return
        try:
            runtime = await self._labels.labels(ep.container_id)
        except Exception as e:
            log.warning(
                "labels of %s/%s unavailable (%s): using base labels", ep.namespace, ep.name, e
            )
            runtime = RuntimeInfo({})
        async with self._lock:
            ep = self._eps.get(key)
            if ep is None:  # deleted meanwhile
                return
            others = (o for k, o in self._eps.items() if k != key)
            r = relabel(ep, runtime, others, self._label_filter, self._cluster)
            for note in r.notes:
                log.debug("endpoint %s/%s: %s", ep.namespace, ep.name, note)
            if r.namespace_refused is not None:
                log.warning(
                    "endpoint %s/%s stays in namespace %s: %s",
                    ep.namespace,
                    ep.name,
                    ep.namespace,
                    r.namespace_refused,
                )
            namespace, labels, aliases = r.namespace, r.labels, r.aliases
            ident = await self._ids.allocate(labels)
            old = ep.identity
            old_namespace = ep.namespace
            ep = replace(
                ep,
                namespace=namespace,
                labels=labels,
                identity=ident.id,
                state=EndpointState.READY,
                aliases=aliases,
            )
            ifindex = await self._chained.host_ifindex(ep)
            if ifindex is None:
                log.warning("endpoint %s/%s lost its interface", ep.namespace, ep.name)
                await self._ids.release(ident.id)
                return
            try:
                if self.hooks is not None:
                    await self.hooks.identity_ready(ident.id, labels)
                await self._program(ep, ifindex)
                self._store.save(ep)
                if old_namespace != ep.namespace:
                    # Old key first: readers index endpoints by IP too.
                    await self._keys.withdraw_name(old_namespace, ep.name)
                await self._keys.publish(ep)
                self._eps[key] = ep
            finally:
                self._changed()
            await self._ids.release(old)
            log.info("endpoint %s/%s has identity %d %s", ep.namespace, ep.name, ident.id, labels)
        self._label_tasks.pop(key, None)

    def _base_labels(self, namespace: str) -> dict[str, str]:
        return base_labels(namespace, self._cluster)

    # ---- datapath and kvstore -------------------------------------------

    async def _program(self, ep: Endpoint, ifindex: int) -> None:
        info = EndpointInfo(ifindex=ifindex, identity=ep.identity, mac=ep.mac, node_mac=ep.host_mac)
        await self._run_dp(lambda: self._dp.endpoints.upsert(ep.ip, info))

    async def _unprogram(self, ep: Endpoint) -> None:
        await self._run_dp(lambda: self._dp.endpoints.delete(ep.ip))

    async def stop(self) -> None:
        for task in self._label_tasks.values():
            task.cancel()
        for task in list(self._label_tasks.values()):
            with contextlib.suppress(BaseException):
                await task
        self._label_tasks.clear()
        await self.removals.stop()
