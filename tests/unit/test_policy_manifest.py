"""CiliumNetworkPolicy manifests -> Policy: what is accepted, and every rejection with its message."""

# ruff: noqa: E501  (the tables of cases read best one case per line)

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from glia.model import codec
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL
from glia.policy.manifest import PolicyRef, parse_policies, parse_policy, parse_refs, to_manifest
from glia.policy.model import (
    CIDRRule,
    Entity,
    L4Proto,
    LabelRequirement,
    LabelSelector,
    Operator,
    PeerRule,
    Policy,
    PortProtocol,
    PortRule,
    Rule,
)
from glia.service.manifest import ManifestError, load_yaml

FULL = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web.policy
  namespace: shop
  labels: {team: a}
  uid: ignored
spec:
  description: web takes clients, talks to db and the world
  endpointSelector:
    matchLabels: {k8s:app: web}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: client}
    - matchLabels: {app: client, io.cilium.k8s.policy.cluster: c2}
      matchExpressions:
      - {key: tier, operator: In, values: [b, a, a]}
      - {key: io.kubernetes.pod.namespace, operator: Exists}
    toPorts:
    - ports:
      - {port: "80", protocol: TCP}
      - {port: 8000, endPort: 8080}
  - fromEntities: [host, remote-node]
  ingressDeny:
  - fromCIDR: [192.0.2.7/24]
    fromCIDRSet:
    - {cidr: 198.51.100.0/24, except: [198.51.100.128/25]}
  egress:
  - toEntities: [world, cluster]
    toPorts: [{ports: [{port: "53", protocol: UDP}]}]
  - {}
  egressDeny:
  - toEndpoints: [{}]
    toPorts: [{ports: [{port: "0", protocol: ANY}]}]
status: {anything: 1}
"""

EXPECTED = Policy(
    namespace="shop",
    name="web.policy",
    cluster="c1",
    labels={"team": "a"},
    spec=Rule(
        description="web takes clients, talks to db and the world",
        endpoint_selector=LabelSelector(match_labels={"app": "web"}),
        ingress=[
            PeerRule(
                endpoints=[
                    LabelSelector(match_labels={"app": "client"}),
                    LabelSelector(
                        match_labels={"app": "client", CLUSTER_LABEL: "c2"},
                        match_expressions=[
                            LabelRequirement("tier", Operator.IN, ["a", "b"]),
                            LabelRequirement(NAMESPACE_LABEL, Operator.EXISTS, []),
                        ],
                    ),
                ],
                to_ports=[
                    PortRule(
                        [
                            PortProtocol(80, 0, L4Proto.TCP),
                            PortProtocol(8000, 8080, L4Proto.ANY),
                        ]
                    )
                ],
            ),
            PeerRule(entities=[Entity.HOST, Entity.REMOTE_NODE]),
        ],
        ingress_deny=[
            PeerRule(
                cidr=["192.0.2.0/24"],
                cidr_set=[CIDRRule("198.51.100.0/24", ["198.51.100.128/25"])],
            )
        ],
        egress=[
            PeerRule(
                entities=[Entity.WORLD, Entity.CLUSTER],
                to_ports=[PortRule([PortProtocol(53, 0, L4Proto.UDP)])],
            ),
            PeerRule(),
        ],
        egress_deny=[
            PeerRule(
                endpoints=[LabelSelector()],
                to_ports=[PortRule([PortProtocol(0, 0, L4Proto.ANY)])],
            )
        ],
    ),
)


def test_a_full_policy() -> None:
    docs = load_yaml(FULL, "p.yaml")
    [doc] = parse_policies(docs, "p.yaml", cluster="c1")
    assert doc.policy == EXPECTED
    assert doc.where == "p.yaml: document 1 (CiliumNetworkPolicy shop/web.policy)"
    refs = [str(r) for r, *_ in EXPECTED.sections()]
    assert refs == [
        "shop/web.policy: spec.ingress[0]",
        "shop/web.policy: spec.ingress[1]",
        "shop/web.policy: spec.egress[0]",
        "shop/web.policy: spec.egress[1]",
        "shop/web.policy: spec.ingressDeny[0]",
        "shop/web.policy: spec.egressDeny[0]",
    ]


def test_to_manifest_round_trips_and_the_model_round_trips_through_json() -> None:
    m = to_manifest(EXPECTED)
    assert m["apiVersion"] == "cilium.io/v2" and m["kind"] == "CiliumNetworkPolicy"
    assert m["spec"]["ingress"][0]["toPorts"][0]["ports"] == [
        {"port": "80", "protocol": "TCP"},
        {"port": "8000", "endPort": 8080, "protocol": "ANY"},
    ]
    assert parse_policy(m, cluster="c1") == EXPECTED
    assert codec.decode(Policy, codec.encode(EXPECTED)) == EXPECTED


def test_specs_and_spec_together_and_defaults() -> None:
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "p", "namespace": ""},
        "spec": {"endpointSelector": {}},
        "specs": [{"endpointSelector": {"matchLabels": {"a": "b"}}, "ingress": [{}]}],
    }
    p = parse_policy(doc)
    assert p.namespace == "default" and p.cluster == ""
    assert [prefix for prefix, _ in p.rules()] == ["spec", "specs[0]"]
    assert p.specs[0].ingress == [PeerRule()]
    assert parse_policy(to_manifest(p)) == p


def test_several_documents_and_refs() -> None:
    text = "\n---\n".join(
        f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{i}}}\nspec: {{endpointSelector: {{}}}}"
        for i in range(3)
    )
    docs = load_yaml(text, "m.yaml")
    assert [d.policy.name for d in parse_policies(docs, "m.yaml", cluster="c1")] == [
        "p0",
        "p1",
        "p2",
    ]
    assert parse_refs(docs, "m.yaml") == [PolicyRef("default", f"p{i}") for i in range(3)]


# -- rejections ----------------------------------------------------------------------

WHERE = "p.yaml: document 1 (CiliumNetworkPolicy default/web)"


def base() -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "web"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                }
            ],
            "egress": [{"toEntities": ["world"]}],
        },
    }


def ing(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        d["spec"]["ingress"][0].update(fields)

    return f


def eg(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        d["spec"]["egress"][0].update(fields)

    return f


def spec(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        for k, v in fields.items():
            if v is None:
                d["spec"].pop(k, None)
            else:
                d["spec"][k] = v

    return f


def port(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        d["spec"]["ingress"][0]["toPorts"][0]["ports"][0] = fields

    return f


def top(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def f(d: dict[str, Any]) -> None:
        for k, v in fields.items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v

    return f


def sel(selector: Any) -> Callable[[dict[str, Any]], None]:
    return ing(fromEndpoints=[selector])


P0 = "spec.ingress[0]"
PP = "spec.ingress[0].toPorts[0].ports[0]"
# fmt: off
REJECTIONS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ('kind', top(kind='Service'), 'p.yaml: document 1: kind: expected CiliumNetworkPolicy, got "Service"'),
    ('clusterwide', top(kind='CiliumClusterwideNetworkPolicy'), 'p.yaml: document 1: kind: expected CiliumNetworkPolicy (clusterwide policies are not supported), got "CiliumClusterwideNetworkPolicy"'),
    ('apiVersion', top(apiVersion='cilium.io/v1'), f'''{WHERE}: apiVersion: expected 'cilium.io/v2' for a CiliumNetworkPolicy, got "cilium.io/v1"'''),
    ('unknown top field', top(extra=1), f'{WHERE}: extra: unknown field'),
    ('metadata missing', top(metadata=None), 'p.yaml: document 1: metadata: required, expected a mapping'),
    ('name', top(metadata={'name': 'Web'}), 'p.yaml: document 1: metadata.name: expected a CiliumNetworkPolicy name (DNS-1123 subdomain): at most 253 lowercase letters, digits, \'-\' or \'.\', starting and ending with a letter or digit, got "Web"'),
    ('namespace', top(metadata={'name': 'web', 'namespace': 'a.b'}), 'p.yaml: document 1 (CiliumNetworkPolicy web): metadata.namespace: expected a namespace (DNS-1123 label): at most 63 lowercase letters, digits or \'-\', starting and ending with a letter or digit, got "a.b"'),
    ('no rules', top(spec=None), f'{WHERE}: spec: required: a rule (spec) or a non-empty list of rules (specs)'),
    ('empty specs', top(spec=None, specs=[]), f'{WHERE}: spec: required: a rule (spec) or a non-empty list of rules (specs)'),
    ('specs not a list', top(spec=None, specs={'a': 1}), f'{WHERE}: specs: expected a list, got a mapping'),
    ('null rule', top(spec=None, specs=[None]), f'{WHERE}: specs[0]: expected a mapping, got null'),
    ('endpointSelector missing', spec(endpointSelector=None), f"{WHERE}: spec.endpointSelector: required: the endpoints the rule applies to ({{}} selects every endpoint of the policy's namespace)"),
    ('nodeSelector', spec(endpointSelector=None, nodeSelector={'matchLabels': {'a': 'b'}}), f'{WHERE}: spec.nodeSelector: not supported (host policies: glia has no host firewall; use endpointSelector)'),
    ('enableDefaultDeny', spec(enableDefaultDeny={'ingress': False}), f"{WHERE}: spec.enableDefaultDeny: not supported (glia uses Cilium's default enforcement: a rule with an ingress (egress) section makes the endpoints it selects default-deny in that direction)"),
    ('rule labels', spec(labels=[{'key': 'a'}]), f'{WHERE}: spec.labels: not supported (rule labels; put labels in metadata.labels)'),
    ('unknown rule field', spec(ingres=[]), f'{WHERE}: spec.ingres: unknown field'),
    ('description', spec(description=3), f'{WHERE}: spec.description: expected a string, got 3'),
    ('section not a list', spec(ingress={'fromEntities': ['all']}), f'{WHERE}: spec.ingress: expected a list, got a mapping'),
    ('endpointSelector other namespace', spec(endpointSelector={'matchLabels': {'k8s:io.kubernetes.pod.namespace': 'shop'}}), f'''{WHERE}: spec.endpointSelector.matchLabels[io.kubernetes.pod.namespace]: an endpointSelector selects in the policy's namespace 'default' only, got "shop"'''),
    ('endpointSelector namespace expression', spec(endpointSelector={'matchExpressions': [{'key': NAMESPACE_LABEL, 'operator': 'Exists'}]}), f"{WHERE}: spec.endpointSelector.matchExpressions[0]: an endpointSelector selects in the policy's namespace only: no expression on io.kubernetes.pod.namespace"),
    ('selector null', sel(None), f'{WHERE}: {P0}.fromEndpoints[0]: expected a label selector (a mapping; {{}} selects all), got null'),
    ('selector unknown field', sel({'matchLabel': {'a': 'b'}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabel: unknown field'),
    ('label value not a string', sel({'matchLabels': {'port': 80}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabels[port]: expected a string, got 80 (quote it: "80")'),
    ('duplicate label', sel({'matchLabels': {'app': 'a', 'k8s:app': 'a'}}), f"{WHERE}: {P0}.fromEndpoints[0].matchLabels[k8s:app]: the same label as 'app'"),
    ('reserved label', sel({'matchLabels': {'reserved:host': ''}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabels[reserved:host]: reserved labels are not selectable (reserved:host): use fromEntities/toEntities'),
    ('cidr label', sel({'matchLabels': {'cidr:10.0.0.0/8': ''}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabels[cidr:10.0.0.0/8]: cidr labels are not selectable (cidr:10.0.0.0/8): use fromCIDR/toCIDR'),
    ('namespace labels', sel({'matchLabels': {'io.cilium.k8s.namespace.labels.team': 'a'}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabels[io.cilium.k8s.namespace.labels.team]: namespace labels are not supported (glia endpoints carry none)'),
    ('empty key', sel({'matchLabels': {'k8s:': 'a'}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabels[k8s:]: label keys must have 1..320 characters, got 0'),
    ('long value', sel({'matchLabels': {'a': 'x' * 1025}}), f'{WHERE}: {P0}.fromEndpoints[0].matchLabels[a]: label values have at most 1024 characters, got 1025'),
    ('operator', sel({'matchExpressions': [{'key': 'a', 'operator': 'in', 'values': ['x']}]}), f'{WHERE}: {P0}.fromEndpoints[0].matchExpressions[0].operator: expected In, NotIn, Exists, DoesNotExist, got "in"'),
    ('In without values', sel({'matchExpressions': [{'key': 'a', 'operator': 'In'}]}), f'{WHERE}: {P0}.fromEndpoints[0].matchExpressions[0].values: required: a non-empty list for In'),
    ('Exists with values', sel({'matchExpressions': [{'key': 'a', 'operator': 'Exists', 'values': ['x']}]}), f'{WHERE}: {P0}.fromEndpoints[0].matchExpressions[0].values: must be empty for Exists'),
    ('expression without key', sel({'matchExpressions': [{'operator': 'Exists'}]}), f'{WHERE}: {P0}.fromEndpoints[0].matchExpressions[0].key: required'),
    ('expression value', sel({'matchExpressions': [{'key': 'a', 'operator': 'In', 'values': [True]}]}), f'{WHERE}: {P0}.fromEndpoints[0].matchExpressions[0].values[0]: expected a string, got true (quote it: "true")'),
    ('fromRequires', ing(fromRequires=[{'matchLabels': {'a': 'b'}}]), f'{WHERE}: {P0}.fromRequires: not supported (fromRequires is deprecated in Cilium and not implemented)'),
    ('fromNodes', ing(fromNodes=[{}]), f'{WHERE}: {P0}.fromNodes: not supported (node selectors; use fromEntities: [host, remote-node])'),
    ('fromGroups', ing(fromGroups=[{'aws': {}}]), f'{WHERE}: {P0}.fromGroups: not supported (cloud provider groups)'),
    ('icmps', ing(icmps=[{'fields': [{'type': 8}]}]), f'{WHERE}: {P0}.icmps: not supported (ICMP type rules; a rule without toPorts allows every protocol, ICMP included)'),
    ('authentication', ing(authentication={'mode': 'required'}), f'{WHERE}: {P0}.authentication: not supported (mutual authentication)'),
    ('toEndpoints in ingress', ing(toEndpoints=[{}]), f'{WHERE}: {P0}.toEndpoints: unknown field'),
    ('fromEndpoints in egress', eg(fromEndpoints=[{}]), f'{WHERE}: spec.egress[0].fromEndpoints: unknown field'),
    ('toFQDNs', eg(toFQDNs=[{'matchName': 'example.com'}]), f'{WHERE}: spec.egress[0].toFQDNs: not supported (DNS-based policy needs a DNS proxy; glia enforces L3/L4 only)'),
    ('toServices', eg(toServices=[{'k8sService': {'serviceName': 'x'}}]), f'{WHERE}: spec.egress[0].toServices: not supported (Service-based egress; select the backends with toEndpoints)'),
    ('toGroups', eg(toGroups=[{'aws': {}}]), f'{WHERE}: spec.egress[0].toGroups: not supported (cloud provider groups)'),
    ('toRequires', eg(toRequires=[{}, {}]), f'{WHERE}: spec.egress[0].toRequires: not supported (toRequires is deprecated in Cilium and not implemented)'),
    ('L7 rules', ing(toPorts=[{'ports': [{'port': '80'}], 'rules': {'http': [{'method': 'GET'}]}}]), f'{WHERE}: {P0}.toPorts[0].rules: not supported (L7 rules need a proxy; glia enforces L3/L4 only)'),
    ('serverNames', ing(toPorts=[{'ports': [{'port': '443'}], 'serverNames': ['a.example']}]), f'{WHERE}: {P0}.toPorts[0].serverNames: not supported (L7 rules need a proxy; glia enforces L3/L4 only)'),
    ('no ports', ing(toPorts=[{}]), f'{WHERE}: {P0}.toPorts[0].ports: required: a non-empty list of ports'),
    ('named port', port(port='http'), f'{WHERE}: {PP}.port: named ports are not supported: give a number, got "http"'),
    ('port too big', port(port='65536'), f'{WHERE}: {PP}.port: expected a port number 0..65535 (0: every port), got "65536"'),
    ('port negative', port(port=-1), f'{WHERE}: {PP}.port: expected a port number 0..65535 (0: every port), got -1'),
    ('port bool', port(port=True), f'{WHERE}: {PP}.port: expected a port number 0..65535 (0: every port), got true'),
    ('endPort below port', port(port='90', endPort=80), f'{WHERE}: {PP}.endPort: must be at least port 90, got 80'),
    ('endPort without port', port(endPort=80), f'{WHERE}: {PP}.endPort: needs a port: the range is port..endPort'),
    ('endPort string', port(port='80', endPort='90'), f'{WHERE}: {PP}.endPort: expected a port number 1..65535, got "90"'),
    ('unknown port field', port(port='80', name='http'), f'{WHERE}: {PP}.name: unknown field'),
    ('SCTP', port(port='80', protocol='SCTP'), f'{WHERE}: {PP}.protocol: SCTP is not supported (glia implements TCP, UDP, ANY)'),
    ('ICMP', port(protocol='ICMP'), f'{WHERE}: {PP}.protocol: ICMP is not supported (glia implements TCP, UDP, ANY)'),
    ('lowercase tcp', port(port='80', protocol='tcp'), f'{WHERE}: {PP}.protocol: expected TCP, UDP or ANY, got "tcp"'),
    ('entity health', eg(toEntities=['health']), f"{WHERE}: spec.egress[0].toEntities[0]: entity 'health' is not supported (glia implements host, remote-node, world, cluster, all)"),
    ('entity kube-apiserver', eg(toEntities=['world', 'kube-apiserver']), f"{WHERE}: spec.egress[0].toEntities[1]: entity 'kube-apiserver' is not supported (glia implements host, remote-node, world, cluster, all)"),
    ('entity unknown', eg(toEntities=['World']), f'{WHERE}: spec.egress[0].toEntities[0]: expected one of host, remote-node, world, cluster, all, got "World"'),
    ('cidr garbage', eg(toCIDR=['10.0.0.300/8']), f'{WHERE}: spec.egress[0].toCIDR[0]: expected an IPv4 CIDR like "192.0.2.0/24", got "10.0.0.300/8"'),
    ('cidr without prefix', eg(toCIDR=['10.0.0.1']), f'{WHERE}: spec.egress[0].toCIDR[0]: expected an IPv4 CIDR with a prefix length (e.g. "10.0.0.1/32"), got "10.0.0.1"'),
    ('cidr IPv6', eg(toCIDR=['2001:db8::/32']), f'{WHERE}: spec.egress[0].toCIDR[0]: IPv6 is not supported, got "2001:db8::/32"'),
    ('cidr number', eg(toCIDR=[10]), f'{WHERE}: spec.egress[0].toCIDR[0]: expected an IPv4 CIDR like "192.0.2.0/24", got 10'),
    ('except outside', eg(toCIDRSet=[{'cidr': '10.0.0.0/8', 'except': ['11.0.0.0/16']}]), f'{WHERE}: spec.egress[0].toCIDRSet[0].except[0]: 11.0.0.0/16 is not inside cidr 10.0.0.0/8'),
    ('cidrSet without cidr', eg(toCIDRSet=[{'except': ['10.0.0.0/16']}]), f'{WHERE}: spec.egress[0].toCIDRSet[0].cidr: required'),
    ('cidrGroupRef', eg(toCIDRSet=[{'cidrGroupRef': 'g'}]), f'{WHERE}: spec.egress[0].toCIDRSet[0].cidrGroupRef: not supported (CiliumCIDRGroup references)'),
    ('cidrSet not a mapping', eg(toCIDRSet=['10.0.0.0/8']), f'{WHERE}: spec.egress[0].toCIDRSet[0]: expected a mapping, got "10.0.0.0/8"'),
    ('labels not strings', top(metadata={'name': 'web', 'labels': {'a': 1}}), f'{WHERE}: metadata.labels[a]: expected a string, got 1 (quote it: "1")'),
]
# fmt: on


@pytest.mark.parametrize(
    ("mutate", "message"), [pytest.param(m, msg, id=i) for i, m, msg in REJECTIONS]
)
def test_rejections(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    doc = base()
    mutate(doc)
    with pytest.raises(ManifestError) as ei:
        parse_policies([doc], "p.yaml", cluster="c1")
    assert ei.value.problems == [message]


def test_base_is_valid() -> None:
    assert parse_policy(base(), cluster="c1").name == "web"


def test_every_problem_of_every_document_is_reported_together() -> None:
    bad = base()
    bad["spec"]["ingress"][0]["toPorts"][0]["ports"][0] = {"port": "http", "protocol": "SCTP"}
    bad["spec"]["egress"][0]["toFQDNs"] = [{"matchName": "x"}]
    dup = copy.deepcopy(base())
    with pytest.raises(ManifestError) as ei:
        parse_policies([bad, "junk", dup, base()], "p.yaml", cluster="c1")
    assert ei.value.problems == [
        f'{WHERE}: {PP}.port: named ports are not supported: give a number, got "http"',
        f"{WHERE}: {PP}.protocol: SCTP is not supported (glia implements TCP, UDP, ANY)",
        f"{WHERE}: spec.egress[0].toFQDNs: not supported (DNS-based policy needs a DNS proxy; glia enforces L3/L4 only)",
        'p.yaml: document 2: <document>: expected a mapping (a Kubernetes object), got "junk"',
        "p.yaml: document 3 (CiliumNetworkPolicy default/web): metadata.name: the same policy is also document 1",
        "p.yaml: document 4 (CiliumNetworkPolicy default/web): metadata.name: the same policy is also document 1",
    ]


def test_delete_refs_check_only_kind_and_metadata() -> None:
    doc = base()
    doc["spec"] = {"anything": True}
    assert parse_refs([doc, doc], "p.yaml") == [PolicyRef("default", "web")]
    with pytest.raises(ManifestError) as ei:
        parse_refs([{"kind": "CiliumNetworkPolicy", "apiVersion": "cilium.io/v2"}], "p.yaml")
    assert ei.value.problems == ["p.yaml: document 1: metadata: required, expected a mapping"]


def test_empty_lists_of_unsupported_fields_change_nothing_and_are_accepted() -> None:
    doc = base()
    doc["spec"]["egress"][0].update(toFQDNs=[], toServices=None, icmps=[])
    doc["spec"]["ingress"][0]["toPorts"][0]["rules"] = {}
    assert parse_policy(doc) == parse_policy(base())


def test_a_stored_policy_is_checked_for_meaning() -> None:
    from dataclasses import replace

    from glia.policy.manifest import check_stored

    assert check_stored(EXPECTED) == EXPECTED
    bad_cidr = replace(
        EXPECTED, spec=replace(EXPECTED.spec, ingress_deny=[PeerRule(cidr=["10.0.0.300/8"])])
    )  # type: ignore[arg-type]
    with pytest.raises(ManifestError) as ei:
        check_stored(bad_cidr)
    assert ei.value.problems == [
        'stored: document 1 (CiliumNetworkPolicy shop/web.policy): spec.ingressDeny[0].fromCIDR[0]: expected an IPv4 CIDR like "192.0.2.0/24", got "10.0.0.300/8"'
    ]
    prefixed = replace(
        EXPECTED, spec=replace(EXPECTED.spec, endpoint_selector=LabelSelector({"k8s:app": "web"}))
    )  # type: ignore[arg-type]
    with pytest.raises(ManifestError) as ei:
        check_stored(prefixed)
    assert ei.value.problems == [
        "stored: CiliumNetworkPolicy shop/web.policy: not in the normal form glia stores"
    ]


def test_documents_keep_their_numbers_in_a_file_mixing_kinds() -> None:
    bad = base()
    bad["spec"]["egress"][0]["toEntities"] = ["World"]
    with pytest.raises(ManifestError) as ei:
        parse_policies([base(), bad], "mixed.yaml", numbers=[2, 5])
    assert ei.value.problems == [
        'mixed.yaml: document 5 (CiliumNetworkPolicy default/web): spec.egress[0].toEntities[0]: expected one of host, remote-node, world, cluster, all, got "World"',
        "mixed.yaml: document 5 (CiliumNetworkPolicy default/web): metadata.name: the same policy is also document 2",
    ]
    assert [d.index for d in parse_policies([base()], "mixed.yaml", numbers=[3])] == [3]
    with pytest.raises(ManifestError) as ei:
        parse_refs([{"kind": "CiliumNetworkPolicy"}], "mixed.yaml", numbers=[4])
    assert ei.value.problems[0].startswith("mixed.yaml: document 4: ")
