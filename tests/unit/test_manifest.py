"""Service manifests -> ServiceSpec: what is accepted, and every error naming its field."""

# ruff: noqa: E501  (the tables of cases read best one case per line)

from __future__ import annotations

import copy
from typing import Any

import pytest

from glia.model import service as m
from glia.model.service import HealthCheck, LBAlgorithm, ProbeType, Protocol, ServicePort
from glia.service.manifest import (
    ManifestError,
    ServiceRef,
    load_yaml,
    parse_refs,
    parse_service,
    parse_services,
)
from glia.service.manifest_render import to_manifest

CIDR = "100.64.0.0/16"


def svc(**spec: Any) -> dict[str, Any]:
    """A valid one-port Service; keyword arguments replace spec fields (None removes one)."""
    body: dict[str, Any] = {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "targetPort": 8080}],
    }
    for k, v in spec.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": body}


def problems(*docs: Any, cidr: str | None = None, source: str = "s.yaml") -> list[str]:
    with pytest.raises(ManifestError) as ei:
        parse_services(list(docs), source, service_cidr=cidr)
    return ei.value.problems


def one_problem(doc: Any, cidr: str | None = None) -> str:
    found = problems(doc, cidr=cidr)
    assert len(found) == 1, found
    return found[0]


# -- what is accepted ---------------------------------------------------------------

FULL = """
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  labels: {tier: front}
  annotations:
    service.cilium.io/global: "true"
    service.cilium.io/shared: "false"
    service.cilium.io/affinity: local
    service.glia.io/affinity-min-ready: " 2"
    service.glia.io/lb-algorithm: maglev
    service.glia.io/health-check: http
    service.glia.io/health-check-path: /healthz
    service.glia.io/health-check-interval: "0.5"
    service.glia.io/health-check-timeout: "0.2"
    service.glia.io/health-check-failure-threshold: "3"
    service.glia.io/health-check-success-threshold: "2"
    example.com/owner: team-a
  uid: 1234
  creationTimestamp: 2024-01-01T00:00:00Z
spec:
  type: ClusterIP
  clusterIP: 100.64.0.10
  clusterIPs: [100.64.0.10]
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  internalTrafficPolicy: Cluster
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
    appProtocol: http
  - name: dns
    port: 53
    targetPort: 5353
    protocol: UDP
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 60
status:
  loadBalancer: {}
"""


def test_a_full_service() -> None:
    [doc] = parse_services(load_yaml(FULL, "web.yaml"), "web.yaml", service_cidr=CIDR)
    s = doc.spec
    assert (doc.source, doc.index, doc.where) == (
        "web.yaml",
        1,
        "web.yaml: document 1 (Service shop/web)",
    )
    assert (s.namespace, s.name, s.cluster_ip) == ("shop", "web", "100.64.0.10")
    assert s.selector == {"app": "web"}
    assert s.ports == [
        ServicePort(port=80, target_port="http", protocol=Protocol.TCP, name="http"),
        ServicePort(port=53, target_port=5353, protocol=Protocol.UDP, name="dns"),
    ]
    assert (s.session_affinity, s.affinity_timeout) == (True, 60)
    assert (s.global_, s.shared, s.affinity, s.affinity_min_ready) == (True, False, "local", 2)
    assert s.lb_algorithm is LBAlgorithm.MAGLEV
    assert s.health == HealthCheck(ProbeType.HTTP, "/healthz", 0.5, 0.2, 3, 2)
    assert s.labels == {"tier": "front"}
    assert s.annotations["example.com/owner"] == "team-a"


def test_defaults() -> None:
    s = parse_service({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})  # fmt: skip
    assert (s.namespace, s.cluster_ip) == ("default", "")
    assert s.ports == [ServicePort(port=80, target_port=80, protocol=Protocol.TCP, name="")]
    assert (s.session_affinity, s.affinity_timeout) == (False, 10800)
    assert (s.global_, s.shared, s.affinity, s.lb_algorithm) == (False, True, "", "random")
    assert s.affinity_min_ready == 0
    assert s.health == HealthCheck()
    # targetPort 0 or "" means "same as port", as in Kubernetes
    for target in (0, ""):
        s = parse_service(svc(ports=[{"port": 81, "targetPort": target}]))
        assert s.ports[0].target_port == 81


def test_several_documents_and_empty_ones() -> None:
    text = "---\n" + FULL.replace("name: web\n", "name: one\n", 1) + "---\n---\n"
    text += FULL.replace("name: web\n", "name: two\n", 1).replace("100.64.0.10", "100.64.0.11")
    docs = load_yaml(text, "f.yaml")
    parsed = parse_services(docs, "f.yaml")
    assert [(d.index, d.spec.name) for d in parsed] == [(1, "one"), (2, "two")]


def test_the_1_4_global_annotation_and_case() -> None:
    doc = svc()
    doc["metadata"]["annotations"] = {m.ANN_GLOBAL_14: "True", m.ANN_HEALTH: "NONE"}
    s = parse_service(doc)
    assert s.global_ and s.health.type is ProbeType.NONE
    doc["metadata"]["annotations"] = {m.ANN_GLOBAL_14: "true", m.ANN_GLOBAL: "true"}
    assert parse_service(doc).global_


def test_affinity_min_ready_with_either_affinity_and_back() -> None:
    for affinity in ("local", "Remote"):
        doc = svc()
        doc["metadata"]["annotations"] = {m.ANN_AFFINITY: affinity, m.ANN_AFFINITY_MIN_READY: "3"}
        s = parse_service(doc)
        assert (s.affinity, s.affinity_min_ready) == (affinity.lower(), 3)
        ann = to_manifest(s)["metadata"]["annotations"]
        assert ann[m.ANN_AFFINITY_MIN_READY] == "3"
        assert parse_service(to_manifest(s)) == s


def test_harmless_fields_are_ignored() -> None:
    doc = svc(publishNotReadyAddresses=False, externalIPs=[], trafficDistribution="PreferClose")
    doc["status"] = {"anything": [1, 2]}
    doc["metadata"].update(resourceVersion="7", generation=3, managedFields=[{}])
    assert parse_service(doc).name == "web"


# -- the errors of the issue, each naming its field -----------------------------------


def test_the_issues_example_message() -> None:
    second = svc(ports=[{"name": "a", "port": 80}, {"name": "b", "port": "http"}])
    assert problems(svc(), second, source="services.yaml") == [
        "services.yaml: document 2 (Service default/web): spec.ports[1].port: "
        'expected an integer 1..65535, got "http"',
        "services.yaml: document 2 (Service default/web): metadata.name: "
        "the same Service is also document 1",
    ]


@pytest.mark.parametrize(
    ("doc", "path", "expected"),
    [
        (svc(ports=[{"port": True}]), "spec.ports[0].port", "expected an integer 1..65535, got true"),
        (svc(ports=[{"port": 80.0}]), "spec.ports[0].port", "expected an integer 1..65535, got 80.0"),
        (svc(ports=[{"port": 0}]), "spec.ports[0].port", "expected an integer 1..65535, got 0"),
        (svc(ports=[{"port": 65536}]), "spec.ports[0].port", "got 65536"),
        (svc(ports=[{"port": None}]), "spec.ports[0].port", "got null"),
        (svc(ports=[{"targetPort": 80}]), "spec.ports[0].port", "got null"),
        (svc(ports=[{"port": 80, "targetPort": 70000}]), "spec.ports[0].targetPort", "got 70000"),
        (svc(ports=[{"port": 80, "targetPort": "HTTP"}]), "spec.ports[0].targetPort", 'got "HTTP"'),
        (svc(ports=[{"port": 80, "targetPort": "8080"}]), "spec.ports[0].targetPort", "one letter"),
        (svc(ports=[{"port": 80, "targetPort": "a-very-long-port-name"}]), "spec.ports[0].targetPort", "at most 15"),
        (svc(ports=[{"port": 80, "protocol": "SCTP"}]), "spec.ports[0].protocol", "SCTP is not supported"),
        (svc(ports=[{"port": 80, "protocol": "tcp"}]), "spec.ports[0].protocol", 'expected TCP or UDP, got "tcp"'),
        (svc(ports=[{"port": 80, "protocol": "ICMP"}]), "spec.ports[0].protocol", 'got "ICMP"'),
        (svc(ports=[{"port": 80, "nodePort": 30080}]), "spec.ports[0].nodePort", "not supported"),
        (svc(ports=[{"port": 80, "bogus": 1}]), "spec.ports[0].bogus", "unknown field"),
        (svc(ports=[{"port": 80, "name": "Web"}]), "spec.ports[0].name", "DNS-1123"),
        (svc(ports=[{"port": 80, "name": 5}]), "spec.ports[0].name", "expected a string, got 5"),
        (svc(ports=["80"]), "spec.ports[0]", 'expected a mapping, got "80"'),
        (svc(ports=[]), "spec.ports", "required"),
        (svc(ports=None), "spec.ports", "required"),
        (svc(ports={"port": 80}), "spec.ports", "expected a list of ports, got a mapping"),
        (svc(selector=None), "spec.selector", "required"),
        (svc(selector={}), "spec.selector", "must not be empty"),
        (svc(selector=["app=web"]), "spec.selector", "expected a mapping, got a list"),
        (svc(selector={"app": 1}), "spec.selector[app]", 'expected a string, got 1 (quote it: "1")'),
        (svc(selector={"app": None}), "spec.selector[app]", "expected a string, got null"),
        (svc(type="NodePort"), "spec.type", 'only ClusterIP is supported'),
        (svc(type="LoadBalancer"), "spec.type", 'got "LoadBalancer"'),
        (svc(clusterIP="None"), "spec.clusterIP", "headless"),
        (svc(clusterIP="fd00::1"), "spec.clusterIP", "IPv6 Services are not supported"),
        (svc(clusterIP="10.0.0.300"), "spec.clusterIP", 'expected an IPv4 address, got "10.0.0.300"'),
        (svc(clusterIP=167772161), "spec.clusterIP", "expected a string, got 167772161"),
        (svc(clusterIPs=["100.64.0.1", "fd00::1"]), "spec.clusterIPs", "dual-stack"),
        (svc(clusterIP="100.64.0.1", clusterIPs=["100.64.0.2"]), "spec.clusterIPs", "must start with"),
        (svc(clusterIPs=["100.64.0.300"]), "spec.clusterIPs[0]", "expected an IPv4 address"),
        (svc(sessionAffinity="Cookie"), "spec.sessionAffinity", 'expected ClientIP or None, got "Cookie"'),
        (svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}),
         "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "expected an integer 1..86400, got 0"),
        (svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}}),
         "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "got 86401"),
        (svc(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 5}}), "spec.sessionAffinityConfig",
         "only allowed with sessionAffinity: ClientIP"),
        (svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIp": {}}),
         "spec.sessionAffinityConfig.clientIp", "unknown field"),
        (svc(externalIPs=["1.2.3.4"]), "spec.externalIPs", "not supported"),
        (svc(externalTrafficPolicy="Local"), "spec.externalTrafficPolicy", "not supported"),
        (svc(loadBalancerIP="1.2.3.4"), "spec.loadBalancerIP", "not supported"),
        (svc(internalTrafficPolicy="Local"), "spec.internalTrafficPolicy", 'expected Cluster'),
        (svc(publishNotReadyAddresses=True), "spec.publishNotReadyAddresses", "ready backends"),
        (svc(ipFamilies=["IPv6"]), "spec.ipFamilies", "IPv4"),
        (svc(ipFamilyPolicy="RequireDualStack"), "spec.ipFamilyPolicy", "IPv4 only"),
        (svc(selektor={"app": "web"}), "spec.selektor", "unknown field"),
    ],
)  # fmt: skip
def test_bad_spec_fields(doc: dict[str, Any], path: str, expected: str) -> None:
    msg = one_problem(doc)
    prefix = f"s.yaml: document 1 (Service default/web): {path}: "
    assert msg.startswith(prefix), msg
    assert expected in msg[len(prefix) :], msg


def test_duplicate_port_names_and_ports() -> None:
    doc = svc(
        ports=[
            {"name": "http", "port": 80},
            {"name": "http", "port": 81},
            {"name": "dns", "port": 80},
            {"name": "dns-udp", "port": 80, "protocol": "UDP"},
        ]
    )
    w = "s.yaml: document 1 (Service default/web)"
    assert problems(doc) == [
        f'{w}: spec.ports[1].name: duplicate port name "http" (also spec.ports[0])',
        f"{w}: spec.ports[2].port: duplicate port 80/TCP (also spec.ports[0])",
    ]


def test_port_names_are_required_with_several_ports() -> None:
    found = problems(svc(ports=[{"port": 80}, {"name": "b", "port": 81}]))
    assert found == [
        "s.yaml: document 1 (Service default/web): spec.ports[0].name: "
        "required when a Service has more than one port"
    ]


def test_cluster_ip_must_be_in_the_service_cidr() -> None:
    assert one_problem(svc(clusterIP="10.0.0.1"), cidr=CIDR).endswith(
        "spec.clusterIP: 10.0.0.1 is outside the service CIDR 100.64.0.0/16"
    )
    assert "network address" in one_problem(svc(clusterIP="100.64.0.0"), cidr=CIDR)
    assert "broadcast address" in one_problem(svc(clusterIP="100.64.255.255"), cidr=CIDR)
    assert parse_service(svc(clusterIP="100.64.0.1"), service_cidr=CIDR).cluster_ip == "100.64.0.1"


def test_documents_of_one_file_must_not_collide() -> None:
    a = svc(clusterIP="100.64.0.5")
    b = copy.deepcopy(a)
    b["metadata"]["name"] = "other"
    found = problems(a, b)
    assert found == [
        "s.yaml: document 2 (Service default/other): spec.clusterIP: 100.64.0.5 is also "
        "requested by document 1"
    ]


@pytest.mark.parametrize(
    ("change", "path", "expected"),
    [
        (lambda d: d.update(kind="Pod"), "kind", 'expected Service (glia apply takes v1 Service objects), got "Pod"'),
        (lambda d: d.pop("kind"), "kind", "got null"),
        (lambda d: d.update(apiVersion="apps/v1"), "apiVersion", 'expected \'v1\' for a Service, got "apps/v1"'),
        (lambda d: d.update(extra=1), "extra", "unknown field"),
        (lambda d: d.pop("spec"), "spec", "required, expected a mapping"),
        (lambda d: d.update(spec=[]), "spec", "expected a mapping, got a list"),
        (lambda d: d["metadata"].update(nmae="x"), "metadata.nmae", "unknown field"),
        (lambda d: d["metadata"].update(namespace="Shop"), "metadata.namespace", "DNS-1123"),
        (lambda d: d["metadata"].update(namespace=3), "metadata.namespace", "expected a string, got 3"),
        (lambda d: d["metadata"].update(labels={"a": 1}), "metadata.labels[a]", "expected a string"),
        (lambda d: d["metadata"].update(annotations={m.ANN_GLOBAL: True}),
         f"metadata.annotations[{m.ANN_GLOBAL}]", 'expected a string, got true (quote it: "true")'),
        (lambda d: d["metadata"].update(annotations={m.ANN_GLOBAL: "yes"}),
         f"metadata.annotations[{m.ANN_GLOBAL}]", 'expected true | false, got "yes"'),
        (lambda d: d["metadata"].update(annotations={m.ANN_GLOBAL: "true", m.ANN_GLOBAL_14: "false"}),
         f"metadata.annotations[{m.ANN_GLOBAL_14}]", "contradicts"),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "nearest"}),
         f"metadata.annotations[{m.ANN_AFFINITY}]", "expected local | remote | none"),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "local", m.ANN_AFFINITY_MIN_READY: "0"}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", 'expected an integer 1..65535, got "0"'),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "local", m.ANN_AFFINITY_MIN_READY: "65536"}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", 'expected an integer 1..65535, got "65536"'),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "remote", m.ANN_AFFINITY_MIN_READY: "two"}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", 'expected an integer 1..65535, got "two"'),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "local", m.ANN_AFFINITY_MIN_READY: "-1"}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", "expected an integer 1..65535"),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "local", m.ANN_AFFINITY_MIN_READY: "9" * 5000}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", "expected an integer 1..65535"),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY_MIN_READY: "2"}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", f"only used with {m.ANN_AFFINITY}: local or remote"),
        (lambda d: d["metadata"].update(annotations={m.ANN_AFFINITY: "none", m.ANN_AFFINITY_MIN_READY: "2"}),
         f"metadata.annotations[{m.ANN_AFFINITY_MIN_READY}]", "only used with"),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH_FAILURES: "9" * 5000}),
         f"metadata.annotations[{m.ANN_HEALTH_FAILURES}]", "expected an integer 1..100"),
        (lambda d: d["metadata"].update(annotations={m.ANN_LB_ALGORITHM: "round-robin"}),
         f"metadata.annotations[{m.ANN_LB_ALGORITHM}]", "expected random | maglev"),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH: "grpc"}),
         f"metadata.annotations[{m.ANN_HEALTH}]", "expected tcp | http | none"),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH_PATH: "/x"}),
         f"metadata.annotations[{m.ANN_HEALTH_PATH}]", "only used with"),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH: "http", m.ANN_HEALTH_PATH: "x"}),
         f"metadata.annotations[{m.ANN_HEALTH_PATH}]", "absolute URL path"),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH_INTERVAL: "1s"}),
         f"metadata.annotations[{m.ANN_HEALTH_INTERVAL}]", 'expected seconds 0.1..3600'),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH_TIMEOUT: "0"}),
         f"metadata.annotations[{m.ANN_HEALTH_TIMEOUT}]", 'got "0"'),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH_FAILURES: "0"}),
         f"metadata.annotations[{m.ANN_HEALTH_FAILURES}]", "expected an integer 1..100"),
        (lambda d: d["metadata"].update(annotations={m.ANN_HEALTH_SUCCESSES: "1.5"}),
         f"metadata.annotations[{m.ANN_HEALTH_SUCCESSES}]", "expected an integer 1..100"),
        (lambda d: d["metadata"].update(annotations={"service.glia.io/healthcheck": "tcp"}),
         "metadata.annotations[service.glia.io/healthcheck]", "unknown glia annotation"),
    ],
)  # fmt: skip
def test_bad_object_fields(change: Any, path: str, expected: str) -> None:
    doc = svc()
    change(doc)
    msg = one_problem(doc)
    assert f": {path}: " in msg, msg
    assert expected in msg.split(f": {path}: ", 1)[1], msg


def test_a_bad_name_leaves_the_document_number() -> None:
    doc = svc()
    doc["metadata"]["name"] = "Web_1"
    assert one_problem(doc).startswith("s.yaml: document 1: metadata.name: expected a Service name")
    doc["metadata"] = {}
    assert one_problem(doc) == "s.yaml: document 1: metadata.name: required"
    assert problems(["a list"]) == [
        "s.yaml: document 1: <document>: expected a mapping (a Kubernetes object), got a list"
    ]


def test_every_problem_of_every_document_is_reported() -> None:
    bad1 = svc(selector=None, ports=[{"port": -1, "protocol": "X"}])
    bad2 = svc(type="NodePort")
    bad2["metadata"]["name"] = "two"
    found = problems(svc(), bad1 | {"metadata": {"name": "one"}}, bad2)
    assert [f.split(": ", 2)[1] for f in found] == [
        "document 2 (Service default/one)",
        "document 2 (Service default/one)",
        "document 2 (Service default/one)",
        "document 3 (Service default/two)",
    ]
    assert [f.split(": ")[2] for f in found] == [
        "spec.selector",
        "spec.ports[0].port",
        "spec.ports[0].protocol",
        "spec.type",
    ]


# -- YAML ---------------------------------------------------------------------------


def test_yaml_errors_say_where() -> None:
    with pytest.raises(ManifestError) as ei:
        load_yaml("a: [1\n", "x.yaml")
    assert ei.value.problems[0].startswith("x.yaml: YAML syntax error at line 2, column 1:")
    with pytest.raises(
        ManifestError, match=r'x\.yaml: YAML syntax error at line 3, column 1: duplicate key "a"'
    ):
        load_yaml("a: 1\nb: 2\na: 3\n", "x.yaml")
    with pytest.raises(ManifestError, match=r"x\.yaml: no documents"):
        load_yaml("---\n# nothing\n---\n", "x.yaml")
    with pytest.raises(ManifestError, match="nested too deeply"):
        load_yaml("[" * 600 + "]" * 600, "x.yaml")


def test_yaml_timestamps_stay_strings() -> None:
    [doc] = load_yaml("t: 2024-01-01T00:00:00Z\nd: 2024-01-01\n", "x.yaml")
    assert doc == {"t": "2024-01-01T00:00:00Z", "d": "2024-01-01"}


# -- references for delete, and back to Kubernetes' shape ---------------------------


def test_refs_need_only_kind_and_metadata() -> None:
    a = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "x"}}
    b = svc(type="NodePort")
    assert parse_refs([a, b, a], "f.yaml") == [ServiceRef("x", "a"), ServiceRef("default", "web")]
    with pytest.raises(ManifestError, match=r"f\.yaml: document 1: metadata\.name: required"):
        parse_refs([{"apiVersion": "v1", "kind": "Service", "metadata": {}}], "f.yaml")


def test_to_manifest_round_trips() -> None:
    [doc] = parse_services(load_yaml(FULL, "web.yaml"), "web.yaml")
    out = to_manifest(doc.spec)
    assert out["spec"]["ports"][0] == {
        "name": "http",
        "protocol": "TCP",
        "port": 80,
        "targetPort": "http",
    }
    assert out["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 60}}
    assert parse_service(out) == doc.spec
