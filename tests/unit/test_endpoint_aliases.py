"""Issue 10: --network-alias names, the ADD result's DNS, options glia refuses.

Pure parts: glia.endpoint.request (aliases, unsupported options), the endpoint
record's aliases (glia.model.endpoint, glia.validate.endpoints), the DNS
container-name index (glia.dns.pods) and glia.endpoint.cni_result.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from glia.cni.spec import CniError
from glia.dns.names import Sources, Verdict, resolve
from glia.dns.pods import PodNames
from glia.endpoint import request
from glia.endpoint.cni_result import add_result
from glia.kvstore import keys
from glia.kvstore.client import KeyValue
from glia.model import codec
from glia.model.endpoint import MAX_ALIASES, Endpoint
from glia.validate.bounds import ClusterBounds
from glia.validate.endpoints import check_endpoint
from glia.validate.errors import Rejected

BOUNDS = ClusterBounds.of("c1", 1, "10.1.0.0/16")
SHORT_ID = "0123456789ab"


def body(args: dict[str, str] | None = None, **config: Any) -> dict[str, Any]:
    return {
        "container_id": SHORT_ID + "c" * 52,
        "netns": "/run/netns/x",
        "ifname": "eth0",
        "args": {"K8S_POD_NAME": "db1"} if args is None else args,
        "config": {"cniVersion": "1.0.0", "name": "glia", **config},
    }


def refusal(b: dict[str, Any]) -> CniError:
    with pytest.raises(CniError) as e:
        request.parse_add(b)
    return e.value


# -- aliases at ADD -------------------------------------------------------------------


def test_aliases_of_this_network_as_podman_sends_them() -> None:
    rc = {"aliases": {"glia": ["db", "DB", "Primary-DB", SHORT_ID], "other": ["nope"]}}
    assert request.parse_add(body(runtimeConfig=rc)).aliases == ("db", "primary-db", SHORT_ID)
    assert request.parse_add(body()).aliases == ()
    assert request.parse_add(body(runtimeConfig={"aliases": {"other": ["x"]}})).aliases == ()


@pytest.mark.parametrize(
    ("aliases", "text"),
    [
        ("db", "runtimeConfig.aliases must be an object"),
        ({"glia": "db"}, "runtimeConfig.aliases.glia: expected a list of names"),
        ({"glia": [1]}, "runtimeConfig.aliases.glia: expected a list of names"),
        ({"glia": ["db.shop"]}, "--network-alias 'db.shop' is not a DNS label"),
        ({"glia": ["-db"]}, "is not a DNS label"),
        ({"glia": ["db_1"]}, "is not a DNS label"),
        ({"glia": [""]}, "is not a DNS label"),
        ({"glia": ["a" * 64]}, "at most 63"),
        ({"glia": [f"a{i}" for i in range(MAX_ALIASES + 1)]}, "33 network aliases"),
    ],
)
def test_bad_aliases_are_refused_with_code_7(aliases: Any, text: str) -> None:
    e = refusal(body(runtimeConfig={"aliases": aliases}))
    assert e.code == 7 and text in e.msg, e.msg


# -- options glia cannot honour --------------------------------------------------------


def test_what_podman_and_kubernetes_always_send_is_accepted() -> None:
    k8s = {
        "K8S_POD_NAME": "web",
        "K8S_POD_NAMESPACE": "shop",
        "K8S_POD_INFRA_CONTAINER_ID": "abc",
        "K8S_POD_UID": "u-1",
        "IP": "10.1.0.9",
    }
    assert request.parse_add(body(k8s)).namespace == "shop"
    rc = {"aliases": {"glia": ["web"]}, "ips": ["10.1.0.9"], "portMappings": []}
    assert request.parse_add(body(runtimeConfig=rc)).ip == "10.1.0.9"


@pytest.mark.parametrize(
    ("b", "code", "text"),
    [
        (body({"MAC": "02:00:00:00:00:01"}), 4, "--mac-address (CNI_ARGS MAC) is not supported"),
        (body({"K8S_POD_NAME": "x", "GATEWAY": "1.2.3.4"}), 4, "CNI_ARGS GATEWAY is not supp"),
        (body(runtimeConfig={"mac": "02:00:00:00:00:01"}), 7, "runtimeConfig.mac (capability)"),
        (body(runtimeConfig={"bandwidth": {}}), 7, "runtimeConfig.bandwidth (capability)"),
        (body(runtimeConfig=[]), 7, "runtimeConfig must be an object"),
        (body(runtimeConfig={"ips": ["10.1.0.9", "10.1.0.10"]}), 4, "2 addresses requested"),
        (body(runtimeConfig={"ips": ["10.1.0.9", "fd00::9"]}), 4, "fd00::9 is IPv6"),
    ],
)
def test_options_glia_cannot_honour_are_refused_by_name(
    b: dict[str, Any], code: int, text: str
) -> None:
    e = refusal(b)
    assert e.code == code and text in e.msg, e.msg


# -- the record -------------------------------------------------------------------------


def record(node: str, ns: str, name: str, ip: str, aliases: tuple[str, ...]) -> tuple[str, bytes]:
    ep = Endpoint(SHORT_ID * 5, ns, name, "c1", node, ip, 65792 + 300, aliases=aliases)
    return keys.endpoint("c1", node, ns, name), codec.encode(ep)


def test_aliases_survive_the_record_and_old_records_have_none() -> None:
    key, raw = record("n1", "default", "db1", "10.1.0.5", ("db", SHORT_ID))
    assert check_endpoint(key, raw, BOUNDS).aliases == ("db", SHORT_ID)
    old = codec.to_dict(codec.decode(Endpoint, raw))
    del old["aliases"]
    assert codec.from_dict(Endpoint, old).aliases == ()


@pytest.mark.parametrize(
    ("aliases", "text"),
    [
        (("DB",), "alias 'DB' is not a DNS label"),
        (("db.shop",), "is not a DNS label"),
        (tuple(f"a{i}" for i in range(MAX_ALIASES + 1)), "33 aliases; at most 32"),
    ],
)
def test_a_record_with_bad_aliases_is_rejected(aliases: tuple[str, ...], text: str) -> None:
    key, raw = record("n1", "default", "db1", "10.1.0.5", aliases)
    with pytest.raises(Rejected, match=text.replace(".", r"\.")):
        check_endpoint(key, raw, BOUNDS)


# -- DNS -------------------------------------------------------------------------------


def kv(key: str, raw: bytes) -> KeyValue:
    return KeyValue(key, raw, 1, 1, 1, 0)


def test_aliases_answer_like_names_and_leave_with_the_record() -> None:
    names = PodNames(BOUNDS)
    k1, r1 = record("n1", "default", "db1", "10.1.0.5", ("db", SHORT_ID))
    k2, r2 = record("n2", "shop", "db2", "10.1.1.5", ("db",))
    names.on_upsert(k1, kv(k1, r1))
    names.on_upsert(k2, kv(k2, r2))
    src = Sources(service=lambda ns, name: None, pods=names.lookup)
    assert resolve("db", "A", src).addresses == ("10.1.0.5", "10.1.1.5")
    assert resolve(f"{SHORT_ID}.cluster.local", "A", src).addresses == ("10.1.0.5",)
    assert resolve("db.shop.pod.cluster.local", "A", src).addresses == ("10.1.1.5",)
    assert resolve("db1", "A", src).addresses == ("10.1.0.5",)
    # the alias dropped by an update of the record no longer answers
    k1b, r1b = record("n1", "default", "db1", "10.1.0.5", ())
    names.on_upsert(k1b, kv(k1b, r1b))
    assert resolve(SHORT_ID, "A", src).verdict is Verdict.NXDOMAIN
    assert resolve("db", "A", src).addresses == ("10.1.1.5",)
    names.on_delete(k2, None)
    names.on_delete(k1, None)
    assert resolve("db", "A", src).verdict is Verdict.NXDOMAIN
    assert len(names) == 0


def test_the_add_result_names_the_nodes_dns_and_the_namespace_first() -> None:
    ep = Endpoint("c" * 64, "shop", "web", "c1", "n1", "10.1.0.5", 5, netns="/run/netns/x")
    assert add_result(ep, "10.1.0.1", nameserver="198.18.1.1")["dns"] == {
        "nameservers": ["198.18.1.1"],
        "search": ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        "options": ["ndots:5"],
    }
    assert add_result(replace(ep, namespace="default"), "10.1.0.1")["dns"] == {}
