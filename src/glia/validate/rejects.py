"""Counting and reporting rejected records, once each.

One :class:`RejectLog` per subsystem (ipcache, services, ...). ``reject``
logs a key the first time it is rejected for a reason (a watch delivering the
same bad value again, or a re-list, logs nothing new); ``accept``/``forget``
clear it when the key is fixed or deleted. ``glia status`` shows
:meth:`RejectLog.status`: how many keys are rejected now, how many
rejections were seen in total, and the last one with its reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("glia.validate")


@dataclass(frozen=True, slots=True)
class Rejection:
    key: str
    reason: str
    at: float  # wall-clock time


class RejectLog:
    def __init__(self, subsystem: str) -> None:
        self.subsystem = subsystem
        self._now: dict[str, Rejection] = {}  # key -> current rejection
        self.total = 0  # rejections logged since start (a key rejected anew counts again)
        self.last: Rejection | None = None

    def reject(self, key: str, reason: str) -> None:
        cur = self._now.get(key)
        if cur is not None and cur.reason == reason:
            return
        rej = Rejection(key, reason, time.time())
        self._now[key] = rej
        self.total += 1
        self.last = rej
        log.warning("%s: rejected %s: %s", self.subsystem, key, reason)

    def accept(self, key: str) -> None:
        if self._now.pop(key, None) is not None:
            log.info("%s: %s is valid again", self.subsystem, key)

    forget = accept

    def sync(self, rejected: dict[str, str], scope: set[str] | None = None) -> None:
        """Make the current rejections those in ``rejected`` (key -> reason).

        ``scope``: only keys of that set are cleared when absent (others
        belong to another check of the same subsystem); None clears all.
        """
        for key in [k for k in self._now if k not in rejected and (scope is None or k in scope)]:
            self.accept(key)
        for key, reason in rejected.items():
            self.reject(key, reason)

    @property
    def count(self) -> int:
        return len(self._now)

    def current(self) -> dict[str, str]:
        return {k: r.reason for k, r in self._now.items()}

    def status(self, sample: int = 16) -> dict[str, Any]:
        """Counts, the last rejection, and the first ``sample`` current ones by key."""
        return {
            "rejected": self.count,
            "rejected_keys": {k: self._now[k].reason for k in sorted(self._now)[:sample]},
            "rejected_total": self.total,
            "last_rejected": (
                {"key": self.last.key, "reason": self.last.reason, "at": round(self.last.at, 3)}
                if self.last
                else None
            ),
        }
