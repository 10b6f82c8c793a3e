"""Read datapath events (drops so far) from the pinned ring buffer.

Used by `glia monitor` and the tests. The ring buffer is shared by every
program of a node; an :class:`EventReader` opens it by its pin, so it works
next to a running agent. Events are best effort (a full buffer loses them);
the metrics map is the exact count.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from glia.datapath.drop import Direction, Reason
from glia.datapath.errors import DatapathError
from glia.datapath.ringbuf import RingBuffer
from glia.datapath.structs import (
    EVENTS,
    GLIA_EVENT_DROP,
    be16_to_int,
    be32_to_ip,
    glia_drop_event,
)

_IPPROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
_EINTR = 4
_TYPE_OFFSET: int = glia_drop_event.type.offset  # every event kind starts alike


@dataclass(frozen=True, slots=True)
class DropEvent:
    """One dropped packet, decoded from struct glia_drop_event."""

    ts_ns: int
    reason: Reason
    direction: str
    ifindex: int
    proto: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    l3_proto: int  # ethertype
    src_identity: int
    dst_identity: int
    length: int
    tunnel_src: str | None = None  # overlay drops: the outer (VXLAN) source

    @classmethod
    def from_bytes(cls, raw: bytes) -> DropEvent:
        if len(raw) < ctypes.sizeof(glia_drop_event):
            raise DatapathError(f"drop event of {len(raw)} bytes is truncated")
        ev = glia_drop_event.from_buffer_copy(raw)
        try:
            reason = Reason(ev.reason)
        except ValueError:
            raise DatapathError(f"drop event with unknown reason {ev.reason}") from None
        return cls(
            ts_ns=ev.ts_ns,
            reason=reason,
            direction=Direction(ev.direction & 1).label,
            ifindex=ev.ifindex,
            proto=ev.proto,
            saddr=be32_to_ip(ev.saddr),
            daddr=be32_to_ip(ev.daddr),
            sport=be16_to_int(ev.sport),
            dport=be16_to_int(ev.dport),
            l3_proto=be16_to_int(ev.l3_proto),
            src_identity=ev.src_identity,
            dst_identity=ev.dst_identity,
            length=ev.len,
            tunnel_src=be32_to_ip(ev.tunnel_src) if ev.tunnel_src else None,
        )

    def summary(self) -> str:
        proto = _IPPROTO_NAMES.get(self.proto, str(self.proto))
        src, dst = self.saddr, self.daddr
        if self.proto in (6, 17):
            src, dst = f"{src}:{self.sport}", f"{dst}:{self.dport}"
        if self.l3_proto != 0x0800:
            return (
                f"drop {self.reason.label} {self.direction} ifindex {self.ifindex} "
                f"ethertype 0x{self.l3_proto:04x} len {self.length}"
            )
        via = f" via {self.tunnel_src}" if self.tunnel_src else ""
        return (
            f"drop {self.reason.label} {self.direction} ifindex {self.ifindex} {proto} "
            f"{src} -> {dst}{via} identity {self.src_identity} -> {self.dst_identity} "
            f"len {self.length}"
        )


class EventReader:
    """Consumer of glia_events_v1 under ``pin_dir``."""

    def __init__(self, pin_dir: Path) -> None:
        self._ring = RingBuffer(pin_dir, EVENTS)
        self.unknown = 0  # events of kinds this reader does not decode

    def poll(self, timeout: float = 0.0) -> list[DropEvent]:
        """Events available now, waiting up to ``timeout`` seconds for the first."""
        events = []
        for item in self._ring.poll(timeout):
            if len(item) <= _TYPE_OFFSET or item[_TYPE_OFFSET] != GLIA_EVENT_DROP:
                self.unknown += 1
                continue
            events.append(DropEvent.from_bytes(item))
        return events

    def close(self) -> None:
        self._ring.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
