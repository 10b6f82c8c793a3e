"""glia.agent.egress (pure part): what is masqueraded, routed and let through."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from glia.agent.egress import ClusterNodes, NodeRoute, nft_script, plan
from glia.lab.world import answer

N = IPv4Network


def mesh() -> list[ClusterNodes]:
    return [
        ClusterNodes(
            pools=(N("10.1.0.0/16"),),
            nodes={
                "n1": ("198.18.1.1", N("10.1.1.0/24")),
                "n2": ("198.18.1.2", N("10.1.2.0/24")),
                "n3": ("198.18.1.3", None),  # no pod CIDR yet
            },
        ),
        ClusterNodes(pools=(N("10.2.0.0/16"),), nodes={"n1": ("198.18.2.1", N("10.2.1.0/24"))}),
    ]


def test_every_pool_of_the_mesh_is_exempt_and_other_nodes_are_routed() -> None:
    p = plan("10.1.1.0/24", "198.18.1.1", mesh())
    assert p.local_cidr == N("10.1.1.0/24")
    assert p.mesh == (N("10.1.0.0/16"), N("10.2.0.0/16"))
    assert p.nodes == tuple(IPv4Address(a) for a in ("198.18.1.2", "198.18.1.3", "198.18.2.1"))
    assert p.routes == (
        NodeRoute(N("10.1.2.0/24"), IPv4Address("198.18.1.2")),
        NodeRoute(N("10.2.1.0/24"), IPv4Address("198.18.2.1")),
    )


def test_node_cidrs_count_when_a_cluster_names_no_pool() -> None:
    clusters = [ClusterNodes(pools=(), nodes={"b": ("192.0.2.2", N("10.9.2.0/24"))})]
    p = plan("10.9.1.0/24", "192.0.2.1", clusters)
    assert p.mesh == (N("10.9.1.0/24"), N("10.9.2.0/24"))
    assert p.routes == (NodeRoute(N("10.9.2.0/24"), IPv4Address("192.0.2.2")),)


def test_alone_the_node_masquerades_everything_but_its_own_pods() -> None:
    p = plan("10.1.1.0/24", "198.18.1.1", [])
    assert p.mesh == (N("10.1.1.0/24"),) and p.nodes == () and p.routes == ()
    script = nft_script(p)
    assert "set nodes { type ipv4_addr; }" in script  # empty sets: no elements clause


def test_the_script_masquerades_pods_and_drops_new_connections_from_outside() -> None:
    script = nft_script(plan("10.1.1.0/24", "198.18.1.1", mesh()))
    assert script.startswith("table ip glia_egress\ndelete table ip glia_egress\n")
    assert "elements = { 10.1.0.0/16, 10.2.0.0/16 }" in script
    assert 'ip saddr 10.1.1.0/24 ip daddr != @mesh oifname != "gliae*" masquerade' in script
    lines = [ln.strip() for ln in script.splitlines()]
    fwd = lines[lines.index("chain forward {") :]
    # Replies first; connections the node DNATed itself (host ports: also a pod's
    # to a pod behind its own node's port); then the pods' own traffic (never to
    # a pod: that is BPF's); then the drop of everything else that opens a
    # connection towards a pod.
    assert fwd[2:8] == [
        "ct state established,related accept",
        'iifname "glia_vxlan" counter drop',
        "ct status dnat accept",
        'iifname "gliae*" ip daddr @mesh counter drop',
        'iifname "gliae*" accept',
        "ip daddr @mesh ip saddr != @nodes counter drop",
    ]


def test_the_world_names_its_client() -> None:
    assert answer("198.18.1.1") == b"glia world: client 198.18.1.1\n"
