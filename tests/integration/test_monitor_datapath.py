"""The agent's event monitor on a real loaded datapath: fan-out and the config flags.

The programs are loaded into a private pin directory and run once per packet
with BPF_PROG_TEST_RUN in a test network namespace (as in
test_datapath_testrun.py). A :class:`~glia.agent.monitor.Monitor` reads the
real glia_events_v1 ring from the event loop, behind a real
:class:`~glia.agent.api.ApiServer` on a unix socket; two ``glia monitor``
clients (:meth:`~glia.agent.client.AgentClient.monitor`) stream from it.
The config map's flags are read back from the kernel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import netns_util as nu
import pytest
from two_pods import NODE_IP, VXLAN_PORT, A, B, from_a, two_pod_datapath

from glia.agent.api import ApiServer
from glia.agent.client import AgentClient
from glia.agent.config import AgentConfig
from glia.agent.monitor import Context, Monitor
from glia.datapath.loader import Datapath
from glia.datapath.nodemaps import NodeConfig
from glia.datapath.packets import udp
from glia.datapath.structs import GLIA_CFG_F_POLICY_VERDICTS, GLIA_CFG_F_TRACE
from glia.datapath.testrun import run_program
from glia.model.identity import Identity

T = TypeVar("T")
LABELS = {A[2]: {"app": "client"}, B[2]: {"app": "web"}}
NODE = NodeConfig(NODE_IP, 99, 1, VXLAN_PORT)


@dataclass
class Rig:
    dp: Datapath
    ns: str
    monitor: Monitor
    socket: str

    def send(self, packet: bytes) -> None:
        nu.call_in(
            self.ns, run_program, self.dp.prog_fd("from_endpoint"), packet, ingress_ifindex=A[1]
        )


class Agent:
    """What the API's monitor route reads of the agent: its config and its monitor."""

    def __init__(self, monitor: Monitor) -> None:
        self.cfg = AgentConfig("c1", 1, "n1", NODE_IP)
        self.ready = asyncio.Event()
        self.status: dict[str, Any] = {}
        self.monitor = monitor


def _lookup(n: int) -> Identity | None:
    return Identity(n, LABELS[n]) if n in LABELS else None


@pytest.fixture
def datapath() -> Iterator[tuple[Datapath, str]]:
    with two_pod_datapath("monitor") as got:
        yield got


@pytest.fixture
async def rig(datapath: tuple[Datapath, str]) -> AsyncIterator[Rig]:
    dp, ns = datapath
    # As the agent does: flags written from a crashed run are cleared at start.
    dp.set_flags(GLIA_CFG_F_TRACE | GLIA_CFG_F_POLICY_VERDICTS)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="datapath")

    async def run_dp(fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    endpoints = {A[0]: "default/client", B[0]: "default/web"}
    mon = Monitor(dp, run_dp, lambda: Context("c1/n1", _lookup, endpoints))
    await mon.start()
    tmp = tempfile.mkdtemp(prefix="glia-mon-")
    path = os.path.join(tmp, "agent.sock")
    server = ApiServer(Agent(mon), path)  # type: ignore[arg-type]
    await server.start()
    try:
        yield Rig(dp, ns, mon, path)
    finally:
        await server.stop()
        await mon.stop()
        executor.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


async def _next(items: Iterator[dict[str, Any]]) -> dict[str, Any]:
    return await asyncio.wait_for(asyncio.to_thread(next, items), 10)


async def test_a_drop_reaches_every_subscriber_with_both_ends_labelled(rig: Rig) -> None:
    assert rig.dp.flags() == 0  # cleared at start
    assert rig.dp.config.get() == NODE  # and nothing else changed
    one = AgentClient(rig.socket).monitor(["drop"])
    two = AgentClient(rig.socket).monitor(["drop", "policy-verdict"])
    assert (await _next(one))["types"] == ["drop"]
    assert (await _next(two))["types"] == ["drop", "policy-verdict"]
    assert rig.dp.flags() == GLIA_CFG_F_POLICY_VERDICTS  # two wants allows too
    # A pod's UDP to its node's VXLAN port: dropped as it leaves the pod.
    await asyncio.to_thread(rig.send, from_a(NODE_IP, udp(40000, VXLAN_PORT)))
    ev = await _next(one)
    # Two also sees the egress policy's verdict (the pod is open: allowed),
    # taken before the overlay port check, then the same drop.
    verdict = await _next(two)
    assert (verdict["type"], verdict["action"], verdict["match"]) == (
        "policy-verdict",
        "allow",
        "not-enforced",
    )
    assert await _next(two) == ev
    assert (ev["type"], ev["reason"], ev["direction"], ev["proto"], ev["node"]) == (
        "drop",
        "overlay-port",
        "egress",
        "udp",
        "c1/n1",
    )
    assert ev["src"] == {
        "ip": A[0],
        "port": 40000,
        "identity": A[2],
        "identity_name": None,
        "labels": {"app": "client"},
        "endpoint": "default/client",
    }
    assert ev["dst"] == {
        "ip": NODE_IP,
        "port": VXLAN_PORT,
        "identity": 1,
        "identity_name": "host",
        "labels": {"reserved:host": ""},
        "endpoint": None,
    }
    one.close()
    two.close()
    await _until(lambda: rig.monitor.status()["subscribers"] == 0, "both clients gone")
    await _until(lambda: rig.dp.flags() == 0, "the flags cleared after the last subscriber")
    assert rig.dp.config.get() == NODE


async def test_traces_are_emitted_only_while_someone_asks(rig: Rig) -> None:
    drops = AgentClient(rig.socket).monitor(["drop"])
    await _next(drops)
    forwarded = from_a(B[0], udp(40000, 53))
    await asyncio.to_thread(rig.send, forwarded)  # no trace: nobody asked
    traces = AgentClient(rig.socket).monitor(["trace"])
    await _next(traces)
    assert rig.dp.flags() == GLIA_CFG_F_TRACE
    await asyncio.to_thread(rig.send, forwarded)
    ev = await _next(traces)
    assert (ev["type"], ev["obs_point"], ev["reason"]) == ("trace", "to-endpoint", "forwarded")
    assert (ev["src"]["labels"], ev["dst"]["labels"], ev["dst"]["endpoint"]) == (
        {"app": "client"},
        {"app": "web"},
        "default/web",
    )
    traces.close()
    await _until(lambda: rig.dp.flags() == 0, "the trace flag cleared")
    assert rig.monitor.events == 1  # the first forward made no event
    drops.close()


async def _until(cond: Any, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
