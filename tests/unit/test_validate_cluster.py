"""glia.validate.cluster: a cluster record on its own, and clusters side by side in a mesh.

Tables name each bad record and each kind of clash; hypothesis then checks
that arbitrary input is only accepted or :class:`Rejected`, and that
:func:`mesh_conflicts` leaves a mesh without clashes, refuses nobody without
a reason, does not depend on order, and never lets a newcomer push an
established cluster out.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from json_strategies import json_values

from glia.kvstore import keys
from glia.model import codec
from glia.model.cluster import ClusterInfo
from glia.operator.config import OperatorConfig
from glia.operator.daemon import cluster_record
from glia.validate.cluster import check_cluster_info, mesh_conflicts
from glia.validate.errors import Rejected

KEY = keys.cluster_info("c2")
C2 = ClusterInfo("c2", 2, ["10.2.0.0/16"], "100.66.0.0/15")
LOCAL = ClusterInfo("c1", 1, ["10.1.0.0/16"], "100.64.0.0/15")


def raw(**changes: Any) -> bytes:
    d = codec.to_dict(C2)
    d.update(changes)
    return json.dumps(d).encode()


# --- one record ---------------------------------------------------------------------


def test_a_good_record_passes() -> None:
    assert check_cluster_info(KEY, codec.encode(C2), "c2") == C2
    assert check_cluster_info(KEY, codec.encode(C2), "c2", 2) == C2
    two = ClusterInfo("c2", 2, ["10.2.0.0/16", "10.20.0.0/16"], None)
    assert check_cluster_info(KEY, codec.encode(two), "c2", 2) == two
    # Fields a newer operator may add are ignored, as in every record.
    assert check_cluster_info(KEY, raw(region="eu"), "c2") == C2


@pytest.mark.parametrize(
    ("key", "value", "expected_id", "reason"),
    [
        (keys.cluster_info("c3"), raw(), None, "key is of cluster 'c3', expected 'c2'"),
        (keys.node("c2", "n1"), raw(), None, "layout glia/state/cluster/v1/<cluster>"),
        (KEY + "/x", raw(), None, "layout"),
        ("glia/other/c2", raw(), None, "not under a known glia prefix"),
        (KEY, raw(id=7), 2, "id 7 is not the configured cluster_id 2"),
        (KEY, raw(name="c3"), None, "name 'c3' does not match its key"),
        (KEY, b"not json", None, "not valid JSON"),
        (KEY, b"[]", None, "ClusterInfo"),
        (KEY, raw(id=0), None, r"id 0 is not in 1\.\.255"),
        (KEY, raw(id=256), None, r"id 256 is not in 1\.\.255"),
        (KEY, raw(id=True), None, "id must be an integer, got true"),
        (KEY, raw(id="2"), None, 'id must be an integer, got "2"'),
        (KEY, raw(id=2.0), None, "id must be an integer, got 2.0"),
        (KEY, raw(pod_pools=[]), None, r"pod_pools must list 1\.\.16 CIDRs"),
        (KEY, raw(pod_pools=[f"10.{i}.0.0/16" for i in range(17)]), None, "1..16"),
        (KEY, raw(pod_pools="10.2.0.0/16"), None, "pod_pools"),
        (KEY, raw(pod_pools=[5]), None, "pod_pools"),
        (KEY, raw(pod_pools=["nope"]), None, r"pod_pools\[0\] 'nope' is not an IPv4 CIDR"),
        (KEY, raw(pod_pools=["10.2.0.1/16"]), None, "host bits set"),
        (KEY, raw(pod_pools=["10.2.0.0/255.255.0.0"]), None, "not in canonical form"),
        (KEY, raw(pod_pools=["fd00::/64"]), None, "not an IPv4 CIDR"),
        (KEY, raw(pod_pools=["0.0.0.0/0"]), None, "wider than a /8"),
        (KEY, raw(pod_pools=["127.0.0.0/16"]), None, "loopback"),
        (KEY, raw(pod_pools=["224.0.0.0/8"]), None, "multicast"),
        (KEY, raw(pod_pools=["169.254.0.0/16"]), None, "link-local"),
        (KEY, raw(pod_pools=["255.255.255.255/32"]), None, "reserved"),
        (KEY, raw(pod_pools=["0.0.0.0/16"]), None, "this network"),
        (
            KEY,
            raw(pod_pools=["10.2.0.0/16", "10.2.4.0/24"]),
            None,
            r"pod_pools\[1\] 10.2.4.0/24 overlaps pod_pools\[0\] 10.2.0.0/16",
        ),
        (KEY, raw(service_cidr="10.2.128.0/20"), None, r"service_cidr .* overlaps pod_pools\[0\]"),
        (KEY, raw(service_cidr="100.66.0.1/15"), None, "service_cidr .* host bits"),
        (KEY, raw(service_cidr=""), None, "service_cidr '' is not an IPv4 CIDR"),
        (KEY, raw(name="C2"), None, "name 'C2' does not match"),
    ],
)
def test_bad_records_are_rejected_with_the_reason(
    key: str, value: bytes, expected_id: int | None, reason: str
) -> None:
    with pytest.raises(Rejected, match=reason):
        check_cluster_info(key, value, "c2", expected_id)


def test_a_bad_cluster_name_is_rejected() -> None:
    bad = keys.cluster_info("C_2")
    value = codec.encode(replace(C2, name="C_2"))
    with pytest.raises(Rejected, match="lowercase letters"):
        check_cluster_info(bad, value, "C_2")


def test_the_operator_checks_its_own_record_when_it_starts() -> None:
    cfg = OperatorConfig(cluster="c1", cluster_id=1, pod_pool="10.1.0.0/16")
    assert cluster_record(cfg) == ClusterInfo("c1", 1, ["10.1.0.0/16"], None)
    cfg = replace(cfg, service_cidr="100.64.0.0/15")
    assert cluster_record(cfg) == LOCAL
    for bad, reason in (
        (replace(cfg, service_cidr="10.1.128.0/20"), "service_cidr .* overlaps"),
        (replace(cfg, pod_pool="10.1.0.1/16"), "host bits"),
        (replace(cfg, cluster_id=0), r"not in 1\.\.255"),
        (replace(cfg, cluster="c/1"), "must be non-empty and contain no '/'"),
        (replace(cfg, cluster="C1"), "lowercase"),
    ):
        with pytest.raises(ValueError, match=f"do not make a valid cluster record: .*{reason}"):
            cluster_record(bad)


# --- side by side -------------------------------------------------------------------


def info(name: str, cid: int, *pools: str, svc: str | None = None) -> ClusterInfo:
    return ClusterInfo(name, cid, list(pools), svc)


def test_clusters_that_fit_are_all_accepted() -> None:
    remotes = {
        "c2": info("c2", 2, "10.2.0.0/16", svc="100.66.0.0/15"),
        "c3": info("c3", 3, "10.3.0.0/16", "10.30.0.0/16", svc="100.64.0.0/15"),
        "c4": info("c4", 4, "10.4.0.0/16"),
    }
    # c3's service CIDR equals ours: ClusterIPs never leave their cluster.
    assert mesh_conflicts(LOCAL, remotes) == {}
    assert mesh_conflicts(LOCAL, {}) == {}


@pytest.mark.parametrize(
    ("remote", "reason"),
    [
        (info("c2", 1, "10.2.0.0/16"), "cluster id 1 is also this cluster's"),
        (info("c1", 2, "10.2.0.0/16"), "cluster name 'c1' is also this cluster's"),
        (
            info("c2", 2, "10.2.0.0/16", "10.1.7.0/24"),
            "pod pool 10.1.7.0/24 overlaps this cluster's pod pool 10.1.0.0/16",
        ),
        (
            info("c2", 2, "10.0.0.0/8"),
            "pod pool 10.0.0.0/8 overlaps this cluster's pod pool 10.1.0.0/16",
        ),
        (
            info("c2", 2, "100.64.3.0/24"),
            "pod pool 100.64.3.0/24 overlaps this cluster's service CIDR 100.64.0.0/15",
        ),
        (
            info("c2", 2, "10.2.0.0/16", svc="10.1.0.0/20"),
            "service CIDR 10.1.0.0/20 overlaps this cluster's pod pool 10.1.0.0/16",
        ),
        (info("c2", 0, "10.2.0.0/16"), r"invalid cluster record: id 0 is not in 1\.\.255"),
        (info("c2", 2, "bogus"), "invalid cluster record: pod_pools"),
        (info("c2", 2), "invalid cluster record: pod_pools must list"),
        (info("c9", 2, "10.2.0.0/16"), "its record names cluster 'c9'"),
    ],
)
def test_a_remote_clashing_with_us_is_refused(remote: ClusterInfo, reason: str) -> None:
    name = "c2" if remote.name == "c9" else remote.name
    other = info("c3", 3, "10.3.0.0/16")
    refused = mesh_conflicts(LOCAL, {name: remote, "c3": other})
    assert list(refused) == [name]
    assert re.search(reason, refused[name]), refused[name]


def test_two_remotes_clashing_are_both_refused_and_told_why() -> None:
    remotes = {
        "c2": info("c2", 2, "10.2.0.0/16"),
        "c3": info("c3", 2, "10.3.0.0/16"),
        "c4": info("c4", 4, "10.4.0.0/16", svc="10.5.0.0/16"),
        "c5": info("c5", 5, "10.5.0.0/24"),
        "c6": info("c6", 6, "10.6.0.0/16"),
    }
    refused = mesh_conflicts(LOCAL, remotes)
    both = " (both refused until one of them is fixed or removed)"
    assert refused == {
        "c2": "cluster id 2 is also c3's" + both,
        "c3": "cluster id 2 is also c2's" + both,
        "c4": "service CIDR 10.5.0.0/16 overlaps c5's pod pool 10.5.0.0/24" + both,
        "c5": "pod pool 10.5.0.0/24 overlaps c4's service CIDR 10.5.0.0/16" + both,
    }


def test_an_incumbent_keeps_its_place_against_a_newcomer() -> None:
    c2 = info("c2", 2, "10.2.0.0/16")
    forged = info("c3", 3, "10.2.0.0/17")  # c3 claims part of c2's pool
    refused = mesh_conflicts(LOCAL, {"c2": c2, "c3": forged}, incumbents={"c2"})
    assert refused == {
        "c3": "pod pool 10.2.0.0/17 overlaps c2's pod pool 10.2.0.0/16, which was in the mesh first"
    }
    # The reverse, if c3 had been there first.
    assert set(mesh_conflicts(LOCAL, {"c2": c2, "c3": forged}, incumbents={"c3"})) == {"c2"}
    # A newcomer refused by an incumbent pushes no other newcomer out.
    c4 = info("c4", 4, "10.2.0.0/24")  # also inside c2's pool, and inside c3's
    refused = mesh_conflicts(LOCAL, {"c2": c2, "c3": forged, "c4": c4}, incumbents={"c2"})
    assert set(refused) == {"c3", "c4"}
    c5 = info("c5", 5, "10.5.0.0/16")
    c6 = info("c6", 3, "10.6.0.0/16")  # same id as c3, which an incumbent refuses
    refused = mesh_conflicts(LOCAL, {"c2": c2, "c3": forged, "c6": c6, "c5": c5}, {"c2"})
    assert set(refused) == {"c3"}


def test_a_remote_refused_for_clashing_with_us_pushes_nobody_out() -> None:
    greedy = info("c2", 2, "10.0.0.0/8")  # covers us and c3
    c3 = info("c3", 3, "10.3.0.0/16")
    assert set(mesh_conflicts(LOCAL, {"c2": greedy, "c3": c3})) == {"c2"}


def test_every_reason_is_given() -> None:
    c2 = info("c2", 2, "10.2.0.0/16")
    c3 = info("c3", 2, "10.3.0.0/16")
    c4 = info("c4", 4, "10.2.0.0/24")
    refused = mesh_conflicts(LOCAL, {"c2": c2, "c3": c3, "c4": c4})
    assert "c3's" in refused["c2"] and "c4's" in refused["c2"]


# --- properties -------------------------------------------------------------------------


CIDRS = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.128.0/17",
    "10.2.0.0/16",
    "10.2.0.0/24",
    "10.3.0.0/16",
    "10.4.0.0/16",
    "100.64.0.0/15",
    "100.64.0.0/24",
    "100.66.0.0/16",
    "192.168.0.0/16",
]
records = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["c2", "c3"]) | st.text(max_size=8),
        "id": st.integers(-1, 300) | json_values,
        "pod_pools": st.lists(st.sampled_from(CIDRS) | st.text(max_size=12), max_size=3)
        | json_values,
        "service_cidr": st.none() | st.sampled_from(CIDRS) | json_values,
    }
)


@settings(max_examples=400, deadline=None)
@given(
    records.map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)
def test_check_cluster_info_only_accepts_or_rejects(value: bytes) -> None:
    try:
        out = check_cluster_info(KEY, value, "c2", None)
    except Rejected:
        return
    assert out.name == "c2" and 1 <= out.id <= 255 and type(out.id) is int
    nets = [ipaddress.IPv4Network(p) for p in out.pod_pools]
    assert 1 <= len(nets) <= 16
    if out.service_cidr is not None:
        assert not any(ipaddress.IPv4Network(out.service_cidr).overlaps(n) for n in nets)


NAMES = ["c1", "c2", "c3", "c4", "c5", "c6"]
# Mostly records that fit beside us, so that several are accepted and clash
# among themselves; sometimes anything.
FITTING = [
    "10.2.0.0/16",
    "10.2.0.0/24",
    "10.3.0.0/16",
    "10.4.0.0/16",
    "10.5.0.0/16",
    "172.16.0.0/16",
]
fitting_infos = st.builds(
    ClusterInfo,
    name=st.sampled_from(NAMES[1:]),
    id=st.integers(2, 30),
    pod_pools=st.lists(st.sampled_from(FITTING), min_size=1, max_size=2, unique=True).filter(
        lambda pools: "10.2.0.0/24" not in pools or "10.2.0.0/16" not in pools
    ),
    service_cidr=st.none() | st.sampled_from(["100.64.0.0/15", "100.70.0.0/16", "10.5.0.0/16"]),
)
any_infos = st.builds(
    ClusterInfo,
    name=st.sampled_from(NAMES),
    id=st.sampled_from([0, 1, 2, 3, 256]),
    pod_pools=st.lists(st.sampled_from([*CIDRS, "bogus", "10.9.0.1/16"]), max_size=2),
    service_cidr=st.none() | st.sampled_from(CIDRS),
)
remote_infos = st.integers(0, 4).flatmap(lambda i: any_infos if i == 0 else fitting_infos)
meshes = st.dictionaries(
    st.sampled_from(NAMES[1:]), st.tuples(remote_infos, st.integers(0, 4)), max_size=5
).map(
    # Mostly named as configured; sometimes not (or named like us).
    lambda d: {k: (v if keep == 0 else replace(v, name=k)) for k, (v, keep) in d.items()}
)


def _valid(i: ClusterInfo) -> bool:
    try:
        check_cluster_info(keys.cluster_info(i.name), codec.encode(i), i.name)
    except (Rejected, ValueError):
        return False
    return True


def _clash(a: ClusterInfo, b: ClusterInfo) -> bool:
    """An independent statement of what may not sit side by side."""
    if a.id == b.id or a.name == b.name:
        return True
    pa = [ipaddress.IPv4Network(p) for p in a.pod_pools]
    pb = [ipaddress.IPv4Network(p) for p in b.pod_pools]
    sa = [ipaddress.IPv4Network(a.service_cidr)] if a.service_cidr else []
    sb = [ipaddress.IPv4Network(b.service_cidr)] if b.service_cidr else []
    return any(x.overlaps(y) for x in pa for y in pb + sb) or any(
        x.overlaps(y) for x in sa for y in pb
    )


@settings(max_examples=500, deadline=None)
@given(meshes, st.sets(st.sampled_from(NAMES[1:])))
def test_mesh_conflicts_properties(remotes: dict[str, ClusterInfo], incumbents: set[str]) -> None:
    refused = mesh_conflicts(LOCAL, remotes, incumbents)
    assert set(refused) <= set(remotes) and all(refused.values())
    accepted = {n: i for n, i in remotes.items() if n not in refused}
    # What is accepted is valid, named as configured, and clashes with nothing.
    for n, i in accepted.items():
        assert _valid(i) and i.name == n
        assert not _clash(i, LOCAL)
        for m, j in accepted.items():
            assert m == n or not _clash(i, j), (n, m)
    # Nobody is refused without a cause: invalid, misnamed, clashing with us or
    # with another remote that is itself a candidate.
    candidates = {
        n: i for n, i in remotes.items() if _valid(i) and i.name == n and not _clash(i, LOCAL)
    }
    for n in refused:
        if n in candidates:
            assert any(m != n and _clash(candidates[n], j) for m, j in candidates.items())
    # An incumbent that clashes with no other incumbent cannot be pushed out.
    for n in incumbents & set(candidates):
        if not any(
            m != n and m in incumbents and _clash(candidates[n], j) for m, j in candidates.items()
        ):
            assert n not in refused
    # The order of the mapping does not matter.
    assert mesh_conflicts(LOCAL, dict(reversed(list(remotes.items()))), incumbents) == refused


UNDERLAY = {"node_networks[0]": ipaddress.IPv4Network("198.18.0.0/15")}


def test_a_remote_pool_over_our_node_network_is_refused() -> None:
    """Its "pods" could be our nodes' or etcd's addresses: traffic to them would
    go into that cluster's tunnels."""
    remotes = {
        "c2": info("c2", 2, "198.19.0.0/16"),  # inside our underlay
        "c3": info("c3", 3, "10.3.0.0/16"),
        "c4": info("c4", 4, "198.0.0.0/8"),  # around it
    }
    assert mesh_conflicts(LOCAL, remotes, reserved=UNDERLAY) == {
        "c2": "pod pool 198.19.0.0/16 overlaps this cluster's node_networks[0] 198.18.0.0/15",
        "c4": "pod pool 198.0.0.0/8 overlaps this cluster's node_networks[0] 198.18.0.0/15",
    }
    del remotes["c4"]
    assert mesh_conflicts(LOCAL, remotes) == {}  # nothing reserved: nothing to clash with


def test_the_reserved_networks_of_an_agent() -> None:
    from glia.agent.config import AgentConfig, reserved_networks
    from glia.kvstore.config import EtcdConfig

    cfg = AgentConfig(
        "c1",
        1,
        "n1",
        "192.0.2.10",
        etcd=EtcdConfig(endpoints=["https://192.0.2.254:2379", "https://etcd.example:2379"]),
        node_networks=["198.18.0.0/15"],
    )
    assert {k: str(v) for k, v in reserved_networks(cfg).items()} == {
        "node_networks[0]": "198.18.0.0/15",
        "node IP": "192.0.2.10/32",
        "etcd endpoint 0": "192.0.2.254/32",
    }
    with pytest.raises(ValueError, match=r"node_networks\[1\] '10.0.0.1/8': not an IPv4"):
        reserved_networks(replace(cfg, node_networks=["198.18.0.0/15", "10.0.0.1/8"]))
