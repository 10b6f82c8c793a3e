"""glia.dns.pods.PodNames: container names from endpoint records, checked first."""

from __future__ import annotations

from glia.dns.pods import PodNames
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.endpoint import Endpoint
from glia.validate.bounds import ClusterBounds

BOUNDS = ClusterBounds.of("c1", 1, "10.1.0.0/16")


def _record(node: str, ns: str, name: str, ip: str) -> tuple[str, KeyValue]:
    ep = Endpoint(
        container_id="ab" * 32, namespace=ns, name=name, cluster="c1", node=node, ip=ip,
        identity=65792 + 300,
    )  # fmt: skip
    key = keys.endpoint("c1", node, ns, name)
    return key, KeyValue(key, codec.encode(ep), 1, 1, 1, 0)


def test_names_across_nodes_and_namespaces_come_and_go() -> None:
    names = PodNames(BOUNDS)
    k1, v1 = _record("n1", "default", "Web", "10.1.0.2")
    k2, v2 = _record("n2", "shop", "web", "10.1.1.2")
    names.on_upsert(k1, v1)
    names.on_upsert(k2, v2)
    assert sorted(names.lookup("web")) == [("default", "10.1.0.2"), ("shop", "10.1.1.2")]
    _, moved = _record("n1", "default", "Web", "10.1.0.9")
    names.on_upsert(k1, moved)
    assert sorted(names.lookup("web")) == [("default", "10.1.0.9"), ("shop", "10.1.1.2")]
    names.on_delete(k1, None)
    names.on_delete(k2, None)
    assert (names.lookup("web"), len(names)) == ([], 0)


def test_a_record_outside_the_pool_or_under_another_key_names_nothing() -> None:
    names = PodNames(BOUNDS)
    key, outside = _record("n1", "default", "evil", "198.18.1.254")
    names.on_upsert(key, outside)
    _, elsewhere = _record("n2", "default", "evil", "10.1.1.2")
    names.on_upsert(key, elsewhere)  # the value names node n2, its key n1
    assert (names.lookup("evil"), names.rejected) == ([], 2)


def test_every_record_change_changes_the_version() -> None:
    names = PodNames(BOUNDS)
    key, kv = _record("n1", "default", "web", "10.1.0.2")
    seen = {names.version}
    for change in (
        lambda: names.on_upsert(key, kv),
        lambda: names.on_upsert(key, _record("n1", "default", "web", "10.1.0.3")[1]),
        lambda: names.on_delete(key, None),
    ):
        change()
        assert names.version not in seen
        seen.add(names.version)
