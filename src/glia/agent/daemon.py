"""The agent: composes the node's subsystems and runs them.

``glia agent --config FILE`` runs it (:func:`glia.agent.process.run`). Start order (stop
is the reverse): kvstore client and lease publisher, datapath (maps reused from the
pins, programs loaded, VXLAN device, from_netdev on the node IP's interface), node
registration and pod CIDR, IPAM and identity allocator, endpoint restore, the
endpoints' host ports (handed to the Services before their first sync), the remote
clusters (ClusterMesh: their first lists, briefly awaited), our ipcache, identity and
Service reflectors, policy (its reflector, then one sync of the policy maps), then
ready. The API socket is up from the start so ``glia status`` can tell what the
agent waits for.

Blocking kernel work (libbpf, netlink) runs on one worker thread: the event
loop stays responsive and datapath changes are serialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from glia import native
from glia.agent.config import AgentConfig, reserved_networks
from glia.agent.dns_start import start_dns
from glia.agent.docker_start import DockerPlugin, runtime_labels
from glia.agent.egress_start import start_egress
from glia.agent.hostports import EndpointHooksFanOut, HostPortSync, attach_netdev
from glia.agent.identities import IdentityCache
from glia.agent.ipcache import IPCacheSync
from glia.agent.monitor import Monitor, agent_context
from glia.agent.policy import PolicySync
from glia.agent.services import AgentServices
from glia.agent.subsystems import Subsystem, refused
from glia.clustermesh.mesh import ClusterMesh
from glia.clustermesh.sinks import MeshSinks
from glia.cni.deletion_queue import DeletionQueue
from glia.datapath import netlink
from glia.datapath.loader import Datapath
from glia.dns.pods import PodNames
from glia.dns.server import DnsServer
from glia.endpoint.manager import EndpointManager
from glia.endpoint.store import EndpointStore
from glia.identity.allocator import IdentityAllocator, MasterKeyKeeper
from glia.ipam.local import LocalIPAM
from glia.ipam.pool import chained_block
from glia.kvstore import keys
from glia.kvstore.client import KVClient
from glia.kvstore.errors import PermissionDenied
from glia.kvstore.grace import DeferredDeletes, defer_deletes
from glia.kvstore.publisher import LeasedPublisher
from glia.kvstore.reflector import Reflector
from glia.model import codec
from glia.model.cluster import ClusterInfo
from glia.model.node import Node, PodCIDRAllocation
from glia.policy import store as policy_store
from glia.validate.bounds import ClusterBounds

log = logging.getLogger(__name__)
T = TypeVar("T")

VXLAN_DEVICE = "glia_vxlan"
MESH_FIRST_SYNC = 3.0  # seconds the start waits for the remote clusters' first lists


class Agent:
    def __init__(self, cfg: AgentConfig, repo_root: Path | None = None) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self.boot_id = uuid.uuid4().hex[:12]
        self.status: dict[str, Subsystem] = {
            n: Subsystem()
            for n in ("kvstore", "datapath", "node", "endpoints", "ipcache", "services", "policy")
        }
        self.ready = asyncio.Event()
        self.kv: KVClient | None = None
        self.config_kv: KVClient | None = None
        self.identities: IdentityCache | None = None
        self.mesh: ClusterMesh | None = None  # the CLI path's user, for apply (optional)
        self.publisher: LeasedPublisher | None = None
        self.datapath: Datapath | None = None
        self.endpoints: EndpointManager | None = None
        self.ipcache: IPCacheSync | None = None
        self.services: AgentServices | None = None
        self.policy: PolicySync | None = None
        self.host_ports: HostPortSync | None = None
        self._policy_reflector: Reflector | None = None
        self.monitor: Monitor | None = None  # datapath events for `glia monitor`
        self.dns: DnsServer | None = None
        self.docker: DockerPlugin | None = None
        self.pod_names: PodNames | None = None
        self.node: Node | None = None
        self.chained_cidr: str | None = None  # the pod CIDR's block for chained plugins
        self._reflectors: list[Reflector] = []
        self._ipcache_reflectors: list[Reflector] = []
        self._deferred: list[DeferredDeletes] = []  # deletes held while leases may come back
        self._services_reflector: Reflector | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="datapath")
        self._obj_dir = Path(cfg.bpf_obj_dir) if cfg.bpf_obj_dir else _default_obj_dir(repo_root)

    async def run_dp(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # ---- lifecycle -----------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        self.kv = await KVClient.connect(
            cfg.etcd,
            check_read=[keys.STATE],
            check_write=[keys.node(cfg.cluster, cfg.node), keys.ipcaches(cfg.cluster, cfg.node)],
        )
        if cfg.config_etcd is not None:
            self.config_kv = await KVClient.connect(
                cfg.config_etcd, check_read=[keys.CONFIG], check_write=[keys.CONFIG]
            )
        self.status["kvstore"].set(True, f"connected to {', '.join(cfg.etcd.endpoints)}")
        self.publisher = LeasedPublisher(self.kv, cfg.lease_ttl)
        await self.publisher.start()

        self.datapath = Datapath(Path(cfg.bpf_pin_dir), self._obj_dir)
        await self.run_dp(self.datapath.load)
        vxlan = await self.run_dp(lambda: netlink.ensure_vxlan(VXLAN_DEVICE, port=cfg.vxlan_port))
        dp = self.datapath
        await self.run_dp(
            lambda: dp.configure(
                node_ip=cfg.node_ip,
                vxlan_ifindex=vxlan,
                cluster_id=cfg.cluster_id,
                vxlan_port=cfg.vxlan_port,
            )
        )
        await self.run_dp(lambda: dp.attach_overlay(vxlan))
        assert self.datapath is not None
        self.status["hostports"] = await attach_netdev(self.datapath, self.run_dp, self.cfg.node_ip)
        if cfg.socket_lb_cgroup:
            cgroup = Path(cfg.socket_lb_cgroup)
            await self.run_dp(lambda: dp.attach_socket_lb(cgroup))
            socket_lb = f"socket LB on cgroup {cgroup}"
        else:
            await self.run_dp(dp.detach_socket_lb)
            socket_lb = "socket LB off (VIPs balanced per packet)"
        self.status["datapath"].set(
            True, f"programs loaded, maps pinned at {cfg.bpf_pin_dir}; {socket_lb}"
        )
        # The events ring's one reader; it also clears the flags a crashed run left on.
        monitor = Monitor(dp, self.run_dp, lambda: agent_context(self))
        await monitor.start()
        self.monitor = monitor

        cidr = await self._register_node()
        state_dir = Path(cfg.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.chained_cidr = chained_block(cidr, cfg.chained_prefix)  # ValueError names it
        ipam = LocalIPAM(state_dir / "ipam.json", cidr, reserved=self.chained_cidr)
        identities = IdentityAllocator(
            self.kv, self.publisher, cfg.cluster, cfg.cluster_id, cfg.node
        )
        self.docker = DockerPlugin.configured(cfg, state_dir)
        labels = runtime_labels(cfg, self.docker)
        self.endpoints = EndpointManager(
            cluster=cfg.cluster,
            cluster_id=cfg.cluster_id,
            node=cfg.node,
            node_ip=cfg.node_ip,
            mtu=cfg.mtu,
            store=EndpointStore(state_dir),
            ipam=ipam,
            identities=identities,
            publisher=self.publisher,
            kv=self.kv,
            datapath=self.datapath,
            run_dp=self.run_dp,
            labels=labels,
            label_filter=cfg.label_filter(),
            # resolv.conf names no port: only DNS on 53 can be handed to pods.
            dns_nameserver=cfg.node_ip if cfg.dns_port == 53 else None,
        )
        stats = await self.endpoints.restore()
        summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items())
        self.status["endpoints"].set(True, f"restored: {summary}")
        if self.docker:
            self.status["docker"] = self.docker.status
            await self.docker.start(ipam, self.endpoints)

        bounds = ClusterBounds.of(cfg.cluster, cfg.cluster_id, cfg.pod_pool, cfg.service_cidr)
        self.ipcache = IPCacheSync(self.datapath, self.run_dp, bounds, cfg.node, cfg.node_ip)
        self.identities = IdentityCache(bounds)
        ipcache = self.ipcache
        self.services = AgentServices(
            cluster=cfg.cluster,
            node=cfg.node,
            datapath=self.datapath,
            run_dp=self.run_dp,
            publisher=self.publisher,
            bounds=bounds,
            cidrs=lambda: ipcache.cidrs,
        )
        self.ipcache.on_cidrs_changed(self.services.revalidate)
        self.host_ports = HostPortSync(
            self.endpoints.all,
            self.services,
            node_ip=cfg.node_ip,
            cluster=cfg.cluster,
            cluster_id=cfg.cluster_id,
        )
        if cfg.masquerade:
            await self._start_egress(cidr)
        self._wire_policy()
        # Before the services' first sync, after restore: a restarted agent's first
        # plan keeps the host-port frontends the maps hold.
        await self.host_ports.sync()
        if cfg.clustermesh_dir:
            # Before our own first lists: the first writes of the ipcache and
            # the lb maps then hold the remote clusters' state too, instead of
            # deleting what an earlier run imported until they are read again.
            await self._start_mesh()
        for part, prefix in (
            ("nodes", keys.nodes(cfg.cluster)),
            ("podcidrs", keys.podcidr_nodes(cfg.cluster)),
            ("ip", keys.ipcaches(cfg.cluster)),
        ):
            handler = defer_deletes(self.ipcache.handler(part), self.kv)
            self._deferred.append(handler)
            r = Reflector(self.kv, prefix, handler, name=f"ipcache: {part}")
            await r.start()
            self._reflectors.append(r)
            self._ipcache_reflectors.append(r)
        # Identities this node uses whose master keys vanish are re-created.
        # One watch feeds the identity cache and re-creates master keys of
        # identities this node uses that vanish.
        keeper = Reflector(
            self.kv,
            keys.identity_ids(cfg.cluster),
            self.identities.handler(also=MasterKeyKeeper(identities)),
            name="identities",
        )
        await keeper.start()
        self._reflectors.append(keeper)

        self.services.start()
        svc_reflector = Reflector(
            self.kv, keys.services(cfg.cluster), self.services, name="services"
        )
        await svc_reflector.start()
        self._reflectors.append(svc_reflector)
        self._services_reflector = svc_reflector
        await self._start_policy()
        await self._start_dns(bounds)
        self._refresh_status()
        self.ready.set()
        log.info("agent %s/%s ready (pod CIDR %s)", cfg.cluster, cfg.node, cidr)

    def _wire_policy(self) -> None:
        """Policy hears of every identity (the mesh's too) and local endpoint from now on."""
        assert self.datapath and self.ipcache and self.identities and self.endpoints
        dp, endpoints = self.datapath, self.endpoints
        self.policy = PolicySync(self.cfg.cluster, dp.policy, self.run_dp, cidr_sink=self.ipcache)
        self.identities.listen(self.policy.identity_changed)
        self.policy.set_endpoint_source(lambda: ((e.identity, e.labels) for e in endpoints.all()))
        assert self.host_ports is not None
        endpoints.hooks = EndpointHooksFanOut(self.policy, self.host_ports)

    async def _start_policy(self) -> None:
        """List the policies (the node's user reads glia/config/v1/policies/), then
        program the maps once from everything listed."""
        assert self.kv and self.policy
        prefix = keys.configs(policy_store.KIND)
        try:
            await self.kv.check_read(prefix)
        except PermissionDenied as e:
            # Networking goes on; nothing is enforced and status says why.
            self.policy.failure = f"{e}: create the etcd roles again (glia kvstore roles)"
            log.error("policy: %s", self.policy.failure)
            return
        await self.policy.adopt_cidr()
        r = Reflector(self.kv, prefix, self.policy.policy_handler(), name="policies")
        await r.start()
        self._reflectors.append(r)
        self._policy_reflector = r
        await self.policy.initial_sync()

    async def _start_egress(self, cidr: str) -> None:
        """Masquerade and node routes (glia.agent.egress), kept up to date."""
        assert self.ipcache is not None
        self.status["egress"] = Subsystem()
        await start_egress(self.cfg.node_ip, cidr, self.ipcache, self.status["egress"])

    async def _start_dns(self, bounds: ClusterBounds) -> None:
        """Serve DNS (glia.agent.dns); nothing when dns_port is 0."""
        if self.cfg.dns_port == 0:
            return
        assert self.kv and self.services
        self.status["dns"] = Subsystem()
        self.dns, self.pod_names, r = await start_dns(
            self.cfg, self.kv, self.services, bounds, self.status["dns"]
        )
        self._reflectors.append(r)

    async def _register_node(self) -> str:
        cfg = self.cfg
        assert self.kv and self.publisher
        node = Node(
            name=cfg.node,
            cluster=cfg.cluster,
            cluster_id=cfg.cluster_id,
            node_ip=cfg.node_ip,
            boot_id=self.boot_id,
        )
        key = keys.node(cfg.cluster, cfg.node)
        await self.publisher.publish(key, codec.encode(node))
        self.status["node"].set(False, "waiting for the operator to allocate a pod CIDR")
        delay = 0.1
        while True:
            kv = await self.kv.get(keys.podcidr_node(cfg.cluster, cfg.node))
            if kv is not None:
                alloc = codec.decode(PodCIDRAllocation, kv.value)
                break
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 2.0)
        node = replace(node, pod_cidr=alloc.cidr)
        await self.publisher.publish(key, codec.encode(node))
        self.node = node
        self.status["node"].set(True, f"registered, pod CIDR {alloc.cidr}")
        return alloc.cidr

    async def _start_mesh(self) -> None:
        """Read the remote clusters of ``clustermesh_dir`` in the background, after
        waiting up to :data:`MESH_FIRST_SYNC` s for their first lists (a remote
        etcd that is down delays the start by that much, never more)."""
        cfg = self.cfg
        if not cfg.pod_pool:
            raise ValueError(
                "clustermesh_dir needs pod_pool: remote clusters are checked against it"
            )
        assert self.ipcache and self.identities and self.services
        local = ClusterInfo(cfg.cluster, cfg.cluster_id, [cfg.pod_pool], cfg.service_cidr or None)
        sinks = MeshSinks(self.ipcache, self.identities, self.services)
        reserved = reserved_networks(cfg)
        self.mesh = ClusterMesh(cfg.clustermesh_dir, local, sinks, reserved=reserved)
        await self.mesh.start()
        self.status["clustermesh"] = Subsystem()
        behind = await self.mesh.wait_synced(MESH_FIRST_SYNC)
        if behind:
            log.warning(
                "clustermesh: %s not listed within %g s; starting without (imported when they are)",
                ", ".join(behind), MESH_FIRST_SYNC,
            )  # fmt: skip

    async def stop(self) -> None:
        """Stop without tearing down: pinned maps and attached programs keep
        carrying traffic, and keys live until the lease's TTL so a restart
        within it is invisible to the rest of the cluster."""
        for server in (self.dns, self.docker):
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()
        if self.mesh is not None:
            with contextlib.suppress(Exception):
                await self.mesh.stop()
        for r in reversed(self._reflectors):
            with contextlib.suppress(Exception):
                await r.stop()
        # A held delete is not applied on the way out: the maps outlive the agent,
        # and the next run diffs them against the kvstore anyway.
        for d in self._deferred:
            with contextlib.suppress(Exception):
                await d.stop(deliver=False)
        if self.host_ports:
            await self.host_ports.stop()
        if self.policy:
            await self.policy.stop()
        if self.services:
            await self.services.stop()
        if self.endpoints:
            await self.endpoints.stop()
        if self.publisher:
            with contextlib.suppress(Exception):
                await self.publisher.stop(revoke=False)
        for client in (self.config_kv, self.kv):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
        if self.monitor is not None:
            with contextlib.suppress(Exception):
                await self.monitor.stop()
        if self.datapath:
            dp = self.datapath
            await self.run_dp(dp.close)
        self._executor.shutdown(wait=False)

    async def replay_queued_deletes(self, queue: DeletionQueue) -> int:
        assert self.endpoints is not None
        done = 0
        for entry in queue.pending():
            if entry.request is not None:
                try:
                    await self.endpoints.delete(entry.request)
                    done += 1
                except Exception as e:
                    log.warning("queued CNI DEL %s failed: %s", entry.path, e)
            queue.remove(entry)
        if done:
            log.info("replayed %d CNI DELs queued while the agent was down", done)
        return done

    def _refresh_status(self) -> None:
        """ipcache, services and mesh health from what they do now, not from start-up.

        A remote cluster that is down, stale or refused, or whose records are
        rejected, leaves the agent healthy (the mesh subsystem is degraded and
        says which): its failure must not look like this node's.
        """
        if self.mesh is not None:
            clusters = self.mesh.status()["clusters"]
            behind = [c["name"] for c in clusters if c["state"] != "synced" or c["rejected"]]
            self.status["clustermesh"].set(
                True,
                self.mesh.healthy_summary,
                degraded=bool(behind or self.mesh.watcher.errors),
            )
        if self.ipcache is not None:
            st = self.ipcache.status()
            lagging = [r.name for r in self._ipcache_reflectors if not r.synced.is_set()]
            if lagging or not st["synced"]:
                self.status["ipcache"].set(False, f"not in sync: waiting for {', '.join(lagging)}")
            else:
                base = f"in sync with the kvstore: {st['entries']} entries, {st['nodes']} nodes"
                problems = refused(st)
                self.status["ipcache"].set(
                    True, f"{base}; {problems}" if problems else base, degraded=bool(problems)
                )
        if self.services is not None and self._services_reflector is not None:
            st = self.services.status()
            if not self._services_reflector.synced.is_set():
                self.status["services"].set(False, "not in sync with the kvstore")
            else:
                base = f"load-balancer maps in sync with the kvstore: {st['services']} services"
                problems = refused(st)
                self.status["services"].set(
                    True, f"{base}; {problems}" if problems else base, degraded=bool(problems)
                )

        if self.policy is not None:
            ok, msg, degraded = self.policy.summary()
            self.status["policy"].set(ok, msg, degraded=degraded)

    def healthy(self) -> bool:
        """Every subsystem does its job (degraded ones too: they refuse bad input)."""
        self._refresh_status()
        return self.ready.is_set() and all(s.ok for s in self.status.values())

    def status_dict(self) -> dict[str, Any]:
        healthy = self.healthy()
        eps = self.endpoints.all() if self.endpoints else []
        return {
            "node": codec.to_dict(self.node) if self.node else None,
            "cluster": self.cfg.cluster,
            "cluster_id": self.cfg.cluster_id,
            "kvstore": {"endpoints": self.cfg.etcd.endpoints, "ok": self.status["kvstore"].ok},
            "datapath": {
                "pin_dir": self.cfg.bpf_pin_dir,
                "ok": self.status["datapath"].ok,
                "socket_lb_cgroup": self.cfg.socket_lb_cgroup or None,
            },
            "chained_cidr": self.chained_cidr,
            "endpoints": len(eps),
            "identities": len({e.identity for e in eps}),
            "uptime": round(time.time() - self.started_at, 1),
            "healthy": healthy,
            "degraded": sorted(n for n, s in self.status.items() if s.ok and s.degraded),
            "subsystems": {
                n: {"ok": s.ok, "state": s.state, "msg": s.msg} for n, s in self.status.items()
            },
            "ipcache": self.ipcache.status() if self.ipcache else None,
            "identity_cache": self.identities.status() if self.identities else None,
            "services": self.services.status() if self.services else None,
            "policy": self.policy.status() if self.policy else None,
            "monitor": self.monitor.status() if self.monitor else None,
            "dns": self.dns.status() if self.dns else None,
        }


def _default_obj_dir(repo_root: Path | None) -> Path:
    # repo_root: a source tree's build/bpf; else glia.native decides (env, package, checkout).
    return repo_root / "build" / "bpf" if repo_root else native.bpf_obj_dir()
