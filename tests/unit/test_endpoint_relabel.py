"""glia.endpoint.relabel: an endpoint's namespace, identity labels and aliases once its
runtime has answered (pure)."""

from __future__ import annotations

from glia.endpoint.hooks import RuntimeInfo
from glia.endpoint.relabel import base_labels, initial_endpoint, relabel
from glia.identity.labelfilter import LabelFilter
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, ReservedIdentity


def _ep(name: str = "web", namespace: str = "default", aliases: tuple[str, ...] = ()) -> Endpoint:
    return Endpoint(
        container_id="ab" * 32, namespace=namespace, name=name, cluster="c1", node="n1",
        ip="10.1.0.5", identity=5, aliases=aliases,
    )  # fmt: skip


def test_labels_are_filtered_then_get_glias_own() -> None:
    runtime = RuntimeInfo({"app": "web", "io.buildah.version": "1.28.2"})
    r = relabel(_ep(), runtime, [], LabelFilter(), "c1")
    assert r.labels == {"app": "web", NAMESPACE_LABEL: "default", CLUSTER_LABEL: "c1"}
    assert r.namespace == "default" and r.namespace_refused is None
    assert any("io.buildah.version" in n for n in r.notes)


def test_the_labels_namespace_is_taken_unless_the_name_is_used_there() -> None:
    runtime = RuntimeInfo({NAMESPACE_LABEL: "shop"})
    r = relabel(_ep(), runtime, [], LabelFilter(), "c1")
    assert (r.namespace, r.labels[NAMESPACE_LABEL]) == ("shop", "shop")
    taken = relabel(_ep(), runtime, [_ep(namespace="shop")], LabelFilter(), "c1")
    assert taken.namespace == "default" and taken.labels == base_labels("default", "c1")
    assert taken.namespace_refused and "shop/web" in taken.namespace_refused


def test_runtime_names_become_aliases_after_those_of_add() -> None:
    runtime = RuntimeInfo({}, aliases=("Web", "DB", "bad_name"))
    r = relabel(_ep(aliases=("cache",)), runtime, [], LabelFilter(), "c1")
    assert r.aliases == ("cache", "db")  # its own name and an invalid one left out
    assert any("bad_name" in n for n in r.notes)


def test_a_new_endpoint_waits_for_its_identity_with_glias_labels() -> None:
    ep = initial_endpoint(
        cid="ab" * 32, namespace="shop", name="web", cluster="c1", node="n1", ip="10.1.0.5",
        ifname="eth0", host_ifname="gliae1", netns="/proc/1/ns/net", mac="02:00:00:00:00:01",
        host_mac="02:00:00:00:00:02", aliases=("db",), ports=(),
    )  # fmt: skip
    assert ep.identity == int(ReservedIdentity.INIT)
    assert ep.state == EndpointState.WAITING_FOR_IDENTITY
    assert ep.labels == base_labels("shop", "c1")
