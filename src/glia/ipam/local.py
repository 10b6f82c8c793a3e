"""A node's endpoint IP allocations, persisted so a restarted agent reuses them.

Owned by the agent (one per node). The file is the source of truth for which
IPs of the node's pod CIDR are taken: an IP is never handed out twice, also
across agent restarts and crashes (writes are atomic: temp file + rename).

Address rules (docs/endpoints.md, "Addresses"):
- a requested address (``podman run --ip``) is given if it is an assignable
  address of the node's CIDR and nobody holds it; else :class:`AddressInUse`
  (naming the holder) or :class:`AddressRefused` (naming the reason);
- an owner (container id / ifname) that had an address gets the same one back
  if it is still free: ``podman restart`` is a DEL then an ADD with the same
  container id, and keeps its IP;
- any other released address cools down for :data:`DEFAULT_COOLDOWN` seconds
  before another owner gets it (unless nothing else is free), so a stale
  ipcache entry or connection elsewhere never points at a new pod. The release
  times are wall-clock and persisted: the cool-down survives agent restarts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from glia.ipam.pool import AddressNotAssignable, check_assignable, next_ip

DEFAULT_COOLDOWN = 300.0  # seconds; longer than the ipcache's propagation to every node


class IPAMError(Exception):
    pass


class AddressRefused(IPAMError):
    """The requested address is not one this node can give (outside its CIDR, reserved)."""


class AddressInUse(IPAMError):
    """The requested address is held by another owner."""

    def __init__(self, ip: str, owner: str) -> None:
        super().__init__(f"{ip} is in use by {owner}")
        self.ip = ip
        self.owner = owner


class LocalIPAM:
    def __init__(
        self,
        state_file: Path,
        cidr: str,
        *,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.time,
        reserved: str | None = None,
    ) -> None:
        """``reserved``: a block of ``cidr`` never handed out (a chained plugin's
        addresses, :func:`glia.ipam.pool.chained_block`)."""
        self._file = state_file
        self._cidr = cidr
        self._reserved = ipaddress.ip_network(reserved) if reserved else None
        self._reserved_ips = (
            frozenset(str(a) for a in self._reserved) if self._reserved is not None else frozenset()
        )
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}  # ip -> owner (container id / ifname)
        # ip -> (last owner, wall-clock time of release); one entry per IP at most
        self._released: dict[str, tuple[str, float]] = {}
        self._last: str | None = None
        self._load()

    @property
    def cidr(self) -> str:
        return self._cidr

    @property
    def cooldown(self) -> float:
        return self._cooldown

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
        released = data.get("released") or {}
        if isinstance(released, dict):
            for ip, rec in released.items():
                if isinstance(rec, dict) and isinstance(rec.get("at"), int | float):
                    self._released[str(ip)] = (str(rec.get("owner", "")), float(rec["at"]))

    def _save(self) -> None:
        self._file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_suffix(".tmp")
        body = {
            "cidr": self._cidr,
            "allocations": self._owners,
            "last": self._last,
            "released": {ip: {"owner": o, "at": at} for ip, (o, at) in self._released.items()},
        }
        # Compact: written on every ADD and DEL, and indenting a full pool's
        # release times costs more than the write.
        tmp.write_text(json.dumps(body, sort_keys=True, separators=(",", ":")))
        os.replace(tmp, self._file)

    def allocate(self, owner: str, requested: str | None = None) -> str:
        """IP for ``owner``; the same IP again if ``owner`` already holds one.

        ``requested``: that address or an error (:class:`AddressRefused`,
        :class:`AddressInUse`); a cooling address may be requested explicitly.
        """
        with self._lock:
            held = next((ip for ip, o in self._owners.items() if o == owner), None)
            if requested is not None:
                try:
                    want = check_assignable(self._cidr, requested)
                except AddressNotAssignable as e:
                    raise AddressRefused(str(e)) from None
                if want in self._reserved_ips:
                    raise AddressRefused(
                        f"{want} is in {self._reserved}, the chained plugin's addresses"
                    )
                if held is not None and held != want:
                    raise AddressRefused(f"{owner} holds {held} already, not {want}")
                holder = self._owners.get(want)
                if holder is not None and holder != owner:
                    raise AddressInUse(want, holder)
                ip = want
            elif held is not None:
                return held
            else:
                ip = self._previous(owner) or next_ip(
                    self._cidr,
                    self._reserved_ips.union(self._owners),
                    after=self._last,
                    cooling=self._cooling(),
                )
                self._last = ip
            self._owners[ip] = owner
            self._released.pop(ip, None)
            self._save()
            return ip

    def _previous(self, owner: str) -> str | None:
        """The address ``owner`` released last, if nobody took it since."""
        mine = [(at, ip) for ip, (o, at) in self._released.items() if o == owner]
        for _at, ip in sorted(mine, reverse=True):
            if ip not in self._owners and ip not in self._reserved_ips:
                try:
                    return check_assignable(self._cidr, ip)
                except AddressNotAssignable:
                    continue
        return None

    def _cooling(self) -> dict[str, float]:
        now = self._clock()
        return {ip: at for ip, (_o, at) in self._released.items() if now - at < self._cooldown}

    def holder(self, ip: str) -> str | None:
        with self._lock:
            return self._owners.get(ip)

    def release(self, ip: str) -> bool:
        with self._lock:
            owner = self._owners.pop(ip, None)
            if owner is None:
                return False
            self._released[ip] = (owner, self._clock())
            self._save()
            return True

    def release_owner(self, owner: str) -> list[str]:
        with self._lock:
            ips = [ip for ip, o in self._owners.items() if o == owner]
            now = self._clock()
            for ip in ips:
                del self._owners[ip]
                self._released[ip] = (owner, now)
            if ips:
                self._save()
            return ips

    def allocations(self) -> dict[str, str]:
        with self._lock:
            return dict(self._owners)

    def cooling(self) -> dict[str, float]:
        """Released addresses still in their cool-down -> when they were released."""
        with self._lock:
            return self._cooling()
