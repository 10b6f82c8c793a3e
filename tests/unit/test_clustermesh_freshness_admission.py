"""A remote cluster's freshness and record checks, without etcd (pure)."""

from __future__ import annotations

import json

from glia.clustermesh.admission import check_record, still_admitted
from glia.clustermesh.freshness import (
    Freshness,
    heartbeat_age,
    judge,
    recent_heartbeat_age,
    stale_error,
    withdrawal_due,
)
from glia.kvstore import keys
from glia.model import codec
from glia.model.cluster import ClusterInfo
from glia.validate.bounds import ClusterBounds

TIMEOUT = 15.0


def test_fresh_while_a_heartbeat_was_seen_within_the_timeout() -> None:
    assert judge(now=110.0, heartbeat_seen=100.0, import_started=0.0, timeout=TIMEOUT) == (
        Freshness.FRESH
    )
    assert judge(now=115.0, heartbeat_seen=100.0, import_started=110.0, timeout=TIMEOUT) == (
        Freshness.STALE
    )


def test_none_seen_yet_waits_a_timeout_from_the_import() -> None:
    assert judge(now=114.0, heartbeat_seen=None, import_started=100.0, timeout=TIMEOUT) == (
        Freshness.WAITING
    )
    assert judge(now=115.0, heartbeat_seen=None, import_started=100.0, timeout=TIMEOUT) == (
        Freshness.STALE
    )


def test_withdrawal_is_due_after_stale_after() -> None:
    assert not withdrawal_due(now=399.0, stale_since=100.0, stale_after=300.0)
    assert withdrawal_due(now=400.0, stale_since=100.0, stale_after=300.0)
    assert stale_error(TIMEOUT) == "stale: no heartbeat for 15 s"


def test_a_heartbeats_own_time_is_believed_only_when_recent() -> None:
    raw = json.dumps({"time": 1000.0}).encode()
    assert heartbeat_age(raw, 1004.0) == 4.0
    assert heartbeat_age(raw, 999.0) is None  # from the future: another clock
    assert heartbeat_age(b"not json", 1004.0) is None
    assert heartbeat_age(b'{"when": 1}', 1004.0) is None
    assert recent_heartbeat_age(raw, 1004.0, TIMEOUT) == 4.0
    assert recent_heartbeat_age(raw, 1015.0, TIMEOUT) is None


def test_a_cluster_record_is_checked_as_the_file_expects() -> None:
    c2 = ClusterInfo("c2", 2, ["10.2.0.0/16"], "100.66.0.0/15")
    key = keys.cluster_info("c2")
    assert check_record(key, codec.encode(c2), "c2", 2) == c2
    why = check_record(key, codec.encode(c2), "c2", 3)
    assert isinstance(why, str) and why.startswith(f"cluster record {key}: ")
    assert isinstance(check_record(key, b"{", "c2", None), str)


def test_a_changed_record_is_taken_only_with_the_same_bounds() -> None:
    c2 = ClusterInfo("c2", 2, ["10.2.0.0/16"], "100.66.0.0/15")
    bounds = ClusterBounds.from_info(c2)
    key = keys.cluster_info("c2")
    other_svc = ClusterInfo("c2", 2, ["10.2.0.0/16"], "100.68.0.0/15")
    more_pools = ClusterInfo("c2", 2, ["10.2.0.0/16", "10.22.0.0/16"], "100.66.0.0/15")
    assert still_admitted(key, codec.encode(c2), "c2", None, bounds) == c2  # rewritten as it was
    assert still_admitted(key, codec.encode(other_svc), "c2", None, bounds) is None
    assert still_admitted(key, codec.encode(more_pools), "c2", None, bounds) is None
    assert still_admitted(key, codec.encode(c2), "c2", 3, bounds) is None  # not the id expected
    assert still_admitted(key, b"{", "c2", None, bounds) is None
