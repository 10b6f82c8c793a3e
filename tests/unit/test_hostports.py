"""Host ports (podman run -p) on the lb maps: the control plane's half (docs/hostport.md).

Pure parts (the request's mappings and their conflicts, the host-port services,
lbplan's flag, the validators' refusals) and the agent's wiring with stand-ins:
AgentServices before and after its first sync, the manager refusing a taken
host port before anything is allocated, and a restarted agent's order
(restore, then the host ports, then the first sync).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from glia.agent.hostports import EndpointHooksFanOut, HostPortSync
from glia.agent.services import AgentServices
from glia.cni.spec import ERR_INVALID_CONFIG, CniError
from glia.datapath.lbtypes import IPPROTO_TCP, IPPROTO_UDP, LB_F_HOSTPORT, Frontend
from glia.dns.names import Sources, Verdict, resolve
from glia.endpoint import netns_check, request
from glia.endpoint.manager import EndpointManager
from glia.endpoint.request import NetnsId, check_host_ports, requested_ports
from glia.kvstore import keys
from glia.model import codec
from glia.model.endpoint import Endpoint, HostPort
from glia.model.service import ClusterService, Protocol, ServicePort
from glia.service import lbplan
from glia.service.hostports import HOSTPORT_NAMESPACE, host_port_services, is_host_port_name
from glia.service.lbstate import LBState
from glia.validate.bounds import ClusterBounds
from glia.validate.endpoints import check_endpoint
from glia.validate.errors import Rejected
from glia.validate.services import check_cluster_service

NODE_IP = "198.18.1.1"
BOUNDS = ClusterBounds.of("c1", 1, "10.1.0.0/16", "100.64.0.0/16")


def _ep(name: str, ip: str, *ports: HostPort, ns: str = "default") -> Endpoint:
    return Endpoint(
        container_id=f"{name}-cid-0123456789",
        namespace=ns,
        name=name,
        cluster="c1",
        node="n1",
        ip=ip,
        identity=(1 << 16) + 300,
        ports=ports,
    )


def _config(*mappings: dict[str, Any]) -> dict[str, Any]:
    return {"name": "glia", "runtimeConfig": {"portMappings": list(mappings)}}


# -- the request's mappings -----------------------------------------------------------


def test_mappings_are_read_from_runtime_config() -> None:
    assert requested_ports({"name": "glia"}) == ()
    got = requested_ports(
        _config(
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},  # listed twice: once
            {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
        )
    )
    assert got == (HostPort(8080, 80, "tcp", ""), HostPort(5353, 53, "udp", "127.0.0.1"))


@pytest.mark.parametrize(
    "mappings",
    [
        [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}],
        [{"hostPort": 80, "containerPort": 80, "hostIP": "::1"}],
        [{"hostPort": 0, "containerPort": 80}],
        # One request claiming one frontend twice.
        [{"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}],
        [
            {"hostPort": 80, "containerPort": 80, "hostIP": "198.18.1.1"},
            {"hostPort": 80, "containerPort": 81},
        ],
    ],
)
def test_mappings_glia_cannot_honour_are_refused(mappings: list[dict[str, Any]]) -> None:
    with pytest.raises(CniError) as e:
        requested_ports(_config(*mappings))
    assert e.value.code == ERR_INVALID_CONFIG


def test_parse_add_carries_the_ports() -> None:
    body = {
        "container_id": "abcdef0123456789",
        "netns": "/run/netns/x",
        "ifname": "eth0",
        "config": _config({"hostPort": 8080, "containerPort": 80}),
    }
    assert request.parse_add(body).ports == (HostPort(8080, 80, "tcp", ""),)


@pytest.mark.parametrize(
    ("held", "asked", "clash"),
    [
        (HostPort(8080, 80), HostPort(8080, 81), True),
        (HostPort(8080, 80), HostPort(8080, 80, "udp"), False),
        (HostPort(8080, 80), HostPort(8081, 80), False),
        (HostPort(8080, 80, host_ip="127.0.0.1"), HostPort(8080, 80), True),
        (HostPort(8080, 80), HostPort(8080, 80, host_ip="198.18.1.1"), True),
        (HostPort(8080, 80, host_ip="127.0.0.1"), HostPort(8080, 80, host_ip="198.18.1.1"), False),
        (HostPort(8080, 80, host_ip="127.0.0.1"), HostPort(8080, 81, host_ip="127.0.0.1"), True),
    ],
)
def test_a_host_port_of_another_endpoint_is_refused_naming_it(
    held: HostPort, asked: HostPort, clash: bool
) -> None:
    other = _ep("web", "10.1.0.5", held)
    if not clash:
        check_host_ports([asked], [other])
        return
    with pytest.raises(CniError) as e:
        check_host_ports([asked], [other])
    assert e.value.code == ERR_INVALID_CONFIG
    assert "default/web" in e.value.msg and "web-cid-0123" in e.value.msg


class _Tripwire:
    def __getattr__(self, attr: str) -> Any:
        raise AssertionError(f"a refused ADD reached {attr}")


def test_the_manager_refuses_a_taken_host_port_before_allocating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netns_check, "check_pod_netns", lambda path: NetnsId(1, 2))
    monkeypatch.setattr(netns_check, "identity", lambda path: NetnsId(1, 2))

    async def run_dp(fn: Any) -> Any:
        raise AssertionError("a refused ADD reached the datapath")

    trip: Any = _Tripwire()
    mgr = EndpointManager(
        cluster="c1",
        cluster_id=1,
        node="n1",
        node_ip=NODE_IP,
        mtu=1450,
        store=trip,
        ipam=trip,
        identities=trip,
        publisher=trip,
        kv=trip,
        datapath=trip,
        run_dp=run_dp,
        labels=trip,
    )
    holder = _ep("web", "10.1.0.5", HostPort(8080, 80))
    mgr._eps["web-cid-0123456789/eth0"] = holder
    body = {
        "container_id": "fedcba9876543210",
        "netns": "/run/netns/y",
        "ifname": "eth0",
        "args": {"K8S_POD_NAME": "api"},
        "config": _config({"hostPort": 8080, "containerPort": 9000}),
    }
    with pytest.raises(CniError) as e:
        asyncio.run(mgr.add(body))
    assert e.value.code == ERR_INVALID_CONFIG and "default/web" in e.value.msg
    assert mgr.all() == [holder]


# -- the host-port services -------------------------------------------------------------


def test_one_service_per_endpoint_and_address() -> None:
    web = _ep(
        "web",
        "10.1.0.5",
        HostPort(8080, 80),
        HostPort(5353, 53, "udp"),
        HostPort(9000, 90, host_ip="127.0.0.1"),
    )
    plain = _ep("db", "10.1.0.6")
    svcs = {s.cluster_ip: s for s in host_port_services([web, plain], NODE_IP, "c1", 1)}
    assert set(svcs) == {NODE_IP, "127.0.0.1"}
    node = svcs[NODE_IP]
    assert node.host_port and node.namespace == HOSTPORT_NAMESPACE
    assert node.name == f"hostport:default/web@{NODE_IP}"
    assert node.ports == [
        ServicePort(8080, 80, Protocol.TCP),
        ServicePort(5353, 53, Protocol.UDP),
    ]
    assert [(b.ip, b.port, b.frontend_port, b.ready, b.node) for b in node.backends] == [
        ("10.1.0.5", 80, 8080, True, "n1"),
        ("10.1.0.5", 53, 5353, True, "n1"),
    ]
    loop = svcs["127.0.0.1"]
    assert [p.port for p in loop.ports] == [8080, 5353, 9000]
    assert all(is_host_port_name(s.namespace, s.name) for s in svcs.values())
    # Every host port of the node ends in the lb plan with the flag, backend = the pod.
    state = lbplan.plan(svcs.values())
    fronts = {f: fp for f, fp in state.frontends.items()}
    assert set(fronts) == {
        Frontend(NODE_IP, 8080, IPPROTO_TCP),
        Frontend(NODE_IP, 5353, IPPROTO_UDP),
        Frontend("127.0.0.1", 8080, IPPROTO_TCP),
        Frontend("127.0.0.1", 5353, IPPROTO_UDP),
        Frontend("127.0.0.1", 9000, IPPROTO_TCP),
    }
    assert all(fp.flags & LB_F_HOSTPORT for fp in fronts.values())
    assert not state.errors and not state.conflicts


def test_no_dns_name_reaches_a_host_port_service() -> None:
    asked: list[tuple[str, str]] = []

    def service(ns: str, name: str) -> None:
        asked.append((ns, name))
        return None

    src = Sources(service=service, pods=lambda name: [])
    for qname in ("hostport:default/web@198.18.1.1.svc.cluster.local", "x..svc.cluster.local"):
        assert resolve(qname, "A", src).verdict != Verdict.ANSWER
    assert all(ns != HOSTPORT_NAMESPACE for ns, _ in asked)


def test_lbplan_sets_the_flag_only_for_host_ports_and_adoption_keeps_it() -> None:
    hp = host_port_services([_ep("web", "10.1.0.5", HostPort(8080, 80))], NODE_IP, "c1", 1)
    user = replace(hp[0], namespace="default", name="web", cluster_ip="100.64.0.9", host_port=False)
    state = lbplan.plan([*hp, user])
    flags = {f.vip: fp.entry.flags for f, fp in state.frontends.items()}
    assert flags[NODE_IP] & LB_F_HOSTPORT and not flags["100.64.0.9"] & LB_F_HOSTPORT
    adopted = LBState.from_maps(state.contents())
    assert {f: fp.host_port for f, fp in adopted.frontends.items()} == {
        f: fp.host_port for f, fp in state.frontends.items()
    }


# -- records ------------------------------------------------------------------------------


def test_a_stored_service_record_with_host_port_is_refused() -> None:
    svc = ClusterService(
        "default", "web", "c1", 1, "100.64.0.9", [ServicePort(80, 80)], [], host_port=True
    )
    key = keys.service("c1", "default", "web")
    with pytest.raises(Rejected, match="host_port"):
        check_cluster_service(key, codec.encode(svc), BOUNDS, {"n1": IPv4Network("10.1.0.0/24")})
    ok = check_cluster_service(
        key, codec.encode(replace(svc, host_port=False)), BOUNDS, {"n1": IPv4Network("10.1.0.0/24")}
    )
    assert not ok.service.host_port


@pytest.mark.parametrize(
    "hp",
    [
        HostPort(0, 80),
        HostPort(80, 70000),
        HostPort(80, 80, "sctp"),
        HostPort(80, 80, host_ip="::1"),
        HostPort(80, 80, host_ip="010.1.1.1"),
    ],
)
def test_endpoint_records_with_a_bad_host_port_are_refused(hp: HostPort) -> None:
    ep = _ep("web", "10.1.0.5", hp)
    key = keys.endpoint("c1", "n1", "default", "web")
    with pytest.raises(Rejected):
        check_endpoint(key, codec.encode(ep), BOUNDS)
    good = replace(ep, ports=(HostPort(8080, 80, "udp", "127.0.0.1"),))
    assert check_endpoint(key, codec.encode(good), BOUNDS).ports == good.ports


# -- the agent --------------------------------------------------------------------------


class FakeLB:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def set_services(self, services: list[ClusterService]) -> None:
        self.calls.append(("set", sorted(s.name for s in services)))

    async def upsert(self, svc: ClusterService) -> None:
        self.calls.append(("upsert", svc.name))

    async def delete(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))

    async def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {}


def _services() -> tuple[AgentServices, FakeLB]:
    async def run_dp(fn: Any) -> Any:
        return fn()

    svc = AgentServices(
        cluster="c1",
        node="n1",
        datapath=object(),  # type: ignore[arg-type]
        run_dp=run_dp,
        publisher=object(),  # type: ignore[arg-type]
        bounds=BOUNDS,
        cidrs=lambda: {"n1": IPv4Network("10.1.0.0/24")},
    )
    lb = FakeLB()
    svc.lb = lb  # type: ignore[assignment]
    return svc, lb


def test_agent_services_host_ports_before_and_after_the_first_sync() -> None:
    web = _ep("web", "10.1.0.5", HostPort(8080, 80, host_ip="127.0.0.1"))
    api = _ep("api", "10.1.0.6", HostPort(9090, 90, host_ip="127.0.0.1"))

    async def go() -> None:
        svc, lb = _services()
        await svc.set_host_ports(host_port_services([web], NODE_IP, "c1", 1))
        assert lb.calls == []  # not ours before the first sync
        await svc.on_synced()
        name = "hostport:default/web@127.0.0.1"
        assert lb.calls == [("set", [name])]
        version = svc.programmed_version
        await svc.set_host_ports(host_port_services([api], NODE_IP, "c1", 1))
        assert lb.calls[1:] == [("delete", name), ("upsert", "hostport:default/api@127.0.0.1")]
        assert svc.programmed_version == version  # DNS-visible state did not change
        assert [s.name for s in svc.programmed()] == ["hostport:default/api@127.0.0.1"]
        assert svc.programmed_service("", "hostport:default/api@127.0.0.1") is None
        await svc.set_host_ports(host_port_services([api], NODE_IP, "c1", 1))
        assert len(lb.calls) == 3  # unchanged: nothing written
        assert svc.status()["host_ports"] == 1

    asyncio.run(go())


def test_endpoint_changes_reach_the_services_through_the_fan_out() -> None:
    eps = [_ep("web", "10.1.0.5", HostPort(8080, 80))]

    class Policy:
        changed = 0

        async def identity_ready(self, identity: int, labels: Any) -> None:
            pass

        def endpoints_changed(self) -> None:
            self.changed += 1

    async def go() -> None:
        svc, lb = _services()
        sync = HostPortSync(lambda: eps, svc, node_ip=NODE_IP, cluster="c1", cluster_id=1)
        await sync.sync()  # the agent's start: restored endpoints, before the first sync
        await svc.on_synced()
        assert lb.calls == [
            ("set", ["hostport:default/web@127.0.0.1", f"hostport:default/web@{NODE_IP}"])
        ]
        policy = Policy()
        hooks = EndpointHooksFanOut(policy, sync)
        eps.clear()
        hooks.endpoints_changed()
        hooks.endpoints_changed()  # while the first runs: one more pass, same result
        for _ in range(100):
            if not svc.programmed():
                break
            await asyncio.sleep(0.01)
        assert policy.changed == 2 and svc.programmed() == []
        assert sorted(c[0] for c in lb.calls[1:]) == ["delete", "delete"]
        await sync.stop()

    asyncio.run(go())
