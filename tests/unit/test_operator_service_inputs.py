"""The operator's Service inputs without etcd: what a record marks, places and rejects."""

from __future__ import annotations

from collections.abc import Iterable

from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.node import PodCIDRAllocation
from glia.model.service import BackendHealth, ProbeResult, ServicePort, ServiceSpec
from glia.operator.service_inputs import Ref, ServiceInputs, ref_of
from glia.validate.bounds import ClusterBounds

CLUSTER = "c1"
WEB: Ref = ("shop", "web")


def kv(key: str, value: object) -> KeyValue:
    return KeyValue(key, codec.encode(value), 1, 1, 1, 0)


def endpoint(name: str, ip: str, node: str = "n1", app: str = "web") -> Endpoint:
    return Endpoint(
        container_id=f"c-{name}",
        namespace="shop",
        name=name,
        cluster=CLUSTER,
        node=node,
        ip=ip,
        identity=65792,
        labels={"app": app},
        state=EndpointState.READY,
    )


def ep_key(ep: Endpoint) -> str:
    return keys.endpoint(CLUSTER, ep.node, ep.namespace, ep.name)


class Marks:
    def __init__(self) -> None:
        self.refs: list[set[Ref]] = []

    def __call__(self, refs: Iterable[Ref]) -> None:
        self.refs.append(set(refs))

    def take(self) -> set[Ref]:
        out = set().union(*self.refs) if self.refs else set()
        self.refs.clear()
        return out


def inputs_with_web() -> tuple[ServiceInputs, Marks]:
    marks = Marks()
    inputs = ServiceInputs(CLUSTER, ClusterBounds(CLUSTER, 1), marks)
    spec = ServiceSpec("shop", "web", "", [ServicePort(80, 8080, name="http")], {"app": "web"})
    inputs.spec_upsert(inputs.config_prefix + "shop/web", kv("", spec))
    alloc = PodCIDRAllocation("n1", "10.1.1.0/24")
    inputs.cidr_upsert(keys.podcidr_node(CLUSTER, "n1"), kv("", alloc))
    assert marks.take() == {WEB}
    return inputs, marks


def test_ref_of_takes_namespace_and_name_only() -> None:
    assert ref_of("p/shop/web", "p/") == ("shop", "web")
    assert ref_of("p/shop", "p/") is None
    assert ref_of("p/shop/web/x", "p/") is None
    assert ref_of("p//web", "p/") is None


def test_an_endpoint_in_its_nodes_cidr_is_placed_and_marks_its_service() -> None:
    inputs, marks = inputs_with_web()
    a, db = endpoint("a", "10.1.1.5"), endpoint("db", "10.1.1.9", app="db")
    inputs.endpoint_upsert(ep_key(a), kv(ep_key(a), a))
    inputs.endpoint_upsert(ep_key(db), kv(ep_key(db), db))
    assert marks.take() == {WEB}  # db selects nothing
    assert list(inputs.namespace_endpoints("shop")) == [a, db]
    assert inputs.rejects.count == 0

    inputs.endpoint_delete(ep_key(a), kv(ep_key(a), a))
    assert marks.take() == {WEB}
    assert list(inputs.namespace_endpoints("shop")) == [db]


def test_an_endpoint_outside_its_nodes_cidr_waits_for_the_allocation() -> None:
    inputs, marks = inputs_with_web()
    b = endpoint("b", "10.1.2.7", node="n2")
    inputs.endpoint_upsert(ep_key(b), kv(ep_key(b), b))
    assert list(inputs.namespace_endpoints("shop")) == [] and inputs.rejects.count == 1
    assert marks.take() == set()

    alloc = PodCIDRAllocation("n2", "10.1.2.0/24")
    inputs.cidr_upsert(keys.podcidr_node(CLUSTER, "n2"), kv("", alloc))
    assert list(inputs.namespace_endpoints("shop")) == [b]
    assert marks.take() == {WEB}


def test_probe_results_count_only_for_the_nodes_own_addresses() -> None:
    inputs, marks = inputs_with_web()
    a = endpoint("a", "10.1.1.5")
    inputs.endpoint_upsert(ep_key(a), kv(ep_key(a), a))
    marks.take()
    results = [
        ProbeResult("shop/web", "10.1.1.5", 8080, True, 0.0),
        ProbeResult("shop/web", "10.1.2.7", 8080, True, 0.0),  # not n1's address
    ]
    inputs.health_upsert(keys.health(CLUSTER, "n1"), kv("", BackendHealth("n1", results)))
    assert marks.take() == {WEB}
    assert inputs.probe("shop/web", "10.1.1.5", 8080) is True
    assert inputs.probe("shop/web", "10.1.2.7", 8080) is None
    assert inputs.rejects.count == 1

    inputs.health_delete(keys.health(CLUSTER, "n1"), None)
    assert marks.take() == {WEB}
    assert inputs.probe("shop/web", "10.1.1.5", 8080) is None
