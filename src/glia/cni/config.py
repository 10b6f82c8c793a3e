"""The network configuration list that makes a runtime use glia-cni.

Called by the lab (and an installer on a real host) to write, e.g.,
``/etc/cni/net.d/10-glia.conflist``. Everything about the pod network (address,
routes, MTU) is decided by the agent; the plugin only needs to know which
agent to ask.

``podman run -p`` reaches a CNI plugin only through the ``portMappings``
capability: the list chains the standard ``portmap`` plugin after glia-cni
(docs/hostport.md), which DNATs the node's host ports to the pod with the
kernel's NAT in the node's namespace.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from glia.cni.spec import DEFAULT_AGENT_SOCKET, valid_name


# `podman run -p`: podman hands the mappings to plugins declaring the
# capability. `snat` masquerades connections from the node's 127.0.0.1 (with
# route_localnet on the pod's host veth) and a pod reaching its own host port;
# every other source keeps its address, so the pod's ingress policy judges it
# with the source's identity (docs/hostport.md).
def portmap_plugin() -> dict[str, Any]:
    return {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}


def conflist(
    agent_socket: str = DEFAULT_AGENT_SOCKET, name: str = "glia", mtu: int = 1450
) -> dict[str, Any]:
    """A CNI 1.0 configuration list: glia-cni, then portmap for ``podman run -p``.

    ``cniVersions`` (spec 1.1) lets a runtime that knows GC and STATUS use them;
    older runtimes read ``cniVersion``. ``mtu`` reaches the agent inside every
    request's ``config``; the agent decides the pod MTU. The capabilities make
    podman hand over ``--network-alias`` (``runtimeConfig.aliases``) and several
    ``--ip`` (``runtimeConfig.ips``; one comes as CNI_ARGS ``IP``), which the
    agent answers in DNS or refuses (docs/endpoints.md): undeclared, podman
    drops them without a word.
    """
    if not valid_name(name):
        raise ValueError(f"network name {name!r}: letters, digits, '_', '.', '-' only")
    if not agent_socket.startswith("/"):
        raise ValueError(f"agent socket {agent_socket!r} must be an absolute path")
    if not 576 <= mtu <= 65535:
        raise ValueError(f"mtu {mtu} must be in 576..65535")
    return {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": name,
        "plugins": [
            {
                "type": "glia-cni",
                "agentSocket": agent_socket,
                "mtu": mtu,
                # podman hands --network-alias and several --ip over only if declared;
                # portMappings only to refuse those glia cannot honour (glia.cni.ports).
                "capabilities": {"aliases": True, "ips": True, "portMappings": True},
            },
            portmap_plugin(),
        ],
    }


def chained_conflist(
    subnet: str,
    agent_socket: str = DEFAULT_AGENT_SOCKET,
    name: str = "glia-chained",
    mtu: int = 1450,
    nameservers: tuple[str, ...] = (),
    ipam_data_dir: str = "",
) -> dict[str, Any]:
    """glia-cni chained after the standard ``ptp`` plugin (docs/chaining.md).

    ``ptp`` creates the veth and addresses the pod from ``subnet`` with
    ``host-local``: the node's chained block (``glia status`` shows it as
    ``chained_cidr``; the agent's ``chained_prefix`` keeps glia's own IPAM out
    of it), its first host address the pods' gateway on every host veth.
    ``ipMasq`` is off: the agent's egress masquerades what leaves the mesh,
    and traffic to other pods keeps its address. glia-cni then attaches the
    datapath to ptp's host veth and gives the pod its identity, Services and
    policy. ``nameservers``: what ptp puts in the result (the node's DNS);
    ``ipam_data_dir``: where host-local keeps its leases ("" = its default,
    ``/var/lib/cni/networks/<name>``).
    """
    if not valid_name(name):
        raise ValueError(f"network name {name!r}: letters, digits, '_', '.', '-' only")
    if not agent_socket.startswith("/"):
        raise ValueError(f"agent socket {agent_socket!r} must be an absolute path")
    if not 576 <= mtu <= 65535:
        raise ValueError(f"mtu {mtu} must be in 576..65535")
    net = ipaddress.IPv4Network(subnet)
    if net.num_addresses < 4:
        raise ValueError(f"chained subnet {subnet} has no room for a gateway and a pod")
    ptp: dict[str, Any] = {
        "type": "ptp",
        "ipMasq": False,
        "mtu": mtu,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(net), "gateway": str(net.network_address + 1)}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    }
    if ipam_data_dir:
        ptp["ipam"]["dataDir"] = ipam_data_dir
    if nameservers:
        ptp["dns"] = {"nameservers": list(nameservers)}
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            ptp,
            {"type": "glia-cni", "agentSocket": agent_socket, "mtu": mtu},
        ],
    }
