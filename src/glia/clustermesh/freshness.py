"""Whether a remote cluster is fresh, stale or to be withdrawn, from its heartbeat (pure).

Called by :class:`glia.clustermesh.remote.RemoteCluster` at every tick. The
remote's operator rewrites ``glia/.heartbeat`` every few seconds; a cluster
whose heartbeat has not been seen for :data:`HEARTBEAT_TIMEOUT` is *stale*
(its backends get new connections only while no fresh ready backend exists),
and after its file's ``stale_after`` its state is withdrawn; it comes back
when its heartbeat does. "Seen" is our monotonic clock when a new revision of
the key was read: the clocks of two clusters may differ, so the heartbeat's
own timestamp is believed only at the first reading, and only when it says
"recent".
"""

from __future__ import annotations

import enum
import json

HEARTBEAT_TIMEOUT = 15.0  # three of the operator's 5 s heartbeats missed


class Freshness(enum.Enum):
    FRESH = "fresh"  # a heartbeat seen within the timeout
    WAITING = "waiting"  # none seen yet, but the timeout has not passed since the import
    STALE = "stale"


def judge(
    now: float, heartbeat_seen: float | None, import_started: float, timeout: float
) -> Freshness:
    """The cluster's freshness at ``now`` (all times on our monotonic clock)."""
    if heartbeat_seen is not None and now - heartbeat_seen < timeout:
        return Freshness.FRESH
    # Not heard from yet: a new heartbeat comes within the operator's
    # interval; judge only once the timeout has passed since the import.
    if heartbeat_seen is None and now - import_started < timeout:
        return Freshness.WAITING
    return Freshness.STALE


def withdrawal_due(now: float, stale_since: float, stale_after: float) -> bool:
    """Whether a cluster stale since ``stale_since`` has been so for its ``stale_after``."""
    return now - stale_since >= stale_after


def stale_error(timeout: float) -> str:
    """What the status says of a stale cluster."""
    return f"stale: no heartbeat for {timeout:.0f} s"


def heartbeat_age(raw: bytes, now: float) -> float | None:
    """Seconds since the heartbeat ``raw`` was written (its ``time``), None if unreadable."""
    try:
        value = json.loads(raw)
        stamp = float(value["time"])
    except (ValueError, TypeError, KeyError):
        return None
    age = now - stamp
    return age if 0 <= age < 86400 else None


def recent_heartbeat_age(raw: bytes, now: float, timeout: float) -> float | None:
    """The age of a heartbeat read for the first time, if it is younger than ``timeout``."""
    age = heartbeat_age(raw, now)
    return age if age is not None and age < timeout else None
