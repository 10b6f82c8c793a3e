"""The agent finds the interface holding its node IP (where from_netdev goes).

:func:`glia.agent.hostports.netdev_ifindex` in a namespace of its own with a
veth pair; nothing in the host's namespace is touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import netns_util as nu
import pytest

from glia.agent.hostports import netdev_ifindex


@pytest.fixture
def node() -> Iterator[str]:
    nu.cleanup_stale()
    name = f"{nu.prefix()}-hpdev"
    nu.add_netns(name)
    try:
        pair = ["type", "veth", "peer", "name", "under1"]
        nu.run(["ip", "-n", name, "link", "add", "under0", *pair])
        nu.run(["ip", "-n", name, "addr", "add", "198.18.7.1/15", "dev", "under0"])
        nu.run(["ip", "-n", name, "link", "set", "under0", "up"])
        yield name
    finally:
        nu.del_netns(name)


def test_the_interface_holding_the_node_ip_is_found(node: str) -> None:
    name, index = nu.call_in(node, netdev_ifindex, "198.18.7.1")
    assert name == "under0"
    shown = nu.run(["ip", "-n", node, "-o", "link", "show", "under0"]).stdout
    assert shown.startswith(f"{index}:")
    with pytest.raises(LookupError, match=r"198\.18\.7\.2"):
        nu.call_in(node, netdev_ifindex, "198.18.7.2")
