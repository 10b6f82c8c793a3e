"""glia.dns.names: names and query types to answers (pure)."""

from __future__ import annotations

from glia.dns.names import ServiceName, Sources, Verdict, resolve

SERVICES = {
    ("shop", "web"): ServiceName("100.64.0.10", global_=False),
    ("default", "api"): ServiceName("100.64.0.11", global_=True),
}
PODS = {"client": [("default", "10.1.0.5")], "twin": [("a", "10.1.0.6"), ("b", "10.1.1.6")]}
SRC = Sources(
    service=lambda ns, name: SERVICES.get((ns, name)), pods=lambda name: PODS.get(name, [])
)


def test_service_name_gives_its_cluster_ip_in_any_case_with_or_without_the_root_dot() -> None:
    for name in ("web.shop.svc.cluster.local", "WEB.Shop.svc.cluster.local."):
        assert resolve(name, "A", SRC).addresses == ("100.64.0.10",)


def test_the_search_forms_reach_the_service() -> None:
    # resolv.conf: search default.svc.cluster.local svc.cluster.local cluster.local
    assert resolve("api.default.svc.cluster.local", "A", SRC).addresses == ("100.64.0.11",)
    assert resolve("web.shop.svc.cluster.local", "A", SRC).verdict is Verdict.ANSWER
    assert resolve("web.default.svc.cluster.local", "A", SRC).verdict is Verdict.NXDOMAIN


def test_clusterset_names_only_global_services() -> None:
    assert resolve("api.default.svc.clusterset.local", "A", SRC).addresses == ("100.64.0.11",)
    assert resolve("web.shop.svc.clusterset.local", "A", SRC).verdict is Verdict.NXDOMAIN


def test_container_names() -> None:
    assert resolve("client", "A", SRC).addresses == ("10.1.0.5",)
    assert resolve("client.cluster.local", "A", SRC).addresses == ("10.1.0.5",)
    assert resolve("twin", "A", SRC).addresses == ("10.1.0.6", "10.1.1.6")
    assert resolve("twin.b.pod.cluster.local", "A", SRC).addresses == ("10.1.1.6",)
    assert resolve("twin.c.pod.cluster.local", "A", SRC).verdict is Verdict.NXDOMAIN


def test_known_names_answer_other_types_with_no_data() -> None:
    for qtype in ("AAAA", "MX", "TXT"):
        ans = resolve("web.shop.svc.cluster.local", qtype, SRC)
        assert (ans.verdict, ans.addresses) == (Verdict.ANSWER, ())
    assert resolve("client", "AAAA", SRC) == resolve("client", "TXT", SRC)


def test_unknown_names_in_our_zones_are_nxdomain_others_go_elsewhere() -> None:
    for name in (
        "nope.shop.svc.cluster.local",
        "nope",
        "a.b.c.cluster.local",
        "x.clusterset.local",
    ):
        assert resolve(name, "A", SRC).verdict is Verdict.NXDOMAIN, name
        assert resolve(name, "AAAA", SRC).verdict is Verdict.NXDOMAIN, name
    assert resolve("example.org", "A", SRC).verdict is Verdict.ELSEWHERE
    assert resolve(".", "NS", SRC).verdict is Verdict.NXDOMAIN
