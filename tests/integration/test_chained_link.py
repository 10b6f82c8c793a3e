"""glia.datapath.chained_link on real veths: finding a chained pod's host veth by the
kernel's peer links, and refusing interfaces glia cannot attach to."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import netns_util as nu
import pytest

from glia.datapath import chained_link
from glia.datapath.errors import DatapathError
from glia.datapath.netns import run_in_netns


@dataclass
class Spaces:
    node: str
    pod: str
    other: str


_serial = itertools.count()


@pytest.fixture
def spaces() -> Iterator[Spaces]:
    nu.cleanup_stale()
    tag = next(_serial)
    s = Spaces(f"{nu.prefix()}-chn{tag}", f"{nu.prefix()}-chp{tag}", f"{nu.prefix()}-cho{tag}")
    try:
        for ns in (s.node, s.pod, s.other):
            nu.add_netns(ns)
        yield s
    finally:
        for ns in (s.other, s.pod, s.node):
            nu.del_netns(ns)


def veth(ns: str, host: str, peer_ns: str, peer: str, address: str | None = None) -> None:
    """What ptp makes: ``host`` in ``ns``, ``peer`` in ``peer_ns`` with ``address``."""
    nu.run(["ip", "-n", ns, "link", "add", host, "type", "veth", "peer", "name", peer,
            "netns", peer_ns])  # fmt: skip
    if address:
        nu.run(["ip", "-n", peer_ns, "addr", "add", address, "dev", peer])


def find(
    s: Spaces, ifname: str = "eth0", host_names: tuple[str, ...] = ()
) -> chained_link.ChainedLink:
    return run_in_netns(
        nu.ns_path(s.node), chained_link.find, nu.ns_path(s.pod), ifname, host_names
    )


def test_finds_the_host_side_by_its_peer(spaces: Spaces) -> None:
    # Another veth of the node first (to a third namespace), then the pod's pair.
    veth(spaces.node, "gliachdecoy", spaces.other, "eth9")
    veth(spaces.node, "vethcafe01", spaces.pod, "eth0", "10.1.0.194/26")
    link = find(spaces, host_names=("vethcafe01",))
    assert link.host_ifname == "vethcafe01" and link.addresses == ("10.1.0.194",)
    host = nu.run(["ip", "-n", spaces.node, "-o", "link", "show", "vethcafe01"]).stdout
    assert host.split(":", 1)[0] == str(link.host_ifindex)
    assert link.host_mac in host
    assert (
        run_in_netns(nu.ns_path(spaces.node), chained_link.host_index, "vethcafe01")
        == link.host_ifindex
    )
    assert run_in_netns(nu.ns_path(spaces.node), chained_link.host_index, "nothere") is None


def test_refuses_a_peer_outside_the_node(spaces: Spaces) -> None:
    # The pod's veth leads to a third namespace, not to the node.
    veth(spaces.other, "vethaway", spaces.pod, "eth0", "10.1.0.194/26")
    with pytest.raises(DatapathError, match="is not a veth of this node's network namespace"):
        find(spaces)


def test_refuses_a_host_side_the_result_does_not_list(spaces: Spaces) -> None:
    veth(spaces.node, "vethcafe02", spaces.pod, "eth0", "10.1.0.194/26")
    with pytest.raises(DatapathError, match="does not list \\(vethother\\)"):
        find(spaces, host_names=("vethother",))


def test_refuses_a_missing_or_non_veth_interface(spaces: Spaces) -> None:
    with pytest.raises(DatapathError, match="the pod has no interface eth0"):
        find(spaces)
    with pytest.raises(DatapathError, match="lo is a plain device, not a veth"):
        find(spaces, ifname="lo")
