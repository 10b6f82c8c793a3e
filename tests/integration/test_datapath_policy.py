"""Network policy in BPF, one packet at a time (BPF_PROG_TEST_RUN).

Policies are computed by the real engine (glia.policy.engine) and programmed
through glia.datapath.policymap; each case runs from_endpoint (a pod sends:
egress policy, then the local receiver's ingress policy) or to_endpoint (the
node's stack sends) on a crafted packet and checks the verdict, the policy
conntrack entries and the events: default allow, default deny once selected,
L3 and L4 allows, deny over allow, replies and open connections passing, a
Service judged against its backend, the node's implicit allow, world.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import netns_util as nu
import pytest

from glia.datapath.ct import CT_F_VIA_STACK, ct_entries
from glia.datapath.drop import Direction, PolicyMatch, Reason
from glia.datapath.events import EventReader, EventType
from glia.datapath.loader import Datapath, unpin
from glia.datapath.nodemaps import EndpointInfo, IPCacheInfo
from glia.datapath.packets import (
    ETH_P_IP,
    IPPROTO_TCP,
    TCP_ACK,
    TCP_SYN,
    ethernet,
    ipv4,
    tcp,
    udp,
)
from glia.datapath.policymap import PolicyMapRow
from glia.datapath.testrun import TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, RunResult, run_program
from glia.model.identity import NAMESPACE_LABEL, ReservedIdentity
from glia.policy.engine import PolicyEngine
from glia.policy.entries import EndpointPolicy
from glia.policy.manifest import parse_policy
from glia.policy.model import Direction as PolicyDirection
from glia.service import lbdiff, lbplan

NODE_IP = "198.18.0.1"
REMOTE_NODE_IP = "198.18.0.2"
WORLD_IP = "203.0.113.9"
VIP = "10.96.0.10"


@dataclass(frozen=True)
class Pod:
    ip: str
    ifindex: int
    identity: int
    mac: str
    gw: str
    labels: dict[str, str] = field(default_factory=dict)


def pod(n: int, app: str) -> Pod:
    return Pod(
        f"10.1.1.{n}",
        10 + n,
        0x10100 + n,
        f"02:00:00:00:0{n}:01",
        f"02:00:00:00:0{n}:02",
        {"app": app, NAMESPACE_LABEL: "default"},
    )


CLIENT, WEB, OTHER = pod(1, "client"), pod(2, "web"), pod(3, "other")
PODS = (CLIENT, WEB, OTHER)
REMOTE = ("10.1.2.9", 0x10200)  # a pod on another node: (ip, identity)


def cnp(name: str, spec: dict[str, Any]) -> Any:
    return parse_policy(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        },
        cluster="c1",
    )


@dataclass
class Rig:
    dp: Datapath
    ns: str
    engine: PolicyEngine = field(default_factory=lambda: PolicyEngine("c1"))
    programmed: dict[int, EndpointPolicy] = field(default_factory=dict)

    def policies(self, *specs: tuple[str, dict[str, Any]]) -> None:
        """Make these the only policies and program every local endpoint."""
        self.engine.set_policies([cnp(name, spec) for name, spec in specs])
        for p in PODS:
            new = self.engine.compute(p.labels)
            self.dp.policy.apply(p.identity, self.programmed.get(p.identity), new)
            self.programmed[p.identity] = new

    def send(self, sender: Pod, l3: bytes) -> RunResult:
        packet = ethernet(sender.gw, sender.mac, ETH_P_IP, l3)
        return nu.call_in(
            self.ns,
            run_program,
            self.dp.prog_fd("from_endpoint"),
            packet,
            ingress_ifindex=sender.ifindex,
        )

    def from_stack(self, l3: bytes, to: Pod, port: Pod | None = None) -> RunResult:
        """to_endpoint on ``port``'s veth (``to``'s unless given): a dummy device of
        that ifindex in the rig's namespace stands for it."""
        packet = ethernet(to.mac, to.gw, ETH_P_IP, l3)
        via = (port or to).ifindex
        return nu.call_in(self.ns, run_program, self.dp.prog_fd("to_endpoint"), packet, ifindex=via)

    def syn(self, src: Pod, dst: str, dport: int, sport: int = 40000) -> int:
        return self.send(
            src, ipv4(src.ip, dst, tcp(sport, dport, TCP_SYN), proto=IPPROTO_TCP)
        ).retval


@pytest.fixture(scope="module")
def module_rig() -> Iterator[Rig]:
    nu.require_bpffs()
    nu.cleanup_stale()
    ns = f"{nu.prefix()}-polrun"
    dp = Datapath(nu.pin_dir("polrun"), nu.bpf_objects())
    try:
        nu.add_netns(ns)
        for p in PODS:  # the devices to_endpoint runs "on" (skb->ifindex); no dummy module
            i = str(p.ifindex)
            nu.run(
                [
                    "ip",
                    "-n",
                    ns,
                    "link",
                    "add",
                    f"glia-p{i}",
                    "index",
                    i,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    f"glia-q{i}",
                    "index",
                    str(100 + p.ifindex),
                ]
            )
        dp.load()
        dp.configure(node_ip=NODE_IP, vxlan_ifindex=99, cluster_id=1, vxlan_port=8472)
        rig = Rig(dp, ns)
        for p in PODS:
            dp.endpoints.upsert(p.ip, EndpointInfo(p.ifindex, p.identity, p.mac, p.gw))
            # As the agent does: the ipcache holds this node's endpoints too.
            dp.ipcache.upsert(f"{p.ip}/32", IPCacheInfo(p.identity, None, 1))
            rig.engine.upsert_identity(p.identity, p.labels, "c1")
        rig.engine.upsert_identity(REMOTE[1], {"app": "remote", NAMESPACE_LABEL: "default"}, "c1")
        dp.ipcache.upsert(f"{REMOTE[0]}/32", IPCacheInfo(REMOTE[1], REMOTE_NODE_IP, 1))
        dp.ipcache.upsert(f"{NODE_IP}/32", IPCacheInfo(int(ReservedIdentity.HOST), None, 1))
        yield rig
    finally:
        dp.close()
        unpin(dp.pin_dir)
        nu.del_netns(ns)


@pytest.fixture
def rig(module_rig: Rig) -> Iterator[Rig]:
    module_rig.dp.ct.flush()
    yield module_rig
    module_rig.policies()
    module_rig.dp.ct.flush()


WEB_FROM_CLIENT_80 = (
    "web",
    {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    },
)


def test_no_policy_allows_and_tracks_every_connection(rig: Rig) -> None:
    assert rig.syn(CLIENT, WEB.ip, 80) == TC_ACT_REDIRECT
    kinds = {(r.kind, r.src, r.dst) for r in ct_entries(rig.dp)}
    assert kinds == {("egress", CLIENT.ip, WEB.ip), ("ingress", CLIENT.ip, WEB.ip)}


def test_ingress_allow_by_identity_and_port_denies_the_rest(rig: Rig) -> None:
    rig.policies(WEB_FROM_CLIENT_80)
    with EventReader(rig.dp.pin_dir) as events:
        events.poll()
        assert rig.syn(CLIENT, WEB.ip, 80) == TC_ACT_REDIRECT
        assert rig.syn(CLIENT, WEB.ip, 81, sport=40001) == TC_ACT_SHOT
        assert rig.syn(OTHER, WEB.ip, 80, sport=40002) == TC_ACT_SHOT
        seen = nu.collect_events(events, lambda evs: len(evs) >= 2, timeout=2)
    drops = [e for e in seen if e.reason is Reason.DROP_POLICY]
    assert {(e.src_identity, e.dst_identity, e.dport) for e in drops} == {
        (CLIENT.identity, WEB.identity, 81),
        (OTHER.identity, WEB.identity, 80),
    }
    assert all(e.direction == Direction.INGRESS.label for e in drops)
    # Egress of the client is open: nothing was judged there.
    assert rig.syn(CLIENT, OTHER.ip, 81, sport=40003) == TC_ACT_REDIRECT


def test_replies_and_open_connections_pass_a_policy_change(rig: Rig) -> None:
    assert rig.syn(CLIENT, WEB.ip, 80) == TC_ACT_REDIRECT  # open, no policy yet
    rig.policies(
        ("lockdown", {"endpointSelector": {}, "ingress": [{}], "egress": [{}]}),
    )
    # The connection's packets both ways still pass; a new one does not.
    ack = ipv4(CLIENT.ip, WEB.ip, tcp(40000, 80, TCP_ACK), proto=IPPROTO_TCP)
    assert rig.send(CLIENT, ack).retval == TC_ACT_REDIRECT
    reply = ipv4(WEB.ip, CLIENT.ip, tcp(80, 40000, TCP_SYN | TCP_ACK), proto=IPPROTO_TCP)
    assert rig.send(WEB, reply).retval == TC_ACT_REDIRECT
    assert rig.syn(CLIENT, WEB.ip, 80, sport=40100) == TC_ACT_SHOT
    assert rig.syn(WEB, CLIENT.ip, 22, sport=40101) == TC_ACT_SHOT


def test_replies_pass_a_default_deny_egress(rig: Rig) -> None:
    rig.policies(
        WEB_FROM_CLIENT_80,
        ("web-egress", {"endpointSelector": {"matchLabels": {"app": "web"}}, "egress": [{}]}),
    )
    assert rig.syn(CLIENT, WEB.ip, 80) == TC_ACT_REDIRECT
    reply = ipv4(WEB.ip, CLIENT.ip, tcp(80, 40000, TCP_SYN | TCP_ACK), proto=IPPROTO_TCP)
    assert rig.send(WEB, reply).retval == TC_ACT_REDIRECT
    assert rig.syn(WEB, CLIENT.ip, 80, sport=40200) == TC_ACT_SHOT  # its own connection


def test_deny_wins_over_allow(rig: Rig) -> None:
    rig.policies(
        (
            "web",
            {
                "endpointSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"fromEndpoints": [{}]}],
                "ingressDeny": [
                    {"toPorts": [{"ports": [{"port": "8000", "endPort": 8080}]}]},
                ],
            },
        )
    )
    assert rig.syn(CLIENT, WEB.ip, 80) == TC_ACT_REDIRECT
    kinds = (EventType.DROP, EventType.POLICY_VERDICT)
    with EventReader(rig.dp.pin_dir, types=kinds) as events:
        events.poll()
        assert rig.syn(CLIENT, WEB.ip, 8042, sport=40300) == TC_ACT_SHOT
        seen = nu.collect_events(events, lambda evs: len(evs) >= 2, timeout=2)
    # A verdict and a drop, both saying the deny came from an L4 entry.
    assert sorted((e.type, e.reason, e.dport, e.match) for e in seen) == [
        (EventType.DROP, Reason.DROP_POLICY, 8042, PolicyMatch.L4),
        (EventType.POLICY_VERDICT, Reason.DROP_POLICY, 8042, PolicyMatch.L4),
    ]
    udp_pkt = ipv4(CLIENT.ip, WEB.ip, udp(40301, 8080), proto=17)
    assert rig.send(CLIENT, udp_pkt).retval == TC_ACT_SHOT  # ANY: TCP and UDP


def test_egress_to_remote_pods_and_world(rig: Rig) -> None:
    rig.policies(
        (
            "client-out",
            {
                "endpointSelector": {"matchLabels": {"app": "client"}},
                "egress": [
                    {"toEndpoints": [{"matchLabels": {"app": "remote"}}]},
                    {"toCIDR": ["203.0.113.0/24"], "toPorts": [{"ports": [{"port": "443"}]}]},
                ],
            },
        )
    )
    assert rig.syn(CLIENT, REMOTE[0], 80) == TC_ACT_REDIRECT  # into the tunnel
    assert rig.syn(CLIENT, WEB.ip, 80, sport=40400) == TC_ACT_SHOT
    # toCIDR needs the agent's CIDR identity in the ipcache; without it the
    # address is plain world, which no rule here names.
    assert rig.syn(CLIENT, WORLD_IP, 443, sport=40401) == TC_ACT_SHOT


def test_service_traffic_is_judged_against_the_backend(rig: Rig) -> None:
    from glia.model.service import Backend, ClusterService, Protocol, ServicePort

    svc = ClusterService(
        "default",
        "web",
        "c1",
        1,
        VIP,
        [ServicePort(80, 8080)],
        [Backend(WEB.ip, 8080, Protocol.TCP, "", 80, "n1", "c1", "default/web", True)],
    )
    state = lbplan.plan([svc], None)
    rig.dp.lb.apply(lbdiff.diff(None, state))
    try:
        rig.policies(WEB_FROM_CLIENT_80)  # port 80 of web: not the backend's port
        assert rig.syn(CLIENT, VIP, 80) == TC_ACT_SHOT
        spec = WEB_FROM_CLIENT_80[1]
        rule = spec["ingress"][0]
        rig.policies(
            ("web", {**spec, "ingress": [{**rule, "toPorts": [{"ports": [{"port": "8080"}]}]}]})
        )
        assert rig.syn(CLIENT, VIP, 80, sport=40500) == TC_ACT_REDIRECT
    finally:
        rig.dp.lb.apply(lbdiff.diff(state, lbplan.plan([], state)))


def test_the_node_reaches_its_endpoints_and_world_does_not(rig: Rig) -> None:
    rig.policies(WEB_FROM_CLIENT_80)
    probe = ipv4(NODE_IP, WEB.ip, tcp(50000, 8080, TCP_SYN), proto=IPPROTO_TCP)
    assert rig.from_stack(probe, WEB).retval == TC_ACT_OK
    # The pod's answer passes its egress (tracked at to_endpoint) and goes to the stack.
    answer = ipv4(WEB.ip, NODE_IP, tcp(8080, 50000, TCP_SYN | TCP_ACK), proto=IPPROTO_TCP)
    assert rig.send(WEB, answer).retval == TC_ACT_OK
    world = ipv4(WORLD_IP, WEB.ip, tcp(50001, 80, TCP_SYN), proto=IPPROTO_TCP)
    assert rig.from_stack(world, WEB).retval == TC_ACT_SHOT
    to_client = ipv4(WORLD_IP, CLIENT.ip, tcp(50001, 80, TCP_SYN), proto=IPPROTO_TCP)
    assert rig.from_stack(to_client, CLIENT).retval == TC_ACT_OK  # client's ingress is open


def test_a_packet_for_an_endpoint_leaves_only_by_its_own_veth(rig: Rig) -> None:
    """A chained pod's veth may be a bridge port (docs/chaining.md): what the node
    sends web but the bridge floods, or an ARP spoofer draws, to client's port is
    dropped there, whatever the policy, and tracks nothing."""
    before = rig.dp.metrics.get(Reason.DROP_WRONG_PORT, Direction.INGRESS)[0]
    probe = ipv4(NODE_IP, WEB.ip, tcp(44000, 80, TCP_SYN), proto=IPPROTO_TCP)
    assert rig.from_stack(probe, WEB, port=CLIENT).retval == TC_ACT_SHOT
    assert rig.dp.metrics.get(Reason.DROP_WRONG_PORT, Direction.INGRESS)[0] == before + 1
    assert not any(r.dst == WEB.ip for r in ct_entries(rig.dp))
    assert rig.from_stack(probe, WEB).retval == TC_ACT_OK  # by web's own veth


def test_replies_of_connections_the_stack_delivered_go_back_through_it(rig: Rig) -> None:
    """A host port: the node's stack DNATs a pod's connection to NODE_IP:PORT to web; the
    mark rides on web's INGRESS entry, and web's replies find it there (no other lookup)."""
    for client, sport in ((CLIENT.ip, 41000), (REMOTE[0], 41001)):
        syn = ipv4(client, WEB.ip, tcp(sport, 80, TCP_SYN), proto=IPPROTO_TCP)
        assert rig.from_stack(syn, WEB).retval == TC_ACT_OK
        answer = ipv4(WEB.ip, client, tcp(80, sport, TCP_SYN | TCP_ACK), proto=IPPROTO_TCP)
        assert rig.send(WEB, answer).retval == TC_ACT_OK  # to the stack, not the pod/tunnel
    marked = {(r.src, r.dst) for r in ct_entries(rig.dp) if r.flags & CT_F_VIA_STACK}
    assert marked == {(CLIENT.ip, WEB.ip), (REMOTE[0], WEB.ip)}
    assert {r.kind for r in ct_entries(rig.dp) if r.flags & CT_F_VIA_STACK} == {"ingress"}
    # Not through the stack: client -> web directly, web's reply goes straight back.
    assert rig.syn(CLIENT, WEB.ip, 80, sport=42000) == TC_ACT_REDIRECT
    answer = ipv4(WEB.ip, CLIENT.ip, tcp(80, 42000, TCP_SYN | TCP_ACK), proto=IPPROTO_TCP)
    assert rig.send(WEB, answer).retval == TC_ACT_REDIRECT
    # From the node itself (not a pod): not marked; the reply reaches the stack anyway.
    probe = ipv4(NODE_IP, WEB.ip, tcp(43000, 80, TCP_SYN), proto=IPPROTO_TCP)
    assert rig.from_stack(probe, WEB).retval == TC_ACT_OK
    assert not any(r.src == NODE_IP and r.flags & CT_F_VIA_STACK for r in ct_entries(rig.dp))


def test_map_rows_and_resync(rig: Rig) -> None:
    rig.policies(WEB_FROM_CLIENT_80)
    rows = rig.dp.policy.rows(WEB.identity)
    assert (
        PolicyMapRow(WEB.identity, PolicyDirection.INGRESS, CLIENT.identity, 6, 80, 80, False, 0)
        in rows
    )
    assert rig.dp.policy.enforced()[WEB.identity] == (True, False)
    # A restarted agent re-syncs: what it wants stays, leftovers go.
    desired = {WEB.identity: rig.programmed[WEB.identity]}
    assert rig.dp.policy.sync_all(desired) == 0
    rig.dp.policy.apply(0x10199, None, rig.programmed[WEB.identity])
    assert rig.dp.policy.sync_all(desired) > 0
    assert rig.dp.policy.rows(0x10199) == []
    assert set(rig.dp.policy.enforced()) == {WEB.identity}
