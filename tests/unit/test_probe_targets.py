"""Which local backends the agent probes, and how a UDP target port is probed."""

from __future__ import annotations

import socket

from glia.agent.services import local_targets
from glia.model.service import (
    Backend,
    ClusterService,
    HealthCheck,
    ProbeType,
    Protocol,
    ServicePort,
)
from glia.service.health import Outcome, ProbeTarget, probe_once


def backend(ip: str, port: int, proto: Protocol, node: str = "n1") -> Backend:
    return Backend(ip, port, proto, proto.lower(), port, node, "c1", f"default/{ip}", False)


def dns(*backends: Backend) -> ClusterService:
    return ClusterService(
        namespace="default",
        name="dns",
        cluster="c1",
        cluster_id=1,
        cluster_ip="100.64.0.53",
        ports=[
            ServicePort(53, 53, Protocol.TCP, "tcp"),
            ServicePort(53, 53, Protocol.UDP, "udp"),
            ServicePort(5353, 5353, Protocol.UDP, "mdns"),
        ],
        backends=list(backends),
    )


def test_only_this_nodes_backends_and_tcp_speaks_for_a_shared_port() -> None:
    svc = dns(
        backend("10.1.1.5", 53, Protocol.UDP),
        backend("10.1.1.5", 53, Protocol.TCP),
        backend("10.1.1.5", 5353, Protocol.UDP),
        backend("10.1.2.7", 53, Protocol.TCP, node="n2"),
    )
    got = {(t.ip, t.port, t.protocol) for t in local_targets({"k": svc}, "n1")}
    # Probe results are keyed without the protocol: one target per (ip, port).
    assert got == {("10.1.1.5", 53, Protocol.TCP), ("10.1.1.5", 5353, Protocol.UDP)}


async def test_a_udp_target_is_ready_without_a_handshake() -> None:
    # Nothing listens on this UDP port, and no TCP server either: a TCP probe
    # would fail, a UDP port has no handshake to test.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    for kind in (ProbeType.TCP, ProbeType.HTTP):
        check = HealthCheck(type=kind, timeout=0.5)
        udp = ProbeTarget("default/dns", "127.0.0.1", port, check, Protocol.UDP)
        assert await probe_once(udp) == Outcome(True)
        tcp = ProbeTarget("default/dns", "127.0.0.1", port, check, Protocol.TCP)
        assert (await probe_once(tcp)).ok is False
