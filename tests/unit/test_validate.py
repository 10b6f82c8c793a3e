"""glia.validate: every kind of record read from etcd, good and forged.

Table tests name each forged record the issue found; hypothesis then throws
arbitrary JSON (and bytes) at every validator: the only outcomes are a model
object that satisfies the invariants, or :class:`Rejected` — never another
exception.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from json_strategies import json_values

from glia.kvstore import keys
from glia.model import codec
from glia.model.endpoint import Endpoint, EndpointState
from glia.model.identity import Identity
from glia.model.ipcache import IPCacheEntry
from glia.model.node import Node, PodCIDRAllocation
from glia.model.service import Backend, BackendHealth, ClusterService, ProbeResult, Protocol
from glia.model.service import ServicePort as Port
from glia.validate.addresses import unicast
from glia.validate.bounds import ClusterBounds
from glia.validate.endpoints import check_endpoint, check_endpoint_placement
from glia.validate.errors import Rejected
from glia.validate.health import check_health
from glia.validate.identities import check_identity, cluster_range
from glia.validate.ipcache import check_entry
from glia.validate.nodes import check_node, check_podcidr
from glia.validate.rejects import RejectLog
from glia.validate.services import check_cluster_service

B = ClusterBounds.of("c1", 1, "10.1.0.0/16", "10.96.0.0/16")
CIDRS = {"n1": ipaddress.IPv4Network("10.1.0.0/24"), "n2": ipaddress.IPv4Network("10.1.1.0/24")}


def enc(obj: Any) -> bytes:
    return codec.encode(obj)


def patched(obj: Any, **changes: Any) -> bytes:
    """The JSON of ``obj`` with fields replaced by values its type would not allow."""
    d = codec.to_dict(obj)
    d.update(changes)
    return json.dumps(d).encode()


# --- addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1", "169.254.1.1", "240.0.0.1",
     "10.1.5", "010.1.0.5", "10.1.0.5 ", "::1", "x"],
)  # fmt: skip
def test_unicast_refuses(text: str) -> None:
    with pytest.raises(Rejected):
        unicast(text, "ip")


# --- nodes --------------------------------------------------------------------------

NODE = Node(name="n2", cluster="c1", cluster_id=1, node_ip="198.18.1.2", boot_id="b")
NODE_KEY = keys.node("c1", "n2")


def test_node_good() -> None:
    assert check_node(NODE_KEY, enc(NODE), B) == NODE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (patched(NODE, node_ip="not-an-ip"), "not an IPv4 address"),
        (patched(NODE, node_ip="10.1.0.1"), "inside the pod pool"),
        (patched(NODE, node_ip="10.96.0.1"), "inside the service CIDR"),
        (patched(NODE, node_ip="127.0.0.1"), "loopback"),
        (patched(NODE, cluster_id=300), "cluster_id 300"),
        (patched(NODE, cluster="c2"), "cluster 'c2'"),
        (patched(NODE, name="n1"), "does not match its key"),
        (patched(NODE, boot_id="x" * 1000), "boot_id"),
        (b"{", "not valid JSON"),
        (b'{"name": "n2"}', "Field required"),
    ],
)
def test_node_forged(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        check_node(NODE_KEY, raw, B)


def test_node_of_another_cluster_key() -> None:
    with pytest.raises(Rejected, match="expected 'c1'"):
        check_node(keys.node("c2", "n2"), enc(NODE), B)


def test_podcidr() -> None:
    key = keys.podcidr_node("c1", "n2")
    assert check_podcidr(key, enc(PodCIDRAllocation("n2", "10.1.1.0/24")), B) == (
        "n2",
        ipaddress.IPv4Network("10.1.1.0/24"),
    )
    with pytest.raises(Rejected, match="outside the pod pool"):
        check_podcidr(key, enc(PodCIDRAllocation("n2", "10.2.1.0/24")), B)
    with pytest.raises(Rejected, match="does not match"):
        check_podcidr(key, enc(PodCIDRAllocation("n1", "10.1.1.0/24")), B)


# --- ipcache ------------------------------------------------------------------------

ENTRY = IPCacheEntry(
    ip="10.1.1.5", identity=65792, tunnel_endpoint="198.18.1.2", cluster_id=1, node="n2"
)
ENTRY_KEY = keys.ipcache("c1", "n2", "10.1.1.5")


def test_entry_good() -> None:
    assert check_entry(ENTRY_KEY, enc(ENTRY), B).entry == ENTRY


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (patched(ENTRY, tunnel_endpoint="not-an-ip"), "tunnel_endpoint"),
        (patched(ENTRY, cluster_id=999), "cluster_id 999"),
        (patched(ENTRY, identity=(1 << 32) + 65792), "outside cluster c1's range"),
        (patched(ENTRY, identity=2 << 16 | 300), "outside cluster c1's range"),
        (patched(ENTRY, identity=2), "outside cluster c1's range"),  # WORLD
        (patched(ENTRY, identity=-1), "outside"),
        (patched(ENTRY, ip="10.1.1.6"), "does not match its key"),
        (patched(ENTRY, node="n1"), "does not match its key"),
    ],
)
def test_entry_forged(raw: bytes, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        check_entry(ENTRY_KEY, raw, B)


def test_entry_may_carry_init_while_labels_are_unknown() -> None:
    assert check_entry(ENTRY_KEY, patched(ENTRY, identity=5), B).entry.identity == 5


# --- identities ---------------------------------------------------------------------


def test_identity_master_key() -> None:
    lo, hi = cluster_range(1)
    assert (lo, hi) == (65792, 131071)
    ident = Identity(65800, {"app": "web"})
    assert check_identity(keys.identity_id("c1", 65800), enc(ident), B) == ident
    with pytest.raises(Rejected, match="does not match its key"):
        check_identity(keys.identity_id("c1", 65801), enc(ident), B)
    with pytest.raises(Rejected, match="outside"):
        check_identity(keys.identity_id("c1", 5), enc(Identity(5, {})), B)
    many = Identity(65800, {f"k{i}": "v" for i in range(500)})
    with pytest.raises(Rejected, match="500 labels"):
        check_identity(keys.identity_id("c1", 65800), enc(many), B)


# --- endpoints ----------------------------------------------------------------------

EP = Endpoint(
    container_id="abc",
    namespace="default",
    name="web",
    cluster="c1",
    node="n2",
    ip="10.1.1.5",
    identity=65792,
    labels={"app": "web"},
    state=EndpointState.READY,
)
EP_KEY = keys.endpoint("c1", "n2", "default", "web")


def test_endpoint_good_and_placed() -> None:
    ep = check_endpoint(EP_KEY, enc(EP), B)
    check_endpoint_placement(ep, CIDRS["n2"])


@pytest.mark.parametrize(
    ("ep", "reason"),
    [
        (replace(EP, ip="198.18.0.2"), "outside the pod pool"),  # the etcd server
        (replace(EP, ip="0.0.0.0"), "unspecified"),
        (replace(EP, node="n1"), "its key"),
        (replace(EP, identity=1 << 40), "outside"),
    ],
)
def test_endpoint_forged(ep: Endpoint, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        check_endpoint(EP_KEY, enc(ep), B)


def test_endpoint_of_another_nodes_block() -> None:
    ep = check_endpoint(EP_KEY, enc(replace(EP, ip="10.1.0.9")), B)
    with pytest.raises(Rejected, match="node n2's pod CIDR"):
        check_endpoint_placement(ep, CIDRS["n2"])
    with pytest.raises(Rejected, match="no pod CIDR"):
        check_endpoint_placement(ep, None)


# --- services -----------------------------------------------------------------------


def _backend(ip: str, node: str = "n1", port: int = 8080, fport: int = 80) -> Backend:
    return Backend(
        ip=ip,
        port=port,
        protocol=Protocol.TCP,
        port_name="",
        frontend_port=fport,
        node=node,
        cluster="c1",
        endpoint="default/x",
        ready=True,
    )


SVC = ClusterService(
    namespace="default",
    name="web",
    cluster="c1",
    cluster_id=1,
    cluster_ip="10.96.0.10",
    ports=[Port(port=80, target_port=8080)],
    backends=[_backend("10.1.0.5"), _backend("10.1.1.5", "n2")],
)
SVC_KEY = keys.service("c1", "default", "web")


def test_service_good() -> None:
    checked = check_cluster_service(SVC_KEY, enc(SVC), B, CIDRS)
    assert checked.service == SVC and checked.dropped == []


@pytest.mark.parametrize(
    ("svc", "reason"),
    [
        (replace(SVC, cluster_ip="10.1.0.5"), "outside the service CIDR"),  # another pod's IP
        (replace(SVC, cluster_ip="8.8.8.8"), "outside the service CIDR"),
        (replace(SVC, cluster_ip="10.96.0.0"), "network or broadcast"),
        (replace(SVC, cluster_id=2), "cluster_id 2"),
        (replace(SVC, name="other"), "its key"),
        (replace(SVC, ports=[]), "0 ports"),
        (replace(SVC, ports=[Port(80, 8080), Port(80, 9090)]), "appears twice"),
        (replace(SVC, ports=[Port(0, 8080)]), "not a port"),
        (replace(SVC, affinity="sideways"), "affinity"),
        (replace(SVC, affinity="local", affinity_min_ready=-1), "affinity_min_ready -1"),
        (replace(SVC, affinity="local", affinity_min_ready=65536), "affinity_min_ready 65536"),
    ],
)
def test_service_forged_frontend(svc: ClusterService, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        check_cluster_service(SVC_KEY, enc(svc), B, CIDRS)


def test_service_bad_backends_are_dropped_alone() -> None:
    bad = [
        _backend("0.0.0.0"),
        _backend("127.0.0.1"),
        _backend("255.255.255.255"),
        _backend("198.18.0.2"),  # etcd
        _backend("10.1.1.7", node="n1"),  # n2's address claimed for n1
        _backend("10.1.0.6", fport=443),  # not a port of the service
        _backend("10.1.0.6", port=0),
    ] + [_backend(f"10.1.{9 + i // 250}.{1 + i % 250}", node="ghost") for i in range(10_000)]
    svc = replace(SVC, backends=[*SVC.backends, *bad])
    checked = check_cluster_service(SVC_KEY, enc(svc), B, CIDRS)
    assert checked.service.backends == SVC.backends
    assert len(checked.dropped) == len(bad)
    assert any("node 'ghost'" in d for d in checked.dropped)


# --- health -------------------------------------------------------------------------


def test_health_only_about_own_addresses() -> None:
    results = [
        ProbeResult("default/web", "10.1.1.5", 8080, True, 0.0),
        ProbeResult("default/web", "10.1.0.5", 8080, False, 0.0),  # n1's backend
        ProbeResult("default/web", "nonsense", 8080, False, 0.0),
    ]
    key = keys.health("c1", "n2")
    value, dropped = check_health(key, enc(BackendHealth("n2", results)), B, CIDRS["n2"])
    assert dropped == 2 and [r.ip for r in value.results] == ["10.1.1.5"]
    with pytest.raises(Rejected, match="does not match"):
        check_health(key, enc(BackendHealth("n1", [])), B, CIDRS["n2"])


# --- rejects ------------------------------------------------------------------------


def test_reject_log_logs_once_and_clears(caplog: pytest.LogCaptureFixture) -> None:
    r = RejectLog("ipcache")
    r.reject("k1", "bad")
    r.reject("k1", "bad")
    r.reject("k2", "worse")
    assert r.count == 2 and r.total == 2
    assert sum("rejected k1" in m for m in caplog.messages) == 1
    r.sync({"k2": "worse"})
    assert r.current() == {"k2": "worse"}
    assert r.status()["last_rejected"]["key"] == "k2"


# --- properties: arbitrary input never escapes as another exception -------------------


def _mutations(base: Any) -> st.SearchStrategy[bytes]:
    """The record with one field replaced by anything, or anything at all."""
    d = codec.to_dict(base)
    field_patch = st.tuples(st.sampled_from(sorted(d)), json_values).map(
        lambda kv: json.dumps({**d, kv[0]: kv[1]}).encode()
    )
    return field_patch | json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=64)


HEALTH_KEY = keys.health("c1", "n2")
ID_KEY = keys.identity_id("c1", 65800)
CASES: list[tuple[str, Any, Callable[[bytes], Any]]] = [
    ("node", NODE, lambda raw: check_node(NODE_KEY, raw, B)),
    ("entry", ENTRY, lambda raw: check_entry(ENTRY_KEY, raw, B)),
    ("endpoint", EP, lambda raw: check_endpoint(EP_KEY, raw, B)),
    ("service", SVC, lambda raw: check_cluster_service(SVC_KEY, raw, B, CIDRS)),
    ("health", BackendHealth("n2", []), lambda raw: check_health(HEALTH_KEY, raw, B, CIDRS["n2"])),
    ("identity", Identity(65800, {}), lambda raw: check_identity(ID_KEY, raw, B)),
]


@pytest.mark.parametrize(("name", "base", "check"), CASES, ids=[c[0] for c in CASES])
def test_validators_only_accept_or_reject(
    name: str, base: Any, check: Callable[[bytes], Any]
) -> None:
    lo, hi = cluster_range(1)

    @settings(max_examples=300, deadline=None)
    @given(_mutations(base))
    def run(raw: bytes) -> None:
        try:
            out = check(raw)
        except Rejected:
            return
        # What passes keeps the invariants the datapath relies on.
        if name == "entry":
            assert out.entry.identity == 5 or lo <= out.entry.identity <= hi
            assert B.pool_of(ipaddress.IPv4Address(out.entry.ip)) is not None
        elif name == "service":
            assert ipaddress.IPv4Address(out.service.cluster_ip) in B.service_cidr  # type: ignore[operator]
            for b in out.service.backends:
                assert ipaddress.IPv4Address(b.ip) in CIDRS[b.node]
        elif name == "node":
            assert out.cluster_id == 1 and out.name == "n2"

    run()
