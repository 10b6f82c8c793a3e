"""CNI chaining after ``bridge``, the pure parts: its prevResult, the bridge
conflist and the chained block split between ptp and bridge (docs/chaining.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glia.cni.config import DISABLE_IPV6, bridge_conflist, chained_conflist, split_chained_block
from glia.endpoint.chained_request import parse_prev

# What bridge (containernetworking/plugins 1.1) returns: the bridge, the host
# veth (both without a sandbox), then the pod's interface.
BRIDGE_RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "gliabr0", "mac": "aa:bb:cc:00:00:10"},
        {"name": "veth5e6f7a8b", "mac": "aa:bb:cc:00:00:11"},
        {"name": "eth0", "mac": "aa:bb:cc:00:00:12", "sandbox": "/run/netns/netns-1"},
    ],
    "ips": [{"address": "10.1.0.226/27", "gateway": "10.1.0.225", "interface": 2}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}


def test_a_bridge_result_gives_the_pod_address_and_both_host_interfaces() -> None:
    prev = parse_prev(BRIDGE_RESULT, "eth0")
    assert prev.ip == "10.1.0.226"
    assert prev.host_names == ("gliabr0", "veth5e6f7a8b")  # the kernel picks the veth
    assert prev.result == BRIDGE_RESULT


def test_the_chained_block_splits_into_a_ptp_half_and_a_bridge_half() -> None:
    assert split_chained_block("10.1.0.192/26") == ("10.1.0.192/27", "10.1.0.224/27")
    assert split_chained_block("10.1.0.248/29") == ("10.1.0.248/30", "10.1.0.252/30")
    with pytest.raises(ValueError, match="too small to split"):
        split_chained_block("10.1.0.252/30")


def test_bridge_conflist_is_bridge_then_glia() -> None:
    conf = bridge_conflist(
        "10.1.0.224/27",
        "/run/glia/n1.sock",
        bridge="gliabr0",
        nameservers=("198.18.1.1",),
        ipam_data_dir="/d",
        tuning_data_dir="/t",
    )
    br, tuning, glia = conf["plugins"]
    assert tuning == {"type": "tuning", "sysctl": DISABLE_IPV6, "dataDir": "/t"}
    assert (br["type"], br["bridge"], br["isGateway"]) == ("bridge", "gliabr0", True)
    assert (br["ipMasq"], br["hairpinMode"], br["mtu"]) == (False, False, 1450)
    assert br["ipam"]["ranges"] == [[{"subnet": "10.1.0.224/27", "gateway": "10.1.0.225"}]]
    assert br["ipam"]["dataDir"] == "/d" and br["dns"] == {"nameservers": ["198.18.1.1"]}
    assert (glia["type"], glia["agentSocket"]) == ("glia-cni", "/run/glia/n1.sock")
    assert conf["name"] == "glia-bridge"
    json.dumps(conf)
    # ptp's list has the same shape around its first plugin.
    ptp = chained_conflist("10.1.0.192/27", "/run/glia/n1.sock", ipv6=True)
    assert ptp["plugins"][1] == glia and "dns" not in ptp["plugins"][0]
    # ipv6=True: no tuning, the pod keeps what the previous plugin left.
    assert [p["type"] for p in bridge_conflist("10.1.0.224/27", ipv6=True)["plugins"]] == [
        "bridge",
        "glia-cni",
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"subnet": "10.1.0.224/31"}, "no room"),
        ({"bridge": "a-bridge-name-too-long"}, "interface name"),
        ({"bridge": "br 0"}, "interface name"),
        ({"bridge": ""}, "interface name"),
        ({"name": "bad name"}, "network name"),
        ({"agent_socket": "agent.sock"}, "absolute path"),
        ({"mtu": 100}, "mtu 100"),
    ],
)
def test_bridge_conflist_refuses_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"subnet": "10.1.0.224/27", **kwargs}
    with pytest.raises(ValueError, match=match):
        bridge_conflist(**args)
