"""glia.kvstore.keys: the stable key layout, prefix ranges, parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.kvstore import keys
from glia.kvstore.records import encode_key

part = st.text(
    alphabet=st.characters(exclude_characters="/", exclude_categories=["Cs"]), min_size=1
)


def test_builders_and_their_prefixes() -> None:
    assert keys.node("c1", "n1") == "glia/state/nodes/v2/c1/n1"
    assert keys.node("c1", "n1").startswith(keys.nodes("c1"))
    assert keys.ipcache("c1", "n1", "10.1.0.5") == "glia/state/ip/v2/c1/n1/10.1.0.5"
    assert keys.ipcache("c1", "n1", "10.1.0.5").startswith(keys.ipcaches("c1", "n1"))
    assert keys.ipcaches("c1", "n1").startswith(keys.ipcaches("c1"))
    assert keys.endpoint("c1", "n1", "default", "web") == (
        "glia/state/endpoints/v2/c1/n1/default/web"
    )
    assert keys.endpoint("c1", "n1", "default", "web").startswith(keys.endpoints("c1", "n1"))
    assert keys.endpoints("c1", "n1").startswith(keys.endpoints("c1"))
    assert keys.identity_id("c1", 65792) == "glia/state/identities/v2/c1/id/65792"
    assert keys.identity_ref("c1", 65792, "n1") == "glia/state/identities/v2/c1/refs/n1/65792"
    assert keys.identity_ref("c1", 65792, "n1").startswith(keys.identity_refs("c1", "n1"))
    assert keys.identity_refs("c1", "n1").startswith(keys.identity_refs("c1"))
    assert keys.identity_labels("c1", "k").startswith(keys.identities("c1"))
    assert keys.parse_identity_ref("c1", keys.identity_ref("c1", 65792, "n1")) == ("n1", 65792)
    assert keys.parse_identity_ref("c1", keys.identity_refs("c1") + "n1/x") is None
    assert keys.parse_identity_ref("c1", keys.identity_id("c1", 7)) is None
    assert keys.health("c1", "n1") == "glia/state/health/v1/c1/n1"
    assert keys.podcidr_block("c1", "10.1.2.0/24") == "glia/state/podcidrs/v1/c1/cidrs/10.1.2.0_24"
    assert keys.service("c1", "ns", "svc") == "glia/state/services/v1/c1/ns/svc"
    assert keys.config("Service", "ns", "svc") == "glia/config/v1/Service/ns/svc"
    assert keys.operator_leader("c1") == "glia/state/operator/v1/c1/leader"
    assert keys.cluster_info("c1") == "glia/state/cluster/v1/c1"
    assert keys.cluster_info("c1").startswith(keys.CLUSTERS)
    # Remote clusters read it with the read-only role (state and the heartbeat).
    assert keys.cluster_info("c1").startswith(keys.STATE)
    for k in (keys.node("c", "n"), keys.HEARTBEAT, keys.service("c", "n", "s")):
        assert k.startswith(keys.ROOT)
    # The read-only remote role covers exactly state and the heartbeat.
    assert not keys.config("Service", "ns", "svc").startswith(keys.STATE)


@pytest.mark.parametrize(
    "call",
    [
        lambda: keys.node("", "n"),
        lambda: keys.node("c/x", "n"),
        lambda: keys.endpoint("c", "n", "ns", "a/b"),
        lambda: keys.ipcache("c", "n/x", "10.0.0.1"),
        lambda: keys.service("c", "ns", "a/b"),
        lambda: keys.service("c", "ns", ""),
        lambda: keys.config("Service", "", "x"),
    ],
)
def test_components_may_not_be_empty_or_contain_a_slash(call: object) -> None:
    with pytest.raises(ValueError, match="must be non-empty"):
        call()  # type: ignore[operator]


def test_prefix_end() -> None:
    assert keys.prefix_end("glia/") == "glia0"
    # U+00FF is two UTF-8 bytes, c3 bf: the end is c3 c0, not valid UTF-8, and
    # survives the round trip through str.
    assert encode_key(keys.prefix_end("a\xff")) == b"a\xc3\xc0"
    assert keys.prefix_end("") == "\0"


@settings(deadline=None)  # timing is not under test; CI machines are busy
@given(st.text(min_size=1), st.text())
def test_prefix_end_bounds_exactly_the_prefixed_keys(prefix: str, rest: str) -> None:
    end = encode_key(keys.prefix_end(prefix))
    p = encode_key(prefix)
    assert p <= encode_key(prefix + rest) < end or end == b"\0"
    # Anything not starting with the prefix but above it is at or past the end.
    if end != b"\0":
        assert not end.startswith(p)


@settings(deadline=None)  # timing is not under test; CI machines are busy
@given(part, part, part, part)
def test_parse_round_trips(cluster: str, node: str, ns: str, name: str) -> None:
    assert keys.parse(keys.endpoint(cluster, node, ns, name)) == keys.KeyParts(
        keys.ENDPOINTS, (cluster, node, ns, name)
    )
    assert keys.parse(keys.ipcache(cluster, node, name)) == keys.KeyParts(
        keys.IPCACHE, (cluster, node, name)
    )
    assert keys.parse(keys.node(cluster, name)) == keys.KeyParts(keys.NODES, (cluster, name))
    assert keys.parse(keys.cluster_info(cluster)) == keys.KeyParts(keys.CLUSTERS, (cluster,))
    assert keys.parse(keys.config(cluster, ns, name)).parts == (cluster, ns, name)


def test_parse_refuses_foreign_keys() -> None:
    with pytest.raises(ValueError, match="known glia prefix"):
        keys.parse("other/x")
    with pytest.raises(ValueError, match="known glia prefix"):
        keys.parse(keys.HEARTBEAT)
    with pytest.raises(ValueError, match="empty component"):
        keys.parse("glia/state/nodes/v2/c1//n")
    assert keys.parse(keys.identity_id("c1", 7)).parts == ("c1", "id", "7")
    assert keys.last(keys.identity_id("c1", 7)) == "7"
