"""``glia policy trace``'s pure core: the request parsed (each bad input named by its field),
its ends resolved as endpoints carry labels, the answer across clusters, and the
``glia policy get`` view (glia.policy.trace, glia.policy.view)."""

from __future__ import annotations

from typing import Any

import pytest

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, Identity, ReservedIdentity
from glia.policy.manifest import parse_policy
from glia.policy.model import Policy
from glia.policy.peers import Peer, PeerKind
from glia.policy.store import PolicyListing
from glia.policy.trace import (
    EndKind,
    EndSpec,
    TraceError,
    answer,
    clusters_to_read,
    parse_end,
    parse_port,
    parse_request,
    policies_of,
    resolve_end,
    sides_judged_by,
)
from glia.policy.view import policy_view

TCP, UDP, ICMP = 6, 17, 1
CLIENT_ID = 1 << 16 | 300
WEB_C2_ID = 2 << 16 | 300
IDENTITIES = {
    "c1": {CLIENT_ID: Identity(CLIENT_ID, {"app": "client", NAMESPACE_LABEL: "default"})},
    "c2": {
        WEB_C2_ID: Identity(
            WEB_C2_ID, {"app": "web", NAMESPACE_LABEL: "default", CLUSTER_LABEL: "c2"}
        )
    },
}


def cnp(spec: dict[str, Any], *, cluster: str, name: str = "p", ns: str = "default") -> Policy:
    doc = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    return parse_policy(doc, cluster=cluster)


# -- parsing ---------------------------------------------------------------------


def test_labels_are_an_endpoint_and_the_cluster_label_picks_its_cluster() -> None:
    spec = parse_end(" k8s:app=web, tier=front ,io.cilium.k8s.policy.cluster=c2", "dst")
    assert spec == EndSpec(EndKind.LABELS, labels={"app": "web", "tier": "front"}, cluster="c2")
    assert parse_end("app=", "src").labels == {"app": ""}  # an empty value is a value


def test_reserved_names_and_world_addresses() -> None:
    assert parse_end("reserved:remote-node", "src").reserved is ReservedIdentity.REMOTE_NODE
    assert parse_end("reserved:HOST", "src").reserved is ReservedIdentity.HOST
    assert parse_end("ip:192.0.2.7", "dst") == EndSpec(EndKind.ADDRESS, address="192.0.2.7")


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        ("", "src", "empty: expected k=v"),
        ("app", "src", "'app' is not k=v"),
        ("app=web,,tier=x", "dst", "an empty label"),
        ("=web", "dst", "has no key"),
        ("app=a,app=b", "src", "label 'app' given twice"),
        ("reserved:kube-apiserver", "src", "unknown reserved identity 'kube-apiserver'"),
        ("reserved:unknown", "src", "unknown reserved identity"),
        ("ip:10.0.0.300", "dst", "'10.0.0.300' is not an IPv4 address"),
        ("ip:2001:db8::1", "dst", "not an IPv4 address"),
        ("io.cilium.k8s.policy.cluster=C_2", "dst", "label io.cilium.k8s.policy.cluster:"),
        ("reserved:host=1", "src", "unknown reserved identity"),
        ("cidr:10.0.0.0/8=", "src", "use reserved:NAME or ip:A.B.C.D alone"),
        ("io.kubernetes.pod.namespace=", "src", "io.kubernetes.pod.namespace is empty"),
    ],
)
def test_a_bad_end_names_its_field_and_why(text: str, field: str, says: str) -> None:
    with pytest.raises(TraceError) as e:
        parse_end(text, field)
    assert e.value.field == field
    assert says in str(e.value), str(e.value)
    assert str(e.value).startswith(f"{field}: ")


def test_ports_and_protocols() -> None:
    assert parse_port("80", None) == (TCP, 80)
    assert parse_port("53/udp", None) == (UDP, 53)
    assert parse_port(" 443/TCP ", "tcp") == (TCP, 443)
    assert parse_port(8080, None) == (TCP, 8080)
    assert parse_port("53", "UDP") == (UDP, 53)
    assert parse_port(None, "icmp") == (ICMP, 0)


@pytest.mark.parametrize(
    ("dport", "proto", "field", "says"),
    [
        (None, None, "dport", "required: PORT[/TCP|UDP]"),
        ("0", None, "dport", "expected a number in 1..65535"),
        ("65536", None, "dport", "1..65535"),
        ("http", None, "dport", "port 'http'"),
        ("80/SCTP", None, "dport", "protocol 'SCTP': expected TCP or UDP"),
        ("80/ICMP", None, "dport", "expected TCP or UDP"),
        ("80/UDP", "TCP", "dport", "says UDP but proto says TCP"),
        ("80", "icmp", "dport", "ICMP has no port"),
        (None, "SCTP", "proto", "'SCTP' is not one of TCP, UDP, ICMP"),
        (True, None, "dport", "expected PORT"),
    ],
)
def test_a_bad_port_names_its_field(dport: Any, proto: Any, field: str, says: str) -> None:
    with pytest.raises(TraceError) as e:
        parse_port(dport, proto)
    assert e.value.field == field and says in e.value.reason, str(e.value)


def test_requests_name_both_ends_once() -> None:
    req = parse_request({"src": "app=client", "dst_identity": 131372, "dport": "80/TCP"})
    assert req.src.kind is EndKind.LABELS and req.dst.identity == 131372
    assert (req.proto, req.dport) == (TCP, 80)
    assert parse_request({"src_identity": 1, "dst": "app=web", "dport": "80"}).src == EndSpec(
        EndKind.RESERVED, reserved=ReservedIdentity.HOST
    )
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"dst": "a=b", "dport": "80"}, "src", "required"),
        ({"src": "a=b", "src_identity": 300, "dst": "a=b", "dport": "80"}, "src", "not both"),
        ({"src": "a=b", "dst_identity": "x", "dport": "80"}, "dst_identity", "identity number"),
        ({"src": "a=b", "dst_identity": 0, "dport": "80"}, "dst_identity", "0 is no identity"),
        ({"src": "a=b", "dst_identity": 7, "dport": "80"}, "dst_identity", "7 is no identity"),
        ({"src": "a=b", "dst_identity": 1 << 24, "dport": "80"}, "dst_identity", "24 bits"),
        ({"src": "a=b", "dst": "c=d", "dport": "80", "sport": 1}, "sport", "unknown field"),
        ({"src": 5, "dst": "c=d", "dport": "80"}, "src", "expected a string"),
    ]
    for body, field, says in cases:
        with pytest.raises(TraceError) as e:
            parse_request(body)
        assert e.value.field == field and says in e.value.reason, (body, str(e.value))
    # The CLI has its flags named in the messages that name another field.
    with pytest.raises(TraceError, match="give --src or --src-identity, not both"):
        parse_request(
            {"src": "a=b", "src_identity": 300, "dst": "c=d", "dport": "80"},
            names={"src": "--src", "src_identity": "--src-identity"},
        )


# -- resolution ------------------------------------------------------------------


def test_labels_resolve_as_endpoints_carry_them() -> None:
    known = ["c1", "c2"]
    src = resolve_end(parse_end("app=client", "src"), "src", "c1", known, IDENTITIES)
    # The namespace label defaults as for endpoints; the cluster label is the cluster's.
    assert src == Peer.endpoint(
        {"app": "client", NAMESPACE_LABEL: "default"}, "c1", identity=CLIENT_ID
    )
    dst_spec = parse_end(f"app=web,{CLUSTER_LABEL}=c2", "dst")
    dst = resolve_end(dst_spec, "dst", "c1", known, IDENTITIES)
    assert (dst.cluster, dst.identity, dst.labels[CLUSTER_LABEL]) == ("c2", WEB_C2_ID, "c2")
    # Labels no identity has: still an endpoint, judged by its labels.
    other = resolve_end(
        parse_end("app=new,k8s:io.kubernetes.pod.namespace=shop", "src"),
        "src",
        "c1",
        known,
        IDENTITIES,
    )
    assert other.identity == 0 and other.labels[NAMESPACE_LABEL] == "shop"
    mesh_err = r"dst: cluster 'c9' .* not in this agent's mesh \(known: c1, c2\)"
    with pytest.raises(TraceError, match=mesh_err):
        resolve_end(parse_end(f"app=web,{CLUSTER_LABEL}=c9", "dst"), "dst", "c1", known, IDENTITIES)


def test_identities_of_any_cluster_and_reserved_ones() -> None:
    known = ["c1", "c2"]
    dst = resolve_end(
        EndSpec(EndKind.IDENTITY, identity=WEB_C2_ID), "dst_identity", "c1", known, IDENTITIES
    )
    assert dst.kind is PeerKind.ENDPOINT and dst.cluster == "c2" and dst.labels["app"] == "web"
    host = parse_request({"src_identity": 1, "dst": "a=b", "dport": "1"}).src
    assert resolve_end(host, "src_identity", "c1", known, IDENTITIES) == Peer.reserved(1)
    with pytest.raises(TraceError, match="src_identity: no identity 65999 in this agent's"):
        resolve_end(
            EndSpec(EndKind.IDENTITY, identity=65999), "src_identity", "c1", known, IDENTITIES
        )
    world = resolve_end(parse_end("ip:192.0.2.1", "dst"), "dst", "c1", known, IDENTITIES)
    assert world == Peer.world("192.0.2.1")


def test_each_endpoint_ends_cluster_is_read_and_judges_its_side() -> None:
    a = Peer.endpoint({"app": "a"}, "c1")
    b = Peer.endpoint({"app": "b"}, "c2")
    assert clusters_to_read(a, b) == ["c1", "c2"]
    assert clusters_to_read(Peer.world("192.0.2.1"), b) == ["c2"]
    assert clusters_to_read(Peer.reserved(1), Peer.world()) == []
    assert sides_judged_by("c2", a, b) == ["ingress at the destination"]
    assert sides_judged_by("c1", a, Peer.endpoint({"app": "x"}, "c1")) == [
        "egress at the source",
        "ingress at the destination",
    ]


# -- the answer ------------------------------------------------------------------

ALLOW_C1_CLIENTS = cnp(
    {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"app": "client", CLUSTER_LABEL: "c1"}}],
                "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
            }
        ],
    },
    cluster="c2",
    name="web",
)
DENY_8080 = cnp(
    {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingressDeny": [
            {
                "fromEndpoints": [{"matchLabels": {CLUSTER_LABEL: "c1"}}],
                "toPorts": [{"ports": [{"port": "8080"}]}],
            }
        ],
        "ingress": [{"fromEntities": ["all"]}],
    },
    cluster="c2",
    name="no-8080",
)


def _trace(dport: int, policies: dict[str, list[Policy]]) -> dict[str, Any]:
    src = Peer.endpoint({"app": "client", NAMESPACE_LABEL: "default"}, "c1", CLIENT_ID)
    dst = Peer.endpoint({"app": "web", NAMESPACE_LABEL: "default"}, "c2", WEB_C2_ID)
    return answer(src, dst, TCP, dport, policies)


def test_a_cross_cluster_allow_and_a_deny_overriding_an_allow_name_their_rules() -> None:
    policies = {"c1": [], "c2": [ALLOW_C1_CLIENTS, DENY_8080]}
    ok = _trace(80, policies)
    assert ok["verdict"] == "ALLOWED" and ok["allowed"] is True
    assert ok["egress"]["reason"] == "not-enforced"
    assert ok["decided_by"] == "ingress"
    assert ok["ingress"]["rule"] == {"cluster": "c2", "id": "default/no-8080: spec.ingress[0]"}
    assert set(ok["ingress"]["selected_by"]) == {"default/web", "default/no-8080"}
    no = _trace(8080, policies)
    assert no["verdict"] == "DENIED" and no["allowed"] is False
    assert no["ingress"]["reason"] == "denied"
    assert no["ingress"]["rule"] == {"cluster": "c2", "id": "default/no-8080: spec.ingressDeny[0]"}
    assert {"cluster": "c2", "id": "default/no-8080: spec.ingress[0]"} in no["ingress"]["allows"]
    assert no["resolved"]["dst"] == {
        "kind": "endpoint",
        "identity": WEB_C2_ID,
        "cluster": "c2",
        "labels": {"app": "web", CLUSTER_LABEL: "c2", NAMESPACE_LABEL: "default"},
    }
    assert no["policies"] == {"c1": 0, "c2": 2}
    assert no["warnings"] == []


def test_a_policy_stored_for_another_cluster_is_left_out_and_said() -> None:
    # c2's etcd holds a record that claims to be c1's: it must not judge c1's endpoints.
    forged = cnp({"endpointSelector": {}, "egress": [{}]}, cluster="c1", name="forged")
    got = _trace(80, {"c1": [], "c2": [forged, ALLOW_C1_CLIENTS]})
    assert got["egress"]["reason"] == "not-enforced"  # not default-deny by the forged one
    assert got["allowed"] is True
    assert got["policies"] == {"c1": 0, "c2": 1}
    assert any("default/forged is stored for cluster 'c1'" in w for w in got["warnings"])
    warnings: list[str] = []
    assert policies_of("c2", [forged], warnings) == [] and len(warnings) == 1


def test_an_end_no_identity_has_is_judged_by_labels_with_a_warning() -> None:
    src = Peer.endpoint({"app": "client"}, "c1")
    got = answer(src, Peer.world("192.0.2.1"), TCP, 443, {"c1": []}, ["earlier"])
    assert got["allowed"] is True
    assert got["warnings"][0] == "earlier"
    assert "src: no identity of cluster c1 has exactly these labels" in got["warnings"][1]
    assert got["resolved"]["dst"] == {
        "kind": "reserved",
        "identity": 2,
        "name": "world",
        "address": "192.0.2.1",
    }


# -- glia policy get -----------------------------------------------------------------


def test_the_view_counts_selected_local_endpoints_and_carries_revisions() -> None:
    web = cnp(
        {"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]},
        cluster="c1",
        name="web",
    )
    everyone = cnp({"endpointSelector": {}, "egress": [{}]}, cluster="c1", name="all")
    stray = cnp({"endpointSelector": {}, "egress": [{}]}, cluster="c9", name="stray")
    listing = PolicyListing(
        [everyone, stray, web],
        revision=42,
        mod_revisions={("default", "web"): 7, ("default", "all"): 9},
        skipped=["glia/config/v1/policies/default/bad: not JSON"],
    )
    eps = [
        {"app": "web", NAMESPACE_LABEL: "default"},
        {"app": "web", NAMESPACE_LABEL: "shop"},
        {"app": "db", NAMESPACE_LABEL: "default"},
    ]
    view = policy_view(listing, "c1", eps)
    assert view["cluster"] == "c1" and view["revision"] == 42
    by_name = {p["metadata"]["name"]: p for p in view["policies"]}
    assert set(by_name) == {"all", "web"}
    assert by_name["web"]["status"] == {"cluster": "c1", "revision": 7, "endpoints": 1}
    assert by_name["all"]["status"]["endpoints"] == 2  # its namespace only
    assert by_name["web"]["kind"] == "CiliumNetworkPolicy"
    assert view["skipped"][0].endswith("not JSON")
    assert "default/stray is stored for cluster 'c9'" in view["skipped"][1]
