"""glia.datapath.rtnl against the kernel, in a namespace of the test's own.

The endpoint veth's plumbing is checked end to end by test_datapath_netlink;
here the socket's own contract: lookups and deletions of missing links, a
batch whose middle request fails (the step is named, the other requests are
still applied and answered, and the socket stays usable).
"""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator

import netns_util as nu
import pytest

from glia.datapath import rtnl


@pytest.fixture
def ns() -> Iterator[str]:
    nu.cleanup_stale()
    name = f"{nu.prefix()}-rtnl"
    nu.add_netns(name)
    try:
        yield name
    finally:
        nu.del_netns(name)


def _in_ns(ns: str) -> tuple[int | None, int | None, bool, str, int | None]:
    with rtnl.Rtnl() as nl:
        lo = nl.link_index("lo")
        missing = nl.link_index("gliaenothere")
        deleted = nl.delete_link("gliaenothere")
        nl.run([rtnl.link_up(1, "lo")])
        try:
            nl.run(
                [
                    rtnl.add_address(1, "10.9.9.9", 32, "lo"),
                    rtnl.replace_route("10.8.0.0", 16, 4242, scope=rtnl.RT_SCOPE_LINK),
                    rtnl.replace_route("10.7.0.0", 16, 1, scope=rtnl.RT_SCOPE_LINK),
                ]
            )
        except rtnl.RtnlError as e:
            failure = f"{e.errno} {e}"
        after = nl.link_index("lo")  # no answer of the batch left behind on the socket
    return lo, missing, deleted, failure, after


def test_lookups_deletions_and_a_failing_batch(ns: str) -> None:
    lo, missing, deleted, failure, after = nu.call_in(ns, _in_ns, ns)
    assert (lo, missing, deleted, after) == (1, None, False, 1)
    assert failure == f"{errno.ENODEV} [Errno {errno.ENODEV}] route 10.8.0.0/16: No such device"
    routes = json.loads(nu.run(["ip", "-n", ns, "-j", "route"]).stdout or "[]")
    assert [(r["dst"], r["dev"], r["protocol"], r["scope"]) for r in routes] == [
        ("10.7.0.0/16", "lo", "static", "link")
    ]
    addrs = json.loads(nu.run(["ip", "-n", ns, "-j", "-4", "addr", "show", "lo"]).stdout)
    assert ("10.9.9.9", 32) in [(a["local"], a["prefixlen"]) for a in addrs[0]["addr_info"]]
