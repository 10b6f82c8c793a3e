"""The network configuration list that makes a runtime use glia-cni.

Called by the lab (and an installer on a real host) to write, e.g.,
``/etc/cni/net.d/10-glia.conflist``. Everything about the pod network (address,
routes, MTU) is decided by the agent; the plugin only needs to know which
agent to ask.

``podman run -p`` reaches a CNI plugin only through the ``portMappings``
capability: glia-cni declares it and the agent serves the mappings as
load-balancer frontends in BPF (docs/hostport.md); no ``portmap`` plugin, no
kernel NAT.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from glia.cni.spec import DEFAULT_AGENT_SOCKET, valid_name


def conflist(
    agent_socket: str = DEFAULT_AGENT_SOCKET, name: str = "glia", mtu: int = 1450
) -> dict[str, Any]:
    """A CNI 1.0 configuration list: glia-cni alone (``podman run -p`` included).

    ``cniVersions`` (spec 1.1) lets a runtime that knows GC and STATUS use them;
    older runtimes read ``cniVersion``. ``mtu`` reaches the agent inside every
    request's ``config``; the agent decides the pod MTU. The capabilities make
    podman hand over ``--network-alias`` (``runtimeConfig.aliases``) and several
    ``--ip`` (``runtimeConfig.ips``; one comes as CNI_ARGS ``IP``), which the
    agent answers in DNS or refuses (docs/endpoints.md), and ``-p``
    (``runtimeConfig.portMappings``), which the agent serves on the lb maps
    (docs/hostport.md): undeclared, podman drops them without a word.
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
                # podman hands --network-alias, several --ip and -p over only if declared.
                "capabilities": {"aliases": True, "ips": True, "portMappings": True},
            },
        ],
    }


def _check_chained(name: str, agent_socket: str, mtu: int, subnet: str) -> ipaddress.IPv4Network:
    if not valid_name(name):
        raise ValueError(f"network name {name!r}: letters, digits, '_', '.', '-' only")
    if not agent_socket.startswith("/"):
        raise ValueError(f"agent socket {agent_socket!r} must be an absolute path")
    if not 576 <= mtu <= 65535:
        raise ValueError(f"mtu {mtu} must be in 576..65535")
    net = ipaddress.IPv4Network(subnet)
    if net.num_addresses < 4:
        raise ValueError(f"chained subnet {subnet} has no room for a gateway and a pod")
    return net


def split_chained_block(block: str) -> tuple[str, str]:
    """The node's chained block (``chained_cidr``) as two halves: ``ptp``'s, ``bridge``'s.

    The agent keeps one block out of its IPAM; two chained networks on the
    node must not share a host-local range (each network's host-local keeps
    its own leases, so they would hand out the same address), so each gets a
    half. The first half to ptp keeps ptp's addresses where a ptp-only
    node has them (its gateway is the block's first host either way).
    """
    net = ipaddress.IPv4Network(block)
    if net.prefixlen > 29:
        raise ValueError(f"chained block {block} is too small to split (at most /29)")
    low, high = net.subnets(prefixlen_diff=1)
    return str(low), str(high)


def _ipam(net: ipaddress.IPv4Network, data_dir: str) -> dict[str, Any]:
    ipam: dict[str, Any] = {
        "type": "host-local",
        "ranges": [[{"subnet": str(net), "gateway": str(net.network_address + 1)}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    if data_dir:
        ipam["dataDir"] = data_dir
    return ipam


# IPv6 off in the pod (docs/chaining.md): glia's datapath carries IPv4 only and
# drops what else a pod sends (UNKNOWN_L3), and ptp and bridge leave IPv6 on.
# The standard `tuning` plugin writes the sysctl in the pod's namespace; "all"
# reaches the interface the previous plugin already made, removing its
# link-local address. It runs before glia-cni, so glia never sees IPv6 from it.
DISABLE_IPV6 = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}


def tuning_plugin(data_dir: str = "") -> dict[str, Any]:
    """``tuning`` setting :data:`DISABLE_IPV6`; ``data_dir``: where it would keep its
    backups ("" = its default, /run/cni/tuning; it keeps none for sysctls alone)."""
    plugin: dict[str, Any] = {"type": "tuning", "sysctl": dict(DISABLE_IPV6)}
    if data_dir:
        plugin["dataDir"] = data_dir
    return plugin


def _chained_list(
    name: str,
    first: dict[str, Any],
    agent_socket: str,
    mtu: int,
    nameservers: tuple[str, ...],
    ipv6: bool,
    tuning_data_dir: str,
) -> dict[str, Any]:
    if nameservers:
        first["dns"] = {"nameservers": list(nameservers)}
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            first,
            *([] if ipv6 else [tuning_plugin(tuning_data_dir)]),
            {"type": "glia-cni", "agentSocket": agent_socket, "mtu": mtu},
        ],
    }


def chained_conflist(
    subnet: str,
    agent_socket: str = DEFAULT_AGENT_SOCKET,
    name: str = "glia-chained",
    mtu: int = 1450,
    nameservers: tuple[str, ...] = (),
    ipam_data_dir: str = "",
    ipv6: bool = False,
    tuning_data_dir: str = "",
) -> dict[str, Any]:
    """glia-cni chained after the standard ``ptp`` plugin (docs/chaining.md).

    ``ptp`` creates the veth and addresses the pod from ``subnet`` with
    ``host-local``: a range in the node's chained block (``glia status`` shows
    it as ``chained_cidr``; the agent's ``chained_prefix`` keeps glia's own
    IPAM out of it; :func:`split_chained_block` when ``bridge`` shares it), its
    first host address the pods' gateway on every host veth.
    ``ipMasq`` is off: the agent's egress masquerades what leaves the mesh,
    and traffic to other pods keeps its address. glia-cni then attaches the
    datapath to ptp's host veth and gives the pod its identity, Services and
    policy. ``nameservers``: what ptp puts in the result (the node's DNS);
    ``ipam_data_dir``: where host-local keeps its leases ("" = its default,
    ``/var/lib/cni/networks/<name>``). Unless ``ipv6``, ``tuning`` between the
    two turns IPv6 off in the pod (:func:`tuning_plugin`, ``tuning_data_dir``).
    """
    net = _check_chained(name, agent_socket, mtu, subnet)
    ptp: dict[str, Any] = {
        "type": "ptp",
        "ipMasq": False,
        "mtu": mtu,
        "ipam": _ipam(net, ipam_data_dir),
    }
    return _chained_list(name, ptp, agent_socket, mtu, nameservers, ipv6, tuning_data_dir)


def bridge_conflist(
    subnet: str,
    agent_socket: str = DEFAULT_AGENT_SOCKET,
    name: str = "glia-bridge",
    bridge: str = "gliabr0",
    mtu: int = 1450,
    nameservers: tuple[str, ...] = (),
    ipam_data_dir: str = "",
    ipv6: bool = False,
    tuning_data_dir: str = "",
) -> dict[str, Any]:
    """glia-cni chained after the standard ``bridge`` plugin (docs/chaining.md).

    ``bridge`` makes the Linux bridge ``bridge`` in the node's namespace (its
    address the first host of ``subnet``: the pods' gateway, ``isGateway``),
    plugs the host side of each pod's veth into it and addresses the pod from
    ``subnet`` with host-local; glia-cni then attaches the datapath to that
    veth, whose tc ingress runs before the bridge sees a frame, so pod traffic
    is glia's and only ARP and the node's own traffic cross the bridge.
    ``hairpinMode`` and ``ipMasq`` stay off (glia hairpins Services itself and
    masquerades only what leaves the mesh). Arguments as
    :func:`chained_conflist`'s.
    """
    net = _check_chained(name, agent_socket, mtu, subnet)
    if not 0 < len(bridge) <= 15 or not valid_name(bridge) or bridge in (".", ".."):
        raise ValueError(f"bridge {bridge!r}: an interface name, up to 15 letters or digits")
    first: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": False,
        "hairpinMode": False,
        "mtu": mtu,
        "ipam": _ipam(net, ipam_data_dir),
    }
    return _chained_list(name, first, agent_socket, mtu, nameservers, ipv6, tuning_data_dir)
