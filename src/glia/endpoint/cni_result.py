"""The CNI 1.0 ADD result for an endpoint (pure)."""

from __future__ import annotations

from typing import Any

from glia.model.endpoint import Endpoint


def add_result(ep: Endpoint, gateway: str, cni_version: str = "1.0.0") -> dict[str, Any]:
    return {
        "cniVersion": cni_version,
        "interfaces": [
            {"name": ep.host_ifname, "mac": ep.host_mac},
            {"name": ep.ifname, "mac": ep.mac, "sandbox": ep.netns},
        ],
        "ips": [{"address": f"{ep.ip}/32", "gateway": gateway, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
        "dns": {},
    }
