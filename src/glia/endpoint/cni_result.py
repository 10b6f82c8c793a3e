"""The CNI 1.0 ADD result for an endpoint (pure).

Called by :class:`glia.endpoint.manager.EndpointManager` for ``POST
/v1/cni/add``. Besides the interfaces, the address and the default route, the
result carries a ``dns`` block when the agent serves DNS on port 53 of the
node's IP (docs/dns.md): podman's CNI backend writes it into the container's
``/etc/resolv.conf`` (nameserver, search list), so every podman user gets
glia's DNS without configuring podman.
"""

from __future__ import annotations

from typing import Any

from glia.model.endpoint import Endpoint

CLUSTER_DOMAIN = "cluster.local"
# As Kubernetes' kubelet writes for a pod: "web.shop" goes through the search
# list before it is tried as an absolute name.
DNS_OPTIONS = ("ndots:5",)


def search_domains(namespace: str) -> list[str]:
    """The pod's search list: its own namespace's Services first, as in Kubernetes."""
    return [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]


def dns_block(nameserver: str | None, namespace: str) -> dict[str, Any]:
    """The result's ``dns``: empty when the node serves no DNS on port 53."""
    if nameserver is None:
        return {}
    return {
        "nameservers": [nameserver],
        "search": search_domains(namespace),
        "options": list(DNS_OPTIONS),
    }


def add_result(
    ep: Endpoint, gateway: str, cni_version: str = "1.0.0", nameserver: str | None = None
) -> dict[str, Any]:
    """The ADD result; ``nameserver``: the node IP when its agent serves DNS on port 53."""
    return {
        "cniVersion": cni_version,
        "interfaces": [
            {"name": ep.host_ifname, "mac": ep.host_mac},
            {"name": ep.ifname, "mac": ep.mac, "sandbox": ep.netns},
        ],
        "ips": [{"address": f"{ep.ip}/32", "gateway": gateway, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
        "dns": dns_block(nameserver, ep.namespace),
    }
