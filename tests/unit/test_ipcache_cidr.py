"""Policy's CIDR identities as an input of the ipcache's one writer (IPCacheSync).

Without a kernel (the map is a dict): prefixes are written not tunnelled with
cluster id 0, a cluster's own entry for a prefix wins, pinned CIDR entries of an
earlier run survive the first sync until policy gives its set, and go then if
no policy names them any more.
"""

from __future__ import annotations

from test_ipcache_first_list import LOCAL, FakeDatapath, run_dp

from glia.agent.ipcache import IPCacheSync
from glia.datapath.nodemaps import IPCacheInfo
from glia.policy.cidr import FIRST

KEEP, GONE = FIRST + 1, FIRST + 2


async def _synced(sync: IPCacheSync) -> None:
    for part in ("nodes", "podcidrs", "ip"):
        await sync.handler(part).on_synced()


async def test_cidr_prefixes_are_written_and_removed() -> None:
    dp = FakeDatapath()
    sync = IPCacheSync(dp, run_dp, LOCAL, "n1", "198.18.1.1")  # type: ignore[arg-type]
    await _synced(sync)
    await sync.set_cidr_identities({"192.0.2.0/24": KEEP, "198.18.1.1/32": GONE})
    assert dp.ipcache.entries["192.0.2.0/24"] == IPCacheInfo(KEEP, None, 0)
    # The node's own address stays the node's (host), whatever a policy names.
    assert dp.ipcache.entries["198.18.1.1/32"].identity == 1
    assert sync.status()["cidr_prefixes"] == 2
    await sync.set_cidr_identities({})
    assert "192.0.2.0/24" not in dp.ipcache.entries
    assert dp.ipcache.entries["198.18.1.1/32"].identity == 1


async def test_pinned_cidr_entries_wait_for_policy_then_follow_it() -> None:
    dp = FakeDatapath()
    dp.ipcache.entries["192.0.2.0/24"] = IPCacheInfo(KEEP, None, 0)
    dp.ipcache.entries["203.0.113.0/24"] = IPCacheInfo(GONE, None, 0)
    sync = IPCacheSync(dp, run_dp, LOCAL, "n1", "198.18.1.1")  # type: ignore[arg-type]
    assert await sync.held_cidr_identities() == {"192.0.2.0/24": KEEP, "203.0.113.0/24": GONE}
    await _synced(sync)  # the first diff: both kept, policy has not spoken
    assert {"192.0.2.0/24", "203.0.113.0/24"} <= set(dp.ipcache.entries)
    await sync.set_cidr_identities({"192.0.2.0/24": KEEP})
    assert dp.ipcache.entries["192.0.2.0/24"] == IPCacheInfo(KEEP, None, 0)
    assert "203.0.113.0/24" not in dp.ipcache.entries
