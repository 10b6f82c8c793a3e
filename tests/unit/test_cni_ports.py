"""glia-cni refuses the `podman run -p` mappings glia cannot honour (glia.cni.ports)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glia.cni import invocation, spec
from glia.cni.ports import PortMapping, PortMappingError, port_mappings

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/usr/lib/cni",
}


def conf(mappings: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "glia",
        "type": "glia-cni",
        "runtimeConfig": {"portMappings": mappings},
    }


def test_tcp_udp_and_host_ip_accepted() -> None:
    got = port_mappings(
        conf(
            [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
                {"hostPort": 9090, "containerPort": 80, "protocol": "TCP", "hostIP": "127.0.0.1"},
            ]
        )
    )
    assert got == [
        PortMapping(8080, 80, "tcp", ""),
        PortMapping(8053, 53, "udp", ""),
        PortMapping(9090, 80, "tcp", "127.0.0.1"),
    ]
    assert port_mappings({"cniVersion": "1.0.0"}) == []
    assert port_mappings({"runtimeConfig": {}}) == []


@pytest.mark.parametrize(
    ("mapping", "says"),
    [
        ({"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}, "tcp and udp only"),
        ({"hostPort": 8080, "containerPort": 80, "hostIP": "::1"}, "IPv4 only"),
        ({"hostPort": 8080, "containerPort": 80, "hostIP": "nope"}, "not an IP address"),
        ({"hostPort": 0, "containerPort": 80}, "hostPort: expected a port"),
        ({"hostPort": 80, "containerPort": 70000}, "containerPort: expected a port"),
        ({"hostPort": True, "containerPort": 80}, "hostPort: expected a port"),
        ("8080:80", "expected an object"),
    ],
)
def test_unusable_mapping_refused(mapping: Any, says: str) -> None:
    with pytest.raises(PortMappingError, match=says):
        port_mappings(conf([mapping]))


def test_add_fails_with_invalid_config_code() -> None:
    raw = json.dumps(conf([{"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}]))
    with pytest.raises(spec.CniError) as err:
        invocation.parse_invocation(ENV, raw.encode())
    assert err.value.code == spec.ERR_INVALID_CONFIG
    assert "podman run -p" in str(err.value.to_json("1.0.0"))
    # DEL never fails for it: the container must be removable.
    inv = invocation.parse_invocation({**ENV, "CNI_COMMAND": "DEL"}, raw.encode())
    assert inv.command == "DEL"
