"""A node's endpoint IP allocations, persisted so a restarted agent reuses them.

Owned by the agent (one per node). The file is the source of truth for which
IPs of the node's pod CIDR are taken: an IP is never handed out twice, also
across agent restarts and crashes (writes are atomic: temp file + rename).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from glia.ipam.pool import next_ip


class IPAMError(Exception):
    pass


class LocalIPAM:
    def __init__(self, state_file: Path, cidr: str) -> None:
        self._file = state_file
        self._cidr = cidr
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}  # ip -> owner (container id / ifname)
        self._last: str | None = None
        self._load()

    @property
    def cidr(self) -> str:
        return self._cidr

    def _load(self) -> None:
        if not self._file.exists():
            return
        try:
            data = json.loads(self._file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise IPAMError(f"cannot read IPAM state {self._file}: {e}") from None
        if data.get("cidr") != self._cidr:
            # The node's pod CIDR changed (node re-created with a new block):
            # allocations of the old block are meaningless now.
            return
        self._owners = dict(data.get("allocations", {}))
        self._last = data.get("last")

    def _save(self) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_suffix(".tmp")
        body = {"cidr": self._cidr, "allocations": self._owners, "last": self._last}
        tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
        os.replace(tmp, self._file)

    def allocate(self, owner: str) -> str:
        """IP for ``owner``; the same IP again if ``owner`` already holds one."""
        with self._lock:
            for ip, o in self._owners.items():
                if o == owner:
                    return ip
            ip = next_ip(self._cidr, self._owners, after=self._last)
            self._owners[ip] = owner
            self._last = ip
            self._save()
            return ip

    def release(self, ip: str) -> bool:
        with self._lock:
            if self._owners.pop(ip, None) is None:
                return False
            self._save()
            return True

    def release_owner(self, owner: str) -> list[str]:
        with self._lock:
            ips = [ip for ip, o in self._owners.items() if o == owner]
            for ip in ips:
                del self._owners[ip]
            if ips:
                self._save()
            return ips

    def allocations(self) -> dict[str, str]:
        with self._lock:
            return dict(self._owners)
