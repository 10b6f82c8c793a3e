"""Host ports (``podman run -p``) of this node's endpoints, kept in the lb maps.

Created by :class:`glia.agent.daemon.Agent`. :class:`HostPortSync` turns the
endpoint manager's endpoints into host-port services
(:func:`glia.service.hostports.host_port_services`, pure) and hands them to
:meth:`glia.agent.services.AgentServices.set_host_ports`: once after the
endpoints are restored (before the services' first sync, so a restarted
agent's first plan keeps the frontends the maps hold), then on every change
the manager reports (:class:`EndpointHooksFanOut`, next to policy).

:func:`attach_netdev` attaches ``from_netdev`` to the interface holding the
node IP (:func:`netdev_ifindex`): clients outside the node reach host ports
through it (docs/hostport.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from pyroute2 import IPRoute

from glia.agent.subsystems import Subsystem
from glia.datapath.loader import Datapath
from glia.datapath.runner import RunDatapath
from glia.endpoint.hooks import EndpointHooks
from glia.model.endpoint import Endpoint
from glia.model.service import ClusterService
from glia.service.hostports import host_port_services

log = logging.getLogger(__name__)


class HostPortTarget(Protocol):
    """What :class:`HostPortSync` programs into (AgentServices; a fake in tests)."""

    async def set_host_ports(self, services: list[ClusterService]) -> None: ...


class HostPortSync:
    def __init__(
        self,
        endpoints: Callable[[], Iterable[Endpoint]],
        target: HostPortTarget,
        *,
        node_ip: str,
        cluster: str,
        cluster_id: int,
    ) -> None:
        self._endpoints = endpoints
        self._target = target
        self._node_ip = node_ip
        self._cluster = cluster
        self._cluster_id = cluster_id
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def current(self) -> list[ClusterService]:
        return host_port_services(self._endpoints(), self._node_ip, self._cluster, self._cluster_id)

    async def sync(self) -> None:
        """Hand the current host ports over now (the agent's start awaits this)."""
        await self._target.set_host_ports(self.current())

    def endpoints_changed(self) -> None:
        """Called synchronously by the manager: one running sync at a time, then one more."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="host-ports")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                await self.sync()
            except Exception as e:  # the next change tries again; the maps' writer retries
                log.warning("host ports: programming failed: %s", e)
            if not self._again:
                return

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None


class EndpointHooksFanOut:
    """The manager's one hooks object: policy first (as before), then host ports."""

    def __init__(self, policy: EndpointHooks, host_ports: HostPortSync) -> None:
        self._policy = policy
        self._host_ports = host_ports

    async def identity_ready(self, identity: int, labels: Mapping[str, str]) -> None:
        await self._policy.identity_ready(identity, labels)

    def endpoints_changed(self) -> None:
        self._policy.endpoints_changed()
        self._host_ports.endpoints_changed()


def netdev_ifindex(node_ip: str) -> tuple[str, int]:
    """(name, ifindex) of the interface holding ``node_ip`` in the calling thread's
    network namespace (the node's); LookupError if none does."""
    with IPRoute() as ipr:
        for a in ipr.addr("dump", family=socket.AF_INET):
            if a.get("IFA_ADDRESS") == node_ip or a.get("IFA_LOCAL") == node_ip:
                index = int(a["index"])
                name = ipr.link("get", index=index)[0].get("IFLA_IFNAME")
                return str(name), index
    raise LookupError(f"no interface holds the node IP {node_ip}")


async def attach_netdev(dp: Datapath, run_dp: RunDatapath, node_ip: str) -> Subsystem:
    """from_netdev on the interface holding ``node_ip``; the host-ports subsystem.

    A failure leaves the agent running (pods, Services and host ports from the
    node and its pods work): the subsystem is degraded and says why.
    """
    status = Subsystem()
    try:
        name, ifindex = await run_dp(lambda: netdev_ifindex(node_ip))
        await run_dp(lambda: dp.attach_netdev(ifindex))
    except Exception as e:
        why = f"from_netdev not attached ({e}): host ports are not reachable from outside"
        log.error("host ports: %s", why)
        status.set(True, why, degraded=True)
        return status
    status.set(True, f"from_netdev on {name} (ifindex {ifindex})")
    return status
