"""Datapath events from the pinned ring buffer glia_events_v1: decoding and a reader.

Every kind shares the layout of struct glia_drop_event (bpf/include/events.h);
``type`` tells them apart: drops, policy verdicts and traces. :func:`decode`
turns one record into an :class:`Event` (pure; used by the agent's monitor,
:mod:`glia.agent.monitor`, which is the ring's one reader on a live node and
fans the events out to ``glia monitor`` clients). :class:`EventReader` reads
a ring by its pin for the tests. Events are best effort (a full buffer loses
them); the metrics map is the exact count.
"""

from __future__ import annotations

import ctypes
import enum
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from glia.datapath.addrs import be16_to_int, be32_to_ip
from glia.datapath.drop import Direction, ObsPoint, PolicyMatch, Reason
from glia.datapath.errors import DatapathError
from glia.datapath.mapspecs import EVENTS
from glia.datapath.ringbuf import RingBuffer
from glia.datapath.structs import (
    GLIA_EVENT_DROP,
    GLIA_EVENT_POLICY_VERDICT,
    GLIA_EVENT_TRACE,
    glia_drop_event,
)

IPPROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
_TYPE_OFFSET: int = glia_drop_event.type.offset  # every event kind starts alike
SIZE = ctypes.sizeof(glia_drop_event)
# Records before rule_cookie, match and obs_point were added (events.h): still
# decoded, those fields read as 0. Anything shorter is truncated.
BASE_SIZE: int = glia_drop_event.rule_cookie.offset
ETH_P_IP = 0x0800
_KNOWN_TYPES = frozenset({GLIA_EVENT_DROP, GLIA_EVENT_POLICY_VERDICT, GLIA_EVENT_TRACE})


class EventType(enum.IntEnum):
    """enum glia_event_type; :attr:`label` is what ``glia monitor --type`` takes."""

    DROP = GLIA_EVENT_DROP
    POLICY_VERDICT = GLIA_EVENT_POLICY_VERDICT
    TRACE = GLIA_EVENT_TRACE

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_label(cls, text: str) -> EventType:
        """``drop`` / ``policy-verdict`` / ``trace``; ValueError naming the choices."""
        for t in cls:
            if t.label == text.strip().lower():
                return t
        choices = ", ".join(t.label for t in cls)
        raise ValueError(f"unknown event type {text!r} (expected one of {choices})")


def reason_text(reason: Reason) -> str:
    """A reason as ``glia monitor`` names it: 'policy-denied', 'invalid-source'."""
    return "policy-denied" if reason is Reason.DROP_POLICY else reason.label


@dataclass(frozen=True, slots=True)
class Event:
    """One datapath event, decoded from struct glia_drop_event.

    ``match`` is set for policy verdicts and policy drops (None elsewhere:
    there it means nothing), ``obs_point`` for traces.
    """

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
    type: EventType = EventType.DROP
    rule_cookie: int = 0  # policy: the deciding entry's cookie (the agent maps it to rules)
    match: PolicyMatch | None = None
    obs_point: ObsPoint | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Event:
        """Decode one record; :class:`DatapathError` if truncated or of an unknown
        type, reason, match or observation point (a newer datapath)."""
        if len(raw) < BASE_SIZE:
            raise DatapathError(
                f"event of {len(raw)} bytes is truncated (at least {BASE_SIZE} expected)"
            )
        # Longer records (a newer layout that grew at the end) keep these fields.
        ev = glia_drop_event.from_buffer_copy(raw[:SIZE].ljust(SIZE, b"\0"))
        try:
            kind = EventType(ev.type)
        except ValueError:
            raise DatapathError(f"event of unknown type {ev.type}") from None
        try:
            reason = Reason(ev.reason)
        except ValueError:
            raise DatapathError(f"{kind.label} event with unknown reason {ev.reason}") from None
        match = None
        if kind is EventType.POLICY_VERDICT or reason is Reason.DROP_POLICY:
            try:
                match = PolicyMatch(ev.match)
            except ValueError:
                raise DatapathError(f"{kind.label} event with unknown match {ev.match}") from None
        obs = None
        if kind is EventType.TRACE:
            try:
                obs = ObsPoint(ev.obs_point)
            except ValueError:
                raise DatapathError(
                    f"trace event with unknown observation point {ev.obs_point}"
                ) from None
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
            type=kind,
            rule_cookie=ev.rule_cookie,
            match=match,
            obs_point=obs,
        )

    @property
    def proto_name(self) -> str:
        return IPPROTO_NAMES.get(self.proto, str(self.proto))

    @property
    def has_ports(self) -> bool:
        return self.proto in (6, 17)

    def summary(self) -> str:
        """One line without labels (tests, logs); ``glia monitor`` adds the labels."""
        head = f"{self.type.label} {self.reason.label} {self.direction} ifindex {self.ifindex}"
        if self.type is EventType.DROP:
            head = f"drop {self.reason.label} {self.direction} ifindex {self.ifindex}"
        if self.l3_proto != ETH_P_IP:
            return f"{head} ethertype 0x{self.l3_proto:04x} len {self.length}"
        src, dst = self.saddr, self.daddr
        if self.has_ports:
            src, dst = f"{src}:{self.sport}", f"{dst}:{self.dport}"
        via = f" via {self.tunnel_src}" if self.tunnel_src else ""
        extra = f" match {self.match.label}" if self.match is not None else ""
        if self.obs_point is not None:
            extra += f" at {self.obs_point.label}"
        return (
            f"{head} {self.proto_name} {src} -> {dst}{via} identity {self.src_identity} -> "
            f"{self.dst_identity} len {self.length}{extra}"
        )


# The name from before events had kinds; every existing reader means drops.
DropEvent = Event


def decode(raw: bytes) -> Event | None:
    """One record; None for a kind this version does not know (the caller counts
    it). Raises :class:`DatapathError` for a truncated or undecodable record."""
    if len(raw) > _TYPE_OFFSET and raw[_TYPE_OFFSET] not in _KNOWN_TYPES:
        return None
    return Event.from_bytes(raw)


class EventReader:
    """Consumer of glia_events_v1 under ``pin_dir`` (tests; on a node the agent reads it).

    :meth:`poll` returns the events of ``types`` (default: drops only, what
    every reader wanted before the ring carried other kinds); other kinds are
    counted in :attr:`skipped`, kinds this version does not know in
    :attr:`unknown`.
    """

    def __init__(self, pin_dir: Path, types: Collection[EventType] = (EventType.DROP,)) -> None:
        self._ring = RingBuffer(pin_dir, EVENTS)
        self.types = frozenset(types)
        self.unknown = 0
        self.skipped = 0

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Events available now, waiting up to ``timeout`` seconds for the first."""
        events = []
        for item in self._ring.poll(timeout):
            ev = decode(item)
            if ev is None:
                self.unknown += 1
            elif ev.type not in self.types:
                self.skipped += 1
            else:
                events.append(ev)
        return events

    def close(self) -> None:
        self._ring.close()

    def __enter__(self) -> EventReader:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
