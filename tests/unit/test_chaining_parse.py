"""CNI chaining, the pure parts: prevResult parsing and refusals, the chained block,
glia's IPAM keeping out of it, the chained conflist, glia-cni accepting a chained ADD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from glia.cni import invocation
from glia.cni.config import DISABLE_IPV6, chained_conflist
from glia.cni.spec import CniError
from glia.endpoint.chained_request import check_address, parse_prev
from glia.ipam.local import AddressRefused, LocalIPAM
from glia.ipam.pool import PoolExhausted, chained_block

# What ptp (containernetworking/plugins 1.1) returns: host veth first, no sandbox.
PTP_RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "veth1a2b3c4d", "mac": "aa:bb:cc:00:00:01"},
        {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/run/netns/netns-1"},
    ],
    "ips": [{"address": "10.1.0.194/26", "gateway": "10.1.0.193", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


def refused(fn: Any, *args: Any, **kw: Any) -> CniError:
    with pytest.raises(CniError) as ei:
        fn(*args, **kw)
    return ei.value


def test_ptp_result_gives_the_address_and_host_names() -> None:
    prev = parse_prev(PTP_RESULT, "eth0")
    assert prev.ip == "10.1.0.194"
    assert prev.host_names == ("veth1a2b3c4d",)
    assert prev.result == PTP_RESULT  # passed on unchanged


def test_bridge_result_lists_the_bridge_too() -> None:
    bridge = {
        "interfaces": [
            {"name": "cni0"},
            {"name": "veth9"},
            {"name": "eth0", "sandbox": "/run/netns/x"},
        ],
        "ips": [{"address": "10.1.0.200/26", "interface": 2}],
    }
    prev = parse_prev(bridge, "eth0")
    assert (prev.ip, prev.host_names) == ("10.1.0.200", ("cni0", "veth9"))


def test_an_address_of_another_interface_is_not_ours() -> None:
    two = {
        "interfaces": [{"name": "eth0", "sandbox": "/n"}, {"name": "net1", "sandbox": "/n"}],
        "ips": [
            {"address": "10.1.0.194/26", "interface": 0},
            {"address": "10.9.0.1/24", "interface": 1},
        ],
    }
    assert parse_prev(two, "eth0").ip == "10.1.0.194"


@pytest.mark.parametrize(
    ("prev", "ifname", "code", "words"),
    [
        ({"ips": PTP_RESULT["ips"][:0]}, "eth0", 7, "0 interfaces named eth0"),
        (PTP_RESULT, "net1", 7, "0 interfaces named net1 (CNI_IFNAME) in the container"),
        ({**PTP_RESULT, "ips": []}, "eth0", 7, "0 IPv4 addresses for eth0"),
        (
            {
                **PTP_RESULT,
                "ips": [
                    {"address": "10.1.0.194/26", "interface": 1},
                    {"address": "10.1.0.195/26", "interface": 1},
                ],
            },
            "eth0",
            7,
            "2 IPv4 addresses for eth0 (10.1.0.194, 10.1.0.195); a glia endpoint has exactly one",
        ),
        (
            {**PTP_RESULT, "ips": [{"address": "fd00::5/64", "interface": 1}]},
            "eth0",
            7,
            "fd00::5 is IPv6; glia's datapath carries IPv4 only",
        ),
        (
            {**PTP_RESULT, "ips": [{"address": "10.1.0.194", "interface": 1}]},
            "eth0",
            7,
            "invalid prevResult: prevResult.ips[0].address",
        ),
        ("not a result", "eth0", 7, "invalid prevResult: prevResult: expected a JSON object"),
    ],
)
def test_what_glia_cannot_use_is_refused(prev: Any, ifname: str, code: int, words: str) -> None:
    e = refused(parse_prev, prev, ifname)
    assert e.code == code and words in e.msg, e.msg


def test_a_different_requested_address_is_refused() -> None:
    assert parse_prev(PTP_RESULT, "eth0", "10.1.0.194").ip == "10.1.0.194"
    e = refused(parse_prev, PTP_RESULT, "eth0", "10.1.0.7")
    assert e.code == 4 and "previous plugin gave 10.1.0.194" in e.msg


def test_the_address_must_be_the_nodes_and_not_glias() -> None:
    check_address("10.1.0.194", "10.1.0.0/24", "10.1.0.1", None)
    e = refused(check_address, "10.2.0.194", "10.1.0.0/24", "10.1.0.1", None)
    assert e.code == 7 and "outside this node's pod CIDR 10.1.0.0/24" in e.msg
    e = refused(check_address, "10.1.0.1", "10.1.0.0/24", "10.1.0.1", None)
    assert "glia gateway" in e.msg
    e = refused(check_address, "10.1.0.5", "10.1.0.0/24", "10.1.0.1", "shop/web")
    assert "held by shop/web" in e.msg


def test_chained_block_is_the_last_of_the_node_cidr() -> None:
    assert chained_block("10.1.3.0/24", 26) == "10.1.3.192/26"
    assert chained_block("10.1.3.0/24", 0) is None
    for bad in (24, 16, 31):
        with pytest.raises(ValueError, match="chained_prefix"):
            chained_block("10.1.3.0/24", bad)


def test_glias_ipam_never_hands_out_the_chained_block(tmp_path: Path) -> None:
    ipam = LocalIPAM(tmp_path / "ipam.json", "10.1.0.0/28", reserved="10.1.0.8/29")
    got = [ipam.allocate(f"c{i}") for i in range(6)]
    assert got == [f"10.1.0.{i}" for i in range(2, 8)]
    with pytest.raises(PoolExhausted, match=r"all 13 endpoint addresses of 10\.1\.0\.0/28"):
        ipam.allocate("c7")
    with pytest.raises(AddressRefused) as ei:
        ipam.allocate("c8", "10.1.0.9")
    assert "10.1.0.9 is in 10.1.0.8/29, the chained plugin's addresses" in str(ei.value)


def test_chained_conflist_is_ptp_then_glia() -> None:
    conf = chained_conflist(
        "10.1.0.192/26", "/run/glia/n1.sock", nameservers=("198.18.1.1",), ipam_data_dir="/d"
    )
    ptp, tuning, glia = conf["plugins"]
    assert (ptp["type"], ptp["ipMasq"], glia["type"]) == ("ptp", False, "glia-cni")
    assert tuning == {"type": "tuning", "sysctl": DISABLE_IPV6}  # IPv6 off in the pod
    assert ptp["ipam"]["ranges"] == [[{"subnet": "10.1.0.192/26", "gateway": "10.1.0.193"}]]
    assert ptp["ipam"]["dataDir"] == "/d" and ptp["dns"] == {"nameservers": ["198.18.1.1"]}
    assert glia["agentSocket"] == "/run/glia/n1.sock"
    json.dumps(conf)
    with pytest.raises(ValueError, match="no room"):
        chained_conflist("10.1.0.192/31")


ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c0ffee",
    "CNI_NETNS": "/run/netns/netns-1",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni",
}


def test_glia_cni_passes_a_chained_add_to_the_agent() -> None:
    conf = {"cniVersion": "1.0.0", "name": "glia-chained", "type": "glia-cni"}
    inv = invocation.parse_invocation(ENV, json.dumps({**conf, "prevResult": PTP_RESULT}).encode())
    assert invocation.agent_request(inv)["prev_result"]["ips"] == PTP_RESULT["ips"]
    bad = {**conf, "prevResult": {"ips": [{"address": "nope"}]}}
    e = refused(invocation.parse_invocation, ENV, json.dumps(bad).encode())
    assert e.code == 7 and "prevResult.ips[0].address" in e.msg
    e = refused(invocation.parse_invocation, ENV, json.dumps({**conf, "prevResult": [1]}).encode())
    assert e.code == 7 and "prevResult must be an object" in e.msg
