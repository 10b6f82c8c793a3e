"""The agent's datapath event monitor: the one reader of glia_events_v1, fanned out.

A ring buffer has one consumer position, so on a node the agent alone reads
the events ring and hands each event to every subscriber that wants its kind
(``GET /v1/monitor``, :mod:`glia.agent.api_monitor`, behind ``glia monitor``).
The ring is read from the event loop when its epoll descriptor becomes
readable (``loop.add_reader``), as the signals ring is: no thread.

Each subscriber has a bounded queue: a slow client loses events, never holds
the agent back, and is told how many it lost (a ``{"type": "lost"}`` item where
the gap is). Events are decoded once (:func:`glia.datapath.events.decode`) and
labelled once per batch (:func:`event_dict`: both identities with their labels
from the identity cache, endpoint names, the policy rules of a verdict's
cookie), only when someone wants them.

The optional kinds cost the datapath work on every connection or packet, so
the config map's flags ask for them only while a subscriber wants them:
GLIA_CFG_F_POLICY_VERDICTS for policy verdicts (allows; denies and drops are
always emitted), GLIA_CFG_F_TRACE for traces. :meth:`Monitor.start` clears
them (a crashed agent must not leave tracing on) and :meth:`Monitor.stop`
too. Flag writes go through the agent's datapath thread (``run_dp``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from glia.datapath.drop import Reason
from glia.datapath.errors import DatapathError
from glia.datapath.events import ETH_P_IP, Event, EventType, decode, reason_text
from glia.datapath.mapspecs import EVENTS
from glia.datapath.ringbuf import RingBuffer
from glia.datapath.runner import RunDatapath
from glia.datapath.structs import GLIA_CFG_F_POLICY_VERDICTS, GLIA_CFG_F_TRACE
from glia.model.identity import MIN_LOCAL, Identity, ReservedIdentity

if TYPE_CHECKING:
    from glia.agent.daemon import Agent

log = logging.getLogger(__name__)

QUEUE_EVENTS = 1024  # per subscriber: beyond that its events are lost (and counted)
CIDR_IDENTITY_MIN = 1 << 24  # node-local CIDR identities (above every cluster's range)

# The config flag each optional kind needs (drops and denies are always emitted).
_FLAGS = {EventType.POLICY_VERDICT: GLIA_CFG_F_POLICY_VERDICTS, EventType.TRACE: GLIA_CFG_F_TRACE}


def parse_types(values: Iterable[str]) -> frozenset[EventType]:
    """``type`` query values (``drop``, ``policy-verdict``, ``trace``; also
    comma-separated); none means every kind. ValueError naming a bad one."""
    out = set()
    for value in values:
        for part in value.split(","):
            if part.strip():
                out.add(EventType.from_label(part))
    return frozenset(out) if out else frozenset(EventType)


def flags_for(types: Iterable[EventType]) -> int:
    """The config flags the datapath needs to emit ``types``."""
    flags = 0
    for t in types:
        flags |= _FLAGS.get(t, 0)
    return flags


# -- labelling (pure) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What the agent knows to label events with, taken once per batch."""

    node: str  # "CLUSTER/NODE"
    identity: Callable[[int], Identity | None] = lambda _n: None
    endpoints: dict[str, str] = field(default_factory=dict)  # local endpoint IP -> "ns/name"
    rules: Callable[[int], list[str]] | None = None  # policy cookie -> rule ids, if known


def identity_info(numeric: int, lookup: Callable[[int], Identity | None]) -> dict[str, Any]:
    """``{"identity", "identity_name", "labels"}`` of one end: a reserved
    identity by name (labels ``reserved:NAME``, as Cilium shows them), a
    node-local CIDR identity as "cidr", a cluster identity with its labels
    (empty while the cache does not know it)."""
    name: str | None = None
    labels: dict[str, str] = {}
    if numeric < MIN_LOCAL:
        try:
            name = ReservedIdentity(numeric).name.lower().replace("_", "-")
        except ValueError:
            name = f"reserved-{numeric}"
        labels = {f"reserved:{name}": ""}
    elif numeric >= CIDR_IDENTITY_MIN:
        name = "cidr"
    else:
        ident = lookup(numeric)
        if ident is not None:
            labels = dict(ident.labels)
    return {"identity": numeric, "identity_name": name, "labels": labels}


def event_dict(ev: Event, ctx: Context) -> dict[str, Any]:
    """One event as ``GET /v1/monitor`` sends it (docs/monitor.md)."""
    ipv4 = ev.l3_proto == ETH_P_IP

    def end(ip: str, port: int, identity: int) -> dict[str, Any]:
        return {
            "ip": ip if ipv4 else None,
            "port": port if ipv4 and ev.has_ports else None,
            **identity_info(identity, ctx.identity),
            "endpoint": ctx.endpoints.get(ip) if ipv4 else None,
        }

    policy = ev.type is EventType.POLICY_VERDICT or ev.reason is Reason.DROP_POLICY
    rules: list[str] | None = None
    if policy and ctx.rules is not None:
        try:
            rules = list(ctx.rules(ev.rule_cookie))
        except Exception as e:  # the policy subsystem's bug must not end the stream
            log.warning("monitor: rules of policy cookie %d: %s", ev.rule_cookie, e)
    action = None
    if ev.type is EventType.POLICY_VERDICT:
        action = "allow" if ev.reason is Reason.FORWARDED else "deny"
    return {
        "type": ev.type.label,
        "node": ctx.node,
        "ts_ns": ev.ts_ns,
        "reason": reason_text(ev.reason),
        "reason_code": int(ev.reason),
        "action": action,
        "direction": ev.direction,
        "ifindex": ev.ifindex,
        "length": ev.length,
        "ethertype": ev.l3_proto,
        "proto": ev.proto_name if ipv4 else None,
        "src": end(ev.saddr, ev.sport, ev.src_identity),
        "dst": end(ev.daddr, ev.dport, ev.dst_identity),
        "tunnel_src": ev.tunnel_src,
        "match": ev.match.label if ev.match is not None else None,
        "rule_cookie": ev.rule_cookie if policy else None,
        "rules": rules,
        "obs_point": ev.obs_point.label if ev.obs_point is not None else None,
    }


# -- subscriptions ---------------------------------------------------------------


class Subscription:
    """One client's events: a bounded queue; what overflows is counted as lost."""

    def __init__(self, types: Collection[EventType], limit: int = QUEUE_EVENTS) -> None:
        self.types = frozenset(types)
        self.limit = limit
        self.lost = 0  # in total
        self._pending_lost = 0  # not yet told
        self._items: deque[dict[str, Any]] = deque()
        self._queued = 0  # events in _items (lost notices do not count)
        self._wake = asyncio.Event()
        self.closed: str | None = None  # why the stream ends

    def offer(self, item: dict[str, Any]) -> None:
        """Queue an event, or count it lost: never waits."""
        if self.closed is not None:
            return
        if self._queued >= self.limit:
            self.lost += 1
            self._pending_lost += 1
            return
        if self._pending_lost:
            # Where the gap is, so the client knows which events are missing.
            self._items.append({"type": "lost", "count": self._pending_lost})
            self._pending_lost = 0
        self._items.append(item)
        self._queued += 1
        self._wake.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self._wake.set()

    async def next(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next item: an event, a ``lost`` notice, or ``{"type": "end"}`` once
        closed; None if nothing came within ``timeout`` seconds."""
        while not self._items:
            if self._pending_lost:
                n, self._pending_lost = self._pending_lost, 0
                return {"type": "lost", "count": n}
            if self.closed is not None:
                return {"type": "end", "reason": self.closed}
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return None
        item = self._items.popleft()
        if item["type"] != "lost":
            self._queued -= 1
        return item


# -- the monitor -----------------------------------------------------------------


class EventSource(Protocol):
    """What the monitor reads: :class:`~glia.datapath.ringbuf.RingBuffer`."""

    def fileno(self) -> int: ...
    def consume(self) -> list[bytes]: ...
    def close(self) -> None: ...


class FlagsTarget(Protocol):
    """Where the events ring is pinned and whose config flags ask for the optional
    kinds: :class:`~glia.datapath.loader.Datapath`."""

    @property
    def pin_dir(self) -> Path: ...
    def set_flags(self, flags: int) -> None: ...


class Monitor:
    """The events ring's reader on a node and its subscribers."""

    def __init__(
        self,
        datapath: FlagsTarget,
        run_dp: RunDatapath,
        context: Callable[[], Context],
        *,
        queue_events: int = QUEUE_EVENTS,
    ) -> None:
        self._dp = datapath
        self._run_dp = run_dp
        self._context = context
        self._queue_events = queue_events
        self._ring: EventSource | None = None
        self._subs: set[Subscription] = set()
        self._flags_lock = asyncio.Lock()
        self._flags: int | None = None  # as last written (None: not known)
        self._tasks: set[asyncio.Task[None]] = set()
        self.events = 0  # decoded and read
        self.unknown = 0  # of kinds this version does not know
        self.undecodable = 0  # truncated or with unknown enum values

    @property
    def running(self) -> bool:
        return self._ring is not None

    async def start(self, source: EventSource | None = None) -> None:
        """Clear the optional-event flags, open the ring (or read ``source``),
        read it from the event loop."""
        await self._write_flags(0, force=True)
        ring = source if source is not None else RingBuffer(self._dp.pin_dir, EVENTS)
        asyncio.get_running_loop().add_reader(ring.fileno(), self._on_readable)
        self._ring = ring

    def close_all(self, reason: str) -> None:
        """End every subscriber's stream (each gets ``{"type": "end", "reason"}``)."""
        for sub in list(self._subs):
            sub.close(reason)

    async def stop(self) -> None:
        self.close_all("agent stopping")
        self._subs.clear()
        if self._ring is not None:
            asyncio.get_running_loop().remove_reader(self._ring.fileno())
            self._ring.close()
            self._ring = None
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._flags:
            await self._write_flags(0)

    async def subscribe(self, types: Collection[EventType]) -> Subscription:
        """A new subscriber; returns once the datapath emits the kinds it wants."""
        if self._ring is None:
            raise DatapathError("the event monitor is not running")
        sub = Subscription(types, self._queue_events)
        self._subs.add(sub)
        await self._sync_flags()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub``; the flags it alone wanted are cleared soon after."""
        sub.close("unsubscribed")
        if sub in self._subs:
            self._subs.discard(sub)
            task = asyncio.get_running_loop().create_task(self._sync_flags())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def wanted_flags(self) -> int:
        return flags_for(t for sub in self._subs for t in sub.types)

    def status(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "subscribers": len(self._subs),
            "events": self.events,
            "unknown": self.unknown,
            "undecodable": self.undecodable,
            "lost": sum(s.lost for s in self._subs),
            "flags": self._flags or 0,
        }

    async def _sync_flags(self) -> None:
        await self._write_flags(self.wanted_flags())

    async def _write_flags(self, flags: int, *, force: bool = False) -> None:
        async with self._flags_lock:
            if flags == self._flags and not force:
                return
            dp = self._dp
            try:
                await self._run_dp(lambda: dp.set_flags(flags))
            except (DatapathError, OSError) as e:
                log.warning("monitor: setting the datapath's event flags to %d: %s", flags, e)
                self._flags = None  # unknown: the next change writes again
                return
            self._flags = flags

    def _on_readable(self) -> None:
        if self._ring is None:
            return
        try:
            raw = self._ring.consume()
        except DatapathError as e:
            log.warning("monitor: reading %s: %s", EVENTS.name, e)
            return
        try:
            self.deliver(raw)
        except Exception:
            # Labelling failed (a bug): this batch is lost, the next is read.
            log.exception("monitor: delivering %d events", len(raw))

    def deliver(self, records: list[bytes]) -> None:
        """Decode ``records`` and hand each event to the subscribers that want it."""
        ctx: Context | None = None
        for raw in records:
            try:
                ev = decode(raw)
            except DatapathError as e:
                self.undecodable += 1
                log.debug("monitor: %s", e)
                continue
            if ev is None:
                self.unknown += 1
                continue
            self.events += 1
            item: dict[str, Any] | None = None
            for sub in self._subs:
                if ev.type not in sub.types:
                    continue
                if item is None:
                    ctx = ctx or self._context()
                    item = event_dict(ev, ctx)
                sub.offer(item)


def agent_context(agent: Agent) -> Context:
    """The labels the agent knows now (:class:`Context` for :class:`Monitor`)."""
    cache = agent.identities
    eps = agent.endpoints.all() if agent.endpoints is not None else []
    policy = getattr(agent, "policy", None)
    return Context(
        node=f"{agent.cfg.cluster}/{agent.cfg.node}",
        identity=cache.get if cache is not None else (lambda _n: None),
        endpoints={e.ip: f"{e.namespace}/{e.name}" for e in eps if e.ip},
        rules=policy.rules_for_cookie if policy is not None else None,
    )
