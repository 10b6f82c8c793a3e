"""Service resolution (pure): selector, namespace, endpoint state, named ports, readiness."""

from __future__ import annotations

from dataclasses import replace

from glia.model.endpoint import Endpoint, EndpointState
from glia.model.service import (
    Backend,
    HealthCheck,
    LBAlgorithm,
    ProbeType,
    Protocol,
    ServicePort,
    ServiceSpec,
)
from glia.service.resolve import backs, resolve, selects, target_port

SPEC = ServiceSpec(
    namespace="shop",
    name="web",
    cluster_ip="100.64.0.10",
    ports=[
        ServicePort(port=80, target_port="http", name="http"),
        ServicePort(port=53, target_port=5353, protocol=Protocol.UDP, name="dns"),
    ],
    selector={"app": "web", "tier": "front"},
)


def ep(name: str, ip: str, node: str = "n1", **labels: str) -> Endpoint:
    return Endpoint(
        container_id=f"c-{name}",
        namespace="shop",
        name=name,
        cluster="c1",
        node=node,
        ip=ip,
        identity=65792,
        labels={"app": "web", "tier": "front", **labels},
        state=EndpointState.READY,
    )


def test_selects_needs_every_pair() -> None:
    assert selects({"app": "web"}, {"app": "web", "x": "y"})
    assert not selects({"app": "web", "tier": "front"}, {"app": "web"})
    assert not selects({"app": "web"}, {"app": "db"})
    assert not selects({}, {"app": "web"})  # an empty selector selects nothing


def test_backs_checks_namespace_state_and_labels() -> None:
    e = ep("a", "10.1.1.5")
    assert backs(SPEC, e)
    assert not backs(SPEC, replace(e, namespace="other"))
    assert not backs(SPEC, replace(e, state=EndpointState.WAITING_FOR_IDENTITY))
    assert not backs(SPEC, replace(e, state=EndpointState.DISCONNECTING))
    assert not backs(SPEC, replace(e, labels={"app": "web"}))


def test_named_target_ports_come_from_endpoint_labels() -> None:
    http = SPEC.ports[0]
    assert target_port(http, ep("a", "10.1.1.5", **{"port.glia.io/http": "8080"})) == 8080
    assert target_port(http, ep("a", "10.1.1.5")) is None
    for bad in ("x", "0", "65536", "-1", "٣"):
        assert target_port(http, ep("a", "10.1.1.5", **{"port.glia.io/http": bad})) is None
    assert target_port(SPEC.ports[1], ep("a", "10.1.1.5")) == 5353


def test_resolve_builds_one_backend_per_endpoint_and_port() -> None:
    eps = [
        ep("b", "10.1.2.7", node="n2", **{"port.glia.io/http": "8081"}),
        ep("a", "10.1.1.5", **{"port.glia.io/http": "8080"}),
        ep("c", "10.1.1.9"),  # no http port label: only backs dns
        replace(ep("d", "10.1.1.10"), namespace="other"),
        replace(ep("e", "10.1.1.11"), state=EndpointState.WAITING_FOR_IDENTITY),
        replace(ep("f", "10.1.1.12"), labels={"app": "web"}),
    ]
    health = {
        ("shop/web", "10.1.1.5", 8080): True,
        ("shop/web", "10.1.2.7", 8081): False,
        ("shop/web", "10.1.1.5", 5353): True,
        ("shop/web", "10.1.1.9", 5353): True,
        ("other/web", "10.1.2.7", 5353): True,  # another Service's result
    }
    cs = resolve(SPEC, eps, health, "c1", 1)
    assert (cs.namespace, cs.name, cs.cluster, cs.cluster_id, cs.cluster_ip) == (
        "shop",
        "web",
        "c1",
        1,
        "100.64.0.10",
    )
    assert cs.ports == SPEC.ports
    got = [
        (b.frontend_port, b.ip, b.port, b.protocol, b.port_name, b.node, b.ready)
        for b in cs.backends
    ]
    assert got == [
        (53, "10.1.1.5", 5353, Protocol.UDP, "dns", "n1", True),
        (53, "10.1.1.9", 5353, Protocol.UDP, "dns", "n1", True),
        (53, "10.1.2.7", 5353, Protocol.UDP, "dns", "n2", False),  # no probe result yet
        (80, "10.1.1.5", 8080, Protocol.TCP, "http", "n1", True),
        (80, "10.1.2.7", 8081, Protocol.TCP, "http", "n2", False),  # probe failed
    ]
    assert cs.backends[0] == Backend(
        ip="10.1.1.5",
        port=5353,
        protocol=Protocol.UDP,
        port_name="dns",
        frontend_port=53,
        node="n1",
        cluster="c1",
        endpoint="shop/a",
        ready=True,
    )


def test_without_health_checks_every_backend_is_ready() -> None:
    spec = replace(SPEC, health=HealthCheck(type=ProbeType.NONE))
    cs = resolve(spec, [ep("a", "10.1.1.5")], {}, "c1", 1)
    assert [(b.port, b.ready) for b in cs.backends] == [(5353, True)]


def test_health_may_be_a_function() -> None:
    asked: list[tuple[str, str, int]] = []

    def probe(service: str, ip: str, port: int) -> bool | None:
        asked.append((service, ip, port))
        return None if ip.endswith(".9") else True

    cs = resolve(SPEC, [ep("a", "10.1.1.5"), ep("c", "10.1.1.9")], probe, "c1", 1)
    assert [b.ready for b in cs.backends] == [True, False]
    assert asked == [("shop/web", "10.1.1.5", 5353), ("shop/web", "10.1.1.9", 5353)]


def test_service_options_are_carried_over() -> None:
    spec = replace(
        SPEC,
        session_affinity=True,
        affinity_timeout=30,
        lb_algorithm=LBAlgorithm.MAGLEV,
        global_=True,
        shared=False,
        affinity="local",
        affinity_min_ready=3,
    )
    cs = resolve(spec, [], {}, "c1", 1)
    assert cs.backends == []
    assert (cs.session_affinity, cs.affinity_timeout, cs.lb_algorithm) == (True, 30, "maglev")
    assert (cs.global_, cs.shared, cs.affinity, cs.health) == (True, False, "local", spec.health)
    assert cs.affinity_min_ready == 3


def test_output_order_does_not_depend_on_input_order() -> None:
    eps = [ep(f"e{i}", f"10.1.{i % 3}.{i}", **{"port.glia.io/http": "80"}) for i in range(1, 12)]
    assert resolve(SPEC, eps, {}, "c1", 1) == resolve(SPEC, eps[::-1], {}, "c1", 1)
    ips = [b.ip for b in resolve(SPEC, eps, {}, "c1", 1).backends if b.frontend_port == 80]
    assert ips[:3] == ["10.1.0.3", "10.1.0.6", "10.1.0.9"]  # numeric, not text order
