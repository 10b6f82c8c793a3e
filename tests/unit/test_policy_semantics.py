"""Policy semantics, one table row per rule kind (allow and deny), checked two ways.

Each case is a policy (as a CiliumNetworkPolicy manifest), a connection and the
expected result: ``glia.policy.evaluate.verdict`` must give it and name the
deciding rule, and the datapath entries of ``glia.policy.engine`` looked up for
each side must give it too.
"""

# ruff: noqa: E501  (the tables read best one case per line)

from __future__ import annotations

from typing import Any

import pytest

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, ReservedIdentity
from glia.policy.cidr import CidrIdentities, policy_prefixes
from glia.policy.engine import PolicyEngine, compute
from glia.policy.entries import Action
from glia.policy.evaluate import Reason, side_verdict, verdict
from glia.policy.manifest import parse_policy
from glia.policy.model import Direction, Policy
from glia.policy.peers import Peer

TCP, UDP, ICMP = 6, 17, 1


def ep(app: str, ns: str = "default", cluster: str = "c1", **more: str) -> Peer:
    labels = {"app": app, NAMESPACE_LABEL: ns, **more}
    return Peer.endpoint(labels, cluster)


WEB = ep("web")
CLIENT = ep("client")
CLIENT_SHOP = ep("client", "shop")
CLIENT_C2 = ep("client", cluster="c2")
WEB_C2 = ep("web", cluster="c2")
DB = ep("db", tier="backend")
HOST = Peer.reserved(ReservedIdentity.HOST)
REMOTE_NODE = Peer.reserved(ReservedIdentity.REMOTE_NODE)
HEALTH = Peer.reserved(ReservedIdentity.HEALTH)
EVERYONE = [WEB, CLIENT, CLIENT_SHOP, CLIENT_C2, WEB_C2, DB]
NUMBERS = {id(p): (1 if p.cluster == "c1" else 2) << 16 | (256 + i) for i, p in enumerate(EVERYONE)}


def world(address: str) -> Peer:
    return Peer.world(address)


def cnp(
    spec: dict[str, Any], *, ns: str = "default", cluster: str = "c1", name: str = "p"
) -> Policy:
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    return parse_policy(doc, cluster=cluster)


def sel(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


def ports(*specs: str) -> list[dict[str, Any]]:
    """ "80/TCP", "80-90/ANY", "0/UDP" -> toPorts."""
    out = []
    for s in specs:
        port, proto = s.split("/")
        lo, _, hi = port.partition("-")
        p: dict[str, Any] = {"port": lo, "protocol": proto}
        if hi:
            p["endPort"] = int(hi)
        out.append(p)
    return [{"ports": out}]


def entries_say(
    policies: list[Policy], subject: Peer, peer: Peer, direction: Direction, proto: int, port: int
) -> bool:
    """What the datapath decides, from the engine's entries for ``subject``."""
    mine = [p for p in policies if p.cluster == subject.cluster]
    cidrs = CidrIdentities()
    added = cidrs.sync(policy_prefixes(mine)).added
    identities = {NUMBERS[id(p)]: (p.labels, p.cluster) for p in EVERYONE}
    result = compute(
        subject.labels,
        mine,
        identities,
        cluster=subject.cluster,
        cidr_identities={n: prefix for prefix, n in added.items()},
    )
    if peer.kind.value == "endpoint":
        number = NUMBERS[id(peer)]
    elif peer.address is not None:
        number = cidrs.identity_of(str(peer.address))
    else:
        number = peer.identity
    return result.lookup(direction, number, proto, port).action is Action.ALLOW


def judge(policies: list[Policy], src: Peer, dst: Peer, proto: int, port: int) -> tuple[bool, str]:
    v = verdict(policies, src, dst, proto, port)
    for subject, peer, direction, side in (
        (src, dst, Direction.EGRESS, v.egress),
        (dst, src, Direction.INGRESS, v.ingress),
    ):
        if subject.kind.value == "endpoint":
            assert entries_say(policies, subject, peer, direction, proto, port) == side.allowed, (
                direction,
                side,
            )
    side = v.decided_by
    rule = str(side.rule) if side.rule else side.reason.value
    return v.allowed, rule


# fmt: off
CASES: list[tuple[str, dict[str, Any], Peer, Peer, int, int, bool, str]] = [
    # id, spec, src, dst, proto, port, allowed, deciding rule (or reason)
    ('no policy selects: open', {'endpointSelector': sel(app='db')}, CLIENT, WEB, TCP, 80, True, 'not-enforced'),
    ('selected without sections: open', {'endpointSelector': sel(app='web')}, CLIENT, WEB, TCP, 80, True, 'not-enforced'),
    ('ingress [{}] denies all', {'endpointSelector': sel(app='web'), 'ingress': [{}]}, CLIENT, WEB, TCP, 80, False, 'default-deny'),
    ('ingress [{}] leaves egress open', {'endpointSelector': sel(app='web'), 'ingress': [{}]}, WEB, CLIENT, TCP, 80, True, 'not-enforced'),
    ('fromEndpoints allows', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')]}]}, CLIENT, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('fromEndpoints: others default-deny', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')]}]}, DB, WEB, TCP, 80, False, 'default-deny'),
    ('fromEndpoints [{}]: own namespace', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{}]}]}, DB, WEB, UDP, 53, True, 'default/p: spec.ingress[0]'),
    ('fromEndpoints: not another namespace', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')]}]}, CLIENT_SHOP, WEB, TCP, 80, False, 'default-deny'),
    ('fromEndpoints naming the namespace', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client', **{NAMESPACE_LABEL: 'shop'})]}]}, CLIENT_SHOP, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('fromEndpoints namespace Exists: any namespace', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{'matchExpressions': [{'key': NAMESPACE_LABEL, 'operator': 'Exists'}]}]}]}, CLIENT_SHOP, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('fromEndpoints: not another cluster', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')]}]}, CLIENT_C2, WEB, TCP, 80, False, 'default-deny'),
    ('fromEndpoints naming the cluster', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client', **{CLUSTER_LABEL: 'c2'})]}]}, CLIENT_C2, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('naming the cluster excludes ours', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client', **{CLUSTER_LABEL: 'c2'})]}]}, CLIENT, WEB, TCP, 80, False, 'default-deny'),
    ('cluster In both', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{'matchLabels': {'app': 'client'}, 'matchExpressions': [{'key': CLUSTER_LABEL, 'operator': 'In', 'values': ['c1', 'c2']}]}]}]}, CLIENT_C2, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('a c1 policy does not select c2 endpoints', {'endpointSelector': sel(app='web'), 'ingress': [{}]}, CLIENT, WEB_C2, TCP, 80, True, 'not-enforced'),
    ('matchExpressions In', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{'matchExpressions': [{'key': 'app', 'operator': 'In', 'values': ['client', 'db']}]}]}]}, DB, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('matchExpressions NotIn', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{'matchExpressions': [{'key': 'app', 'operator': 'NotIn', 'values': ['client']}]}]}]}, CLIENT, WEB, TCP, 80, False, 'default-deny'),
    ('matchExpressions DoesNotExist', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{'matchExpressions': [{'key': 'tier', 'operator': 'DoesNotExist'}]}]}]}, DB, WEB, TCP, 80, False, 'default-deny'),
    ('matchExpressions Exists', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [{'matchExpressions': [{'key': 'tier', 'operator': 'Exists'}]}]}]}, DB, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('k8s: prefix', {'endpointSelector': {'matchLabels': {'k8s:app': 'web'}}, 'ingress': [{'fromEndpoints': [{'matchLabels': {'any:app': 'client'}}]}]}, CLIENT, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('toPorts: the port', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')], 'toPorts': ports('80/TCP')}]}, CLIENT, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('toPorts: another port', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')], 'toPorts': ports('80/TCP')}]}, CLIENT, WEB, TCP, 81, False, 'default-deny'),
    ('toPorts: another protocol', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')], 'toPorts': ports('80/TCP')}]}, CLIENT, WEB, UDP, 80, False, 'default-deny'),
    ('toPorts ANY: TCP', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('53/ANY')}]}, CLIENT, WEB, TCP, 53, True, 'default/p: spec.ingress[0]'),
    ('toPorts ANY: UDP', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('53/ANY')}]}, CLIENT, WEB, UDP, 53, True, 'default/p: spec.ingress[0]'),
    ('toPorts ANY: not ICMP', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('0/ANY')}]}, CLIENT, WEB, ICMP, 0, False, 'default-deny'),
    ('no toPorts: ICMP too', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['cluster']}]}, CLIENT, WEB, ICMP, 0, True, 'default/p: spec.ingress[0]'),
    ('toPorts only: every peer', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('80/TCP')}]}, world('192.0.2.1'), WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('port range: first', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('8000-8080/TCP')}]}, CLIENT, WEB, TCP, 8000, True, 'default/p: spec.ingress[0]'),
    ('port range: last', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('8000-8080/TCP')}]}, CLIENT, WEB, TCP, 8080, True, 'default/p: spec.ingress[0]'),
    ('port range: past it', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('8000-8080/TCP')}]}, CLIENT, WEB, TCP, 8081, False, 'default-deny'),
    ('port 0: every port', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('0/UDP')}]}, CLIENT, WEB, UDP, 65535, True, 'default/p: spec.ingress[0]'),
    ('entity host', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['host']}]}, WEB, HOST, TCP, 22, True, 'default/p: spec.egress[0]'),
    ('entity host: not remote-node', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['host']}]}, WEB, REMOTE_NODE, TCP, 22, False, 'default-deny'),
    ('entity remote-node', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['remote-node']}]}, REMOTE_NODE, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('entity world', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['world']}]}, WEB, world('203.0.113.5'), TCP, 443, True, 'default/p: spec.egress[0]'),
    ('entity world: not endpoints', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['world']}]}, WEB, CLIENT, TCP, 443, False, 'default-deny'),
    ('entity cluster: our endpoints', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['cluster']}]}, CLIENT_SHOP, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('entity cluster: health', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['cluster']}]}, HEALTH, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('entity cluster: not another cluster', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['cluster']}]}, CLIENT_C2, WEB, TCP, 80, False, 'default-deny'),
    ('entity cluster: not world', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['cluster']}]}, world('192.0.2.1'), WEB, TCP, 80, False, 'default-deny'),
    ('entity all', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['all']}]}, CLIENT_C2, WEB, UDP, 9, True, 'default/p: spec.ingress[0]'),
    ('toCIDR', {'endpointSelector': sel(app='web'), 'egress': [{'toCIDR': ['192.0.2.0/24']}]}, WEB, world('192.0.2.9'), TCP, 443, True, 'default/p: spec.egress[0]'),
    ('toCIDR: outside', {'endpointSelector': sel(app='web'), 'egress': [{'toCIDR': ['192.0.2.0/24']}]}, WEB, world('192.0.3.9'), TCP, 443, False, 'default-deny'),
    ('toCIDR: not endpoints', {'endpointSelector': sel(app='web'), 'egress': [{'toCIDR': ['0.0.0.0/0']}]}, WEB, CLIENT, TCP, 443, False, 'default-deny'),
    ('toCIDRSet', {'endpointSelector': sel(app='web'), 'egress': [{'toCIDRSet': [{'cidr': '192.0.2.0/24', 'except': ['192.0.2.128/25']}]}]}, WEB, world('192.0.2.9'), TCP, 443, True, 'default/p: spec.egress[0]'),
    ('toCIDRSet: except', {'endpointSelector': sel(app='web'), 'egress': [{'toCIDRSet': [{'cidr': '192.0.2.0/24', 'except': ['192.0.2.128/25']}]}]}, WEB, world('192.0.2.200'), TCP, 443, False, 'default-deny'),
    ('fromCIDR', {'endpointSelector': sel(app='web'), 'ingress': [{'fromCIDR': ['198.51.100.7/32']}]}, world('198.51.100.7'), WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('host may always reach its endpoints', {'endpointSelector': sel(app='web'), 'ingress': [{}]}, HOST, WEB, TCP, 80, True, 'implicit: the local host may reach its endpoints'),
    ('remote nodes may not', {'endpointSelector': sel(app='web'), 'ingress': [{}]}, REMOTE_NODE, WEB, TCP, 80, False, 'default-deny'),
    # deny
    ('ingressDeny alone: default-deny', {'endpointSelector': sel(app='web'), 'ingressDeny': [{'fromEndpoints': [sel(app='db')]}]}, CLIENT, WEB, TCP, 80, False, 'default-deny'),
    ('ingressDeny fromEndpoints', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['all']}], 'ingressDeny': [{'fromEndpoints': [sel(app='client')]}]}, CLIENT, WEB, TCP, 80, False, 'default/p: spec.ingressDeny[0]'),
    ('ingressDeny: others allowed', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['all']}], 'ingressDeny': [{'fromEndpoints': [sel(app='client')]}]}, DB, WEB, TCP, 80, True, 'default/p: spec.ingress[0]'),
    ('ingressDeny on a port', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')]}], 'ingressDeny': [{'toPorts': ports('22/TCP')}]}, CLIENT, WEB, TCP, 22, False, 'default/p: spec.ingressDeny[0]'),
    ('ingressDeny on a port: others', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEndpoints': [sel(app='client')]}], 'ingressDeny': [{'toPorts': ports('22/TCP')}]}, CLIENT, WEB, TCP, 23, True, 'default/p: spec.ingress[0]'),
    ('ingressDeny port range inside an allow', {'endpointSelector': sel(app='web'), 'ingress': [{'toPorts': ports('0/TCP')}], 'ingressDeny': [{'fromEndpoints': [sel(app='client')], 'toPorts': ports('100-200/TCP')}]}, CLIENT, WEB, TCP, 150, False, 'default/p: spec.ingressDeny[0]'),
    ('ingressDeny entity world', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['all']}], 'ingressDeny': [{'fromEntities': ['world']}]}, world('192.0.2.1'), WEB, TCP, 80, False, 'default/p: spec.ingressDeny[0]'),
    ('ingressDeny entity host beats the implicit allow', {'endpointSelector': sel(app='web'), 'ingressDeny': [{'fromEntities': ['host']}]}, HOST, WEB, TCP, 80, False, 'default/p: spec.ingressDeny[0]'),
    ('ingressDeny cross-cluster', {'endpointSelector': sel(app='web'), 'ingress': [{'fromEntities': ['all']}], 'ingressDeny': [{'fromEndpoints': [sel(**{CLUSTER_LABEL: 'c2'})]}]}, CLIENT_C2, WEB, TCP, 80, False, 'default/p: spec.ingressDeny[0]'),
    ('egressDeny toCIDRSet with except', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['world']}], 'egressDeny': [{'toCIDRSet': [{'cidr': '192.0.2.0/24', 'except': ['192.0.2.7/32']}]}]}, WEB, world('192.0.2.8'), TCP, 443, False, 'default/p: spec.egressDeny[0]'),
    ('egressDeny toCIDRSet: the except passes', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['world']}], 'egressDeny': [{'toCIDRSet': [{'cidr': '192.0.2.0/24', 'except': ['192.0.2.7/32']}]}]}, WEB, world('192.0.2.7'), TCP, 443, True, 'default/p: spec.egress[0]'),
    ('egressDeny toEntities cluster', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['all']}], 'egressDeny': [{'toEntities': ['cluster'], 'toPorts': ports('53/UDP')}]}, WEB, CLIENT, UDP, 53, False, 'default/p: spec.egressDeny[0]'),
    ('egressDeny toEntities cluster: other ports', {'endpointSelector': sel(app='web'), 'egress': [{'toEntities': ['all']}], 'egressDeny': [{'toEntities': ['cluster'], 'toPorts': ports('53/UDP')}]}, WEB, CLIENT, TCP, 53, True, 'default/p: spec.egress[0]'),
    ('egressDeny toCIDR', {'endpointSelector': sel(app='web'), 'egressDeny': [{'toCIDR': ['203.0.113.0/24']}]}, WEB, world('203.0.113.1'), TCP, 443, False, 'default/p: spec.egressDeny[0]'),
    ('egressDeny ANY protocol', {'endpointSelector': sel(app='web'), 'egress': [{'toEndpoints': [sel(app='db')]}], 'egressDeny': [{'toPorts': ports('5432/ANY')}]}, WEB, DB, UDP, 5432, False, 'default/p: spec.egressDeny[0]'),
]
# fmt: on


@pytest.mark.parametrize(
    ("spec", "src", "dst", "proto", "port", "allowed", "rule"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_case(
    spec: dict[str, Any], src: Peer, dst: Peer, proto: int, port: int, allowed: bool, rule: str
) -> None:
    assert judge([cnp(spec)], src, dst, proto, port) == (allowed, rule)


def test_policies_of_both_ends_each_judge_their_side() -> None:
    """Egress at the source (cluster c2's policy) and ingress at the destination (c1's)."""
    c2_egress = cnp(
        {
            "endpointSelector": sel(app="client"),
            "egress": [
                {
                    "toEndpoints": [sel(app="web", **{CLUSTER_LABEL: "c1"})],
                    "toPorts": ports("80/TCP"),
                }
            ],
        },
        cluster="c2",
        name="out",
    )
    c1_ingress = cnp(
        {
            "endpointSelector": sel(app="web"),
            "ingress": [{"fromEndpoints": [sel(app="client", **{CLUSTER_LABEL: "c2"})]}],
        },
        name="in",
    )
    pols = [c2_egress, c1_ingress]
    v = verdict(pols, CLIENT_C2, WEB, TCP, 80)
    assert v.allowed
    assert (
        str(v.egress.rule) == "default/out: spec.egress[0]"
        and v.egress.rule is not None
        and v.egress.rule.cluster == "c2"
    )
    assert str(v.ingress.rule) == "default/in: spec.ingress[0]"
    v = verdict(pols, CLIENT_C2, WEB, TCP, 443)
    assert not v.allowed and v.decided_by.direction is Direction.EGRESS
    assert v.egress.reason is Reason.DEFAULT_DENY and v.ingress.allowed
    assert judge(pols, CLIENT_C2, WEB, TCP, 443) == (False, "default-deny")


def test_deny_of_one_policy_wins_over_allow_of_another() -> None:
    allow = cnp(
        {"endpointSelector": sel(app="web"), "ingress": [{"fromEndpoints": [sel(app="client")]}]},
        name="allow",
    )
    deny = cnp(
        {
            "endpointSelector": {},
            "ingressDeny": [{"fromEndpoints": [sel(app="client")], "toPorts": ports("80/TCP")}],
        },
        name="deny",
    )
    assert judge([allow, deny], CLIENT, WEB, TCP, 80) == (
        False,
        "default/deny: spec.ingressDeny[0]",
    )
    assert judge([allow, deny], CLIENT, WEB, TCP, 81) == (True, "default/allow: spec.ingress[0]")
    v = side_verdict([allow, deny], WEB, CLIENT, Direction.INGRESS, TCP, 80)
    assert v.selected_by == ("default/allow", "default/deny")
    assert [str(r) for r in v.allows] == ["default/allow: spec.ingress[0]"]


def test_specs_rules_each_select_their_own_endpoints() -> None:
    p = parse_policy(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "two"},
            "specs": [
                {
                    "endpointSelector": sel(app="web"),
                    "ingress": [{"fromEndpoints": [sel(app="client")]}],
                },
                {
                    "endpointSelector": sel(app="db"),
                    "ingress": [{"fromEndpoints": [sel(app="web")]}],
                },
            ],
        },
        cluster="c1",
    )
    assert judge([p], CLIENT, WEB, TCP, 80) == (True, "default/two: specs[0].ingress[0]")
    assert judge([p], WEB, DB, TCP, 5432) == (True, "default/two: specs[1].ingress[0]")
    assert judge([p], CLIENT, DB, TCP, 5432) == (False, "default-deny")


def test_an_identity_claiming_another_cluster_label_is_judged_by_its_minting_cluster() -> None:
    """A remote cluster cannot pass its identities off as ours through the cluster label."""
    forged = Peer.endpoint({"app": "client", NAMESPACE_LABEL: "default", CLUSTER_LABEL: "c1"}, "c2")
    assert forged.labels[CLUSTER_LABEL] == "c2"
    p = cnp(
        {"endpointSelector": sel(app="web"), "ingress": [{"fromEndpoints": [sel(app="client")]}]}
    )
    assert verdict([p], forged, WEB, TCP, 80).allowed is False
    engine = PolicyEngine("c1")
    engine.upsert_identity(
        0x20100, {"app": "client", NAMESPACE_LABEL: "default", CLUSTER_LABEL: "c1"}, "c2"
    )
    engine.upsert_policy(p)
    assert (
        engine.compute(WEB.labels).lookup(Direction.INGRESS, 0x20100, TCP, 80).action is Action.DENY
    )


def test_allow_host_off() -> None:
    p = cnp({"endpointSelector": sel(app="web"), "ingress": [{}]})
    assert not verdict([p], HOST, WEB, TCP, 80, allow_host=False).allowed
    engine = PolicyEngine("c1", allow_host=False)
    engine.upsert_policy(p)
    assert engine.compute(WEB.labels).entries == {}


def test_world_peer_without_address_matches_no_cidr_rule() -> None:
    p = cnp(
        {
            "endpointSelector": sel(app="web"),
            "egress": [
                {"toCIDR": ["0.0.0.0/0"]},
                {"toEntities": ["world"], "toPorts": ports("443/TCP")},
            ],
        }
    )
    assert judge([p], WEB, Peer.world(), TCP, 80) == (False, "default-deny")
    assert judge([p], WEB, Peer.world(), TCP, 443) == (True, "default/p: spec.egress[1]")


def test_a_verdict_as_json() -> None:
    import json

    p = cnp(
        {
            "endpointSelector": sel(app="web"),
            "ingressDeny": [{"fromEndpoints": [sel(app="client")]}],
        }
    )
    d = json.loads(json.dumps(verdict([p], CLIENT, WEB, TCP, 80).to_dict()))
    assert d["allowed"] is False and d["decided_by"] == "ingress"
    assert d["ingress"]["reason"] == "denied"
    assert d["ingress"]["rule"] == {"cluster": "c1", "id": "default/p: spec.ingressDeny[0]"}
    assert d["egress"] == {
        "direction": "egress",
        "allowed": True,
        "reason": "not-enforced",
        "rule": None,
        "selected_by": [],
        "denies": [],
        "allows": [],
    }
    assert d["proto"] == "TCP" and d["dport"] == 80
    assert (
        d["src"]
        == "endpoint ? (app=client,io.cilium.k8s.policy.cluster=c1,io.kubernetes.pod.namespace=default)"
    )
