"""The entry format (resolution, lookup, diff, LPM port prefixes), the incremental engine's
bookkeeping and CIDR identities."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glia.model.identity import CLUSTER_LABEL, NAMESPACE_LABEL, ReservedIdentity
from glia.policy.cidr import LOCAL_SCOPE, CidrIdentities, is_cidr_identity, policy_prefixes
from glia.policy.compiled import PORT_MAX, PROTO_ANY, PROTO_TCP, PROTO_UDP, PortRange
from glia.policy.engine import PolicyEngine, subject_key
from glia.policy.entries import (
    ANY_IDENTITY,
    Action,
    EndpointPolicy,
    Grant,
    PolicyKey,
    PolicyValue,
    diff,
    port_prefixes,
    resolve,
)
from glia.policy.manifest import parse_policy
from glia.policy.model import Direction, Policy

IN = Direction.INGRESS
ALLOW, DENY = Action.ALLOW, Action.DENY


# -- port prefixes ---------------------------------------------------------------


def test_port_prefixes_examples() -> None:
    assert port_prefixes(0, PORT_MAX) == [(0, 0)]
    assert port_prefixes(80, 80) == [(80, 16)]
    assert port_prefixes(8000, 8080) == [(8000, 10), (8064, 12), (8080, 16)]
    assert port_prefixes(1, PORT_MAX)[0] == (1, 16)
    with pytest.raises(ValueError):
        port_prefixes(10, 9)


@given(st.integers(0, PORT_MAX), st.integers(0, PORT_MAX))
def test_port_prefixes_cover_the_range_exactly_with_aligned_blocks(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    blocks = port_prefixes(lo, hi)
    expect = lo
    for port, plen in blocks:
        size = 1 << (16 - plen)
        assert port == expect and port % size == 0
        expect = port + size
    assert expect == hi + 1
    assert len(blocks) <= 32


# -- resolution ------------------------------------------------------------------

PR = st.builds(
    lambda proto, a, b: PortRange(proto, min(a, b), max(a, b)),
    st.sampled_from([PROTO_TCP, PROTO_UDP]),
    st.sampled_from([0, 1, 79, 80, 81, 100, 1000, PORT_MAX]),
    st.sampled_from([0, 80, 81, 99, 100, 2000, PORT_MAX]),
)
GRANTS = st.builds(
    Grant, st.one_of(st.none(), PR), st.sampled_from(Action), st.sampled_from(["r1", "r2", "r3"])
)


def truth(grants: dict[int, frozenset[Grant]], identity: int, proto: int, port: int) -> Action:
    """Deny if any deny of the identity or of ANY covers it, else allow if an allow does."""
    found = [
        g
        for ident in (identity, ANY_IDENTITY)
        for g in grants.get(ident, frozenset())
        if g.ports is None or (g.ports.proto == proto and g.ports.lo <= port <= g.ports.hi)
    ]
    if any(g.action is DENY for g in found):
        return DENY
    if any(g.action is ALLOW for g in found):
        return ALLOW
    return DENY


@given(
    st.dictionaries(
        st.sampled_from([ANY_IDENTITY, 300, 301, 302]),
        st.frozensets(GRANTS, min_size=1, max_size=4),
        max_size=4,
    ),
    st.lists(
        st.tuples(
            st.sampled_from([300, 301, 302, 303]),
            st.sampled_from([PROTO_TCP, PROTO_UDP, 1]),
            st.sampled_from([0, 1, 79, 80, 81, 99, 100, 101, 1000, 1999, 2000, 2001, PORT_MAX]),
        ),
        min_size=1,
        max_size=20,
    ),
)
@settings(max_examples=500, deadline=None)
def test_resolved_entries_answer_like_the_grants(
    grants: dict[int, frozenset[Grant]], probes: list[tuple[int, int, int]]
) -> None:
    entries = resolve(IN, grants)
    policy = EndpointPolicy(True, False, entries)
    # the format's invariants
    by_group: dict[tuple[int, int], list[PolicyKey]] = {}
    for k in entries:
        assert k.direction is IN
        if k.proto == PROTO_ANY:
            assert (k.lo, k.hi) == (0, PORT_MAX)
        by_group.setdefault((k.identity, k.proto), []).append(k)
    for keys in by_group.values():
        keys.sort(key=lambda k: k.lo)
        for a, b in itertools.pairwise(keys):
            assert a.hi < b.lo, (a, b)
    for identity, proto, port in probes:
        port = 0 if proto == 1 else port
        hit = policy.lookup(IN, identity, proto, port)
        assert hit.action is truth(grants, identity, proto, port), (identity, proto, port, hit)
        if hit.value is not None:
            assert hit.value.rules


def test_an_any_deny_is_copied_into_an_identity_that_allows_more() -> None:
    grants = {
        300: frozenset({Grant(None, ALLOW, "allow-all")}),
        ANY_IDENTITY: frozenset({Grant(PortRange(PROTO_TCP, 22, 22), DENY, "no-ssh")}),
    }
    entries = resolve(IN, grants)
    assert entries == {
        PolicyKey(IN, 300, PROTO_ANY, 0, PORT_MAX): PolicyValue(ALLOW, ("allow-all",)),
        PolicyKey(IN, 300, PROTO_TCP, 22, 22): PolicyValue(DENY, ("no-ssh",)),
        PolicyKey(IN, ANY_IDENTITY, PROTO_TCP, 22, 22): PolicyValue(DENY, ("no-ssh",)),
    }


def test_adjacent_ranges_with_the_same_answer_merge_and_identities_share_work() -> None:
    g = frozenset(
        {
            Grant(PortRange(PROTO_TCP, 80, 89), ALLOW, "a"),
            Grant(PortRange(PROTO_TCP, 90, 99), ALLOW, "a"),
        }
    )
    entries = resolve(IN, {300: g, 301: g})
    assert entries == {
        PolicyKey(IN, 300, PROTO_TCP, 80, 99): PolicyValue(ALLOW, ("a",)),
        PolicyKey(IN, 301, PROTO_TCP, 80, 99): PolicyValue(ALLOW, ("a",)),
    }


def test_lookup_of_a_direction_not_enforced_allows() -> None:
    p = EndpointPolicy(True, False, {})
    assert p.lookup(Direction.EGRESS, 300, PROTO_TCP, 80).action is ALLOW
    assert p.lookup(IN, 300, PROTO_TCP, 80).action is DENY


def test_diff() -> None:
    k1 = PolicyKey(IN, 300, PROTO_TCP, 80, 80)
    k2 = PolicyKey(IN, 301, PROTO_TCP, 80, 80)
    old = EndpointPolicy(True, False, {k1: PolicyValue(ALLOW, ("a",)), k2: PolicyValue(ALLOW)})
    new = EndpointPolicy(True, True, {k1: PolicyValue(DENY, ("b",))})
    d = diff(old, new)
    assert d.upserts == {k1: PolicyValue(DENY, ("b",))}
    assert d.deletes == [k2]
    assert d.enforcement == (True, True)
    assert not diff(new, new)
    first = diff(None, new)
    assert first.upserts == new.entries and first.enforcement == (True, True)


# -- the engine's bookkeeping ----------------------------------------------------


def cnp(name: str, spec: dict[str, Any], cluster: str = "c1") -> Policy:
    return parse_policy(
        {
            "apiVersion": "cilium.io/v2",
            "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name},
            "spec": spec,
        },
        cluster=cluster,
    )


WEB = {"app": "web", NAMESPACE_LABEL: "default"}
DB = {"app": "db", NAMESPACE_LABEL: "default"}
CLIENT = {"app": "client", NAMESPACE_LABEL: "default"}
WEB_ONLY_CLIENTS = cnp(
    "web",
    {
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}]}],
    },
)


def allowed(engine: PolicyEngine, subject: dict[str, str], peer: int) -> bool:
    return engine.compute(subject).lookup(IN, peer, PROTO_TCP, 80).action is ALLOW


def test_changes_report_only_the_subjects_they_touch() -> None:
    e = PolicyEngine("c1")
    e.compute(WEB)
    e.compute(DB)
    web, db = subject_key({**WEB, CLUSTER_LABEL: "c1"}), subject_key({**DB, CLUSTER_LABEL: "c1"})
    assert e.subjects() == {web, db}
    assert e.upsert_policy(WEB_ONLY_CLIENTS) == {web}
    assert e.upsert_policy(WEB_ONLY_CLIENTS) == set()  # unchanged
    assert not allowed(e, WEB, 0x10100)
    assert e.upsert_identity(0x10100, CLIENT, "c1") == {web}  # a client appeared
    assert allowed(e, WEB, 0x10100)
    assert e.upsert_identity(0x10101, DB, "c1") == set()  # nobody's rules name db
    assert e.upsert_identity(0x10100, {**CLIENT, "v": "2"}, "c1") == set()  # still a client
    assert allowed(e, WEB, 0x10100)
    assert e.upsert_identity(0x10100, DB, "c1") == {web}  # no longer a client
    assert not allowed(e, WEB, 0x10100)
    assert e.delete_identity(int(ReservedIdentity.HOST)) == set()
    e.forget(DB)
    assert e.subjects() == {web}
    assert e.delete_policy("default", "web") == {web}
    assert not e.compute(WEB).ingress_enforced


def test_endpoints_selected_by_the_same_rules_share_their_entries() -> None:
    e = PolicyEngine("c1")
    e.upsert_policy(WEB_ONLY_CLIENTS)
    a = e.compute({**WEB, "pod": "a"})
    b = e.compute({**WEB, "pod": "b"})
    assert a is b
    assert a.ingress_enforced and not a.egress_enforced


def test_set_policies_is_a_relist() -> None:
    e = PolicyEngine("c1")
    e.compute(WEB)
    other = cnp("db", {"endpointSelector": {"matchLabels": {"app": "db"}}, "egress": [{}]})
    e.set_policies([WEB_ONLY_CLIENTS, other])
    assert [p.name for p in e.policies()] == ["db", "web"]
    assert e.set_policies([WEB_ONLY_CLIENTS, other]) == set()
    assert e.set_policies([other]) == {subject_key({**WEB, CLUSTER_LABEL: "c1"})}
    assert [p.name for p in e.policies()] == ["db"]


def test_an_engine_takes_only_its_own_clusters_policies() -> None:
    with pytest.raises(ValueError, match="cluster 'c2'"):
        PolicyEngine("c1").upsert_policy(cnp("x", {"endpointSelector": {}}, cluster="c2"))


def test_cidr_identities_flow_into_entries() -> None:
    e = PolicyEngine("c1")
    p = cnp(
        "out",
        {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "egress": [{"toCIDRSet": [{"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}]}],
        },
    )
    e.upsert_policy(p)
    e.compute(WEB)
    cidrs = CidrIdentities()
    added = cidrs.sync(policy_prefixes([p])).added
    assert set(added) == {"192.0.2.0/24", "192.0.2.128/25"}
    reported = set()
    for prefix, n in added.items():
        reported |= e.upsert_cidr_identity(n, prefix)
    assert reported == {subject_key({**WEB, CLUSTER_LABEL: "c1"})}
    out = e.compute(WEB)

    def to(address: str) -> Action:
        return out.lookup(Direction.EGRESS, cidrs.identity_of(address), PROTO_TCP, 443).action

    assert to("192.0.2.1") is ALLOW
    assert to("192.0.2.129") is DENY
    assert to("198.51.100.1") is DENY
    assert cidrs.identity_of("198.51.100.1") == ReservedIdentity.WORLD


# -- CIDR identities -------------------------------------------------------------


def test_cidr_identity_numbers_are_stable_and_released() -> None:
    c = CidrIdentities()
    first = c.sync(["10.0.0.0/8", "10.1.0.0/16"])
    assert first.removed == {}
    assert all(is_cidr_identity(n) and n > LOCAL_SCOPE for n in first.added.values())
    second = c.sync(["10.1.0.0/16", "192.0.2.0/24"])
    assert second.removed == {"10.0.0.0/8": first.added["10.0.0.0/8"]}
    assert list(second.added) == ["192.0.2.0/24"]
    assert c.by_prefix["10.1.0.0/16"] == first.added["10.1.0.0/16"]
    assert c.identity_of("10.1.2.3") == first.added["10.1.0.0/16"]
    assert c.identity_of("10.2.0.1") == ReservedIdentity.WORLD


def test_cidr_identities_adopt_what_the_ipcache_holds_and_can_run_out() -> None:
    c = CidrIdentities(first=LOCAL_SCOPE | 1, last=LOCAL_SCOPE | 2)
    c.adopt({"10.0.0.0/8": LOCAL_SCOPE | 2})
    added = c.sync(["10.0.0.0/8", "10.1.0.0/16"]).added
    assert added == {"10.1.0.0/16": LOCAL_SCOPE | 1}
    with pytest.raises(RuntimeError):
        c.sync(["10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16"])
    with pytest.raises(ValueError):
        c.adopt({"10.3.0.0/16": LOCAL_SCOPE | 2})


def test_rows_are_plain_values_in_key_order() -> None:
    e = PolicyEngine("c1")
    e.upsert_identity(0x10100, CLIENT, "c1")
    e.upsert_policy(WEB_ONLY_CLIENTS)
    rows = e.compute(WEB).rows()
    assert rows == [
        {
            "direction": "ingress",
            "identity": int(ReservedIdentity.HOST),
            "proto": "ANY",
            "ports": [0, 65535],
            "action": "allow",
            "rules": ["implicit: the local host may reach its endpoints"],
        },
        {
            "direction": "ingress",
            "identity": 0x10100,
            "proto": "ANY",
            "ports": [0, 65535],
            "action": "allow",
            "rules": ["default/web: spec.ingress[0]"],
        },
    ]


def test_a_policy_replaced_by_one_selecting_others_reports_both() -> None:
    e = PolicyEngine("c1")
    e.compute(WEB)
    e.compute(DB)
    web, db = subject_key({**WEB, CLUSTER_LABEL: "c1"}), subject_key({**DB, CLUSTER_LABEL: "c1"})
    e.upsert_policy(WEB_ONLY_CLIENTS)
    now_db = cnp("web", {"endpointSelector": {"matchLabels": {"app": "db"}}, "ingress": [{}]})
    assert e.upsert_policy(now_db) == {web, db}
    assert not e.compute(WEB).ingress_enforced and e.compute(DB).ingress_enforced
