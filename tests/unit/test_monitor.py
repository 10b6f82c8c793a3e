"""Datapath events without a kernel: decoding every kind, labelling, the agent's fan-out.

Records are built with the ctypes mirror of struct glia_drop_event. The
monitor's source is a pipe standing in for the ring's epoll descriptor (the
real ring is read in tests/integration/test_monitor_datapath.py); its flags
target records what the agent would write to the config map.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_agent_api import AgentState
from test_agent_client import short_tmpdir

from glia.agent.api import ApiServer
from glia.agent.client import AgentClient, AgentError
from glia.agent.monitor import (
    Context,
    Monitor,
    Subscription,
    event_dict,
    flags_for,
    identity_info,
    parse_types,
)
from glia.datapath.addrs import ip_to_be32
from glia.datapath.drop import Direction, ObsPoint, PolicyMatch, Reason
from glia.datapath.errors import DatapathError
from glia.datapath.events import BASE_SIZE, SIZE, DropEvent, Event, EventType, decode
from glia.datapath.structs import glia_drop_event
from glia.model.identity import Identity

CLIENT_ID, WEB_ID = 0x10100, 0x20100
CLIENT_LABELS = {"app": "client", "io.cilium.k8s.policy.cluster": "c1"}
WEB_LABELS = {"app": "web", "io.cilium.k8s.policy.cluster": "c2"}


def _be16(n: int) -> int:
    return ctypes.c_uint16.from_buffer_copy(n.to_bytes(2, "big")).value


def record(**fields: int) -> bytes:
    ev = glia_drop_event(
        ts_ns=7,
        type=1,
        reason=int(Reason.DROP_OVERLAY_PORT),
        direction=int(Direction.EGRESS),
        proto=17,
        ifindex=9,
        saddr=ip_to_be32("10.1.1.5"),
        daddr=ip_to_be32("198.18.0.2"),
        sport=_be16(40000),
        dport=_be16(8472),
        l3_proto=_be16(0x0800),
        src_identity=CLIENT_ID,
        dst_identity=6,
        len=80,
    )
    for name, value in fields.items():
        setattr(ev, name, value)
    return bytes(ev)


POLICY_DENY = {
    "type": 1,
    "reason": int(Reason.DROP_POLICY),
    "direction": int(Direction.INGRESS),
    "proto": 6,
    "daddr": ip_to_be32("10.2.1.7"),
    "dport": _be16(80),
    "dst_identity": WEB_ID,
    "match": int(PolicyMatch.NONE),
}
VERDICT_ALLOW = {
    **POLICY_DENY,
    "type": 2,
    "reason": int(Reason.FORWARDED),
    "match": int(PolicyMatch.L4),
    "rule_cookie": 42,
}
TRACE = {"type": 3, "reason": int(Reason.FORWARDED), "obs_point": int(ObsPoint.TO_OVERLAY)}


# -- decoding --------------------------------------------------------------------------


def test_every_kind_decodes() -> None:
    drop = Event.from_bytes(record())
    assert (drop.type, drop.reason, drop.match, drop.obs_point) == (
        EventType.DROP,
        Reason.DROP_OVERLAY_PORT,
        None,
        None,
    )
    assert (drop.saddr, drop.sport, drop.daddr, drop.dport) == (
        "10.1.1.5",
        40000,
        "198.18.0.2",
        8472,
    )
    deny = Event.from_bytes(record(**POLICY_DENY))
    assert (deny.type, deny.reason, deny.match) == (
        EventType.DROP,
        Reason.DROP_POLICY,
        PolicyMatch.NONE,
    )
    allow = Event.from_bytes(record(**VERDICT_ALLOW))
    assert (allow.type, allow.reason, allow.match, allow.rule_cookie, allow.direction) == (
        EventType.POLICY_VERDICT,
        Reason.FORWARDED,
        PolicyMatch.L4,
        42,
        "ingress",
    )
    trace = Event.from_bytes(record(**TRACE))
    assert (trace.type, trace.obs_point, trace.match) == (
        EventType.TRACE,
        ObsPoint.TO_OVERLAY,
        None,
    )
    assert DropEvent is Event  # the name existing readers use


def test_records_of_the_older_layout_decode_and_shorter_ones_are_truncated() -> None:
    raw = record(**VERDICT_ALLOW)
    old = Event.from_bytes(raw[:BASE_SIZE])  # before rule_cookie, match, obs_point
    assert (old.type, old.rule_cookie, old.match) == (EventType.POLICY_VERDICT, 0, PolicyMatch.NONE)
    assert Event.from_bytes(raw + b"\x01" * 8) == Event.from_bytes(raw)  # a layout that grew
    for n in (0, 8, BASE_SIZE - 1):
        with pytest.raises(DatapathError, match=f"event of {n} bytes is truncated"):
            decode(raw[:n])
    assert SIZE == 56 and BASE_SIZE == 48


def test_unknown_kinds_are_none_and_unknown_values_are_errors() -> None:
    assert decode(record(type=9)) is None
    assert decode(record(type=0)) is None
    with pytest.raises(DatapathError, match="drop event with unknown reason 63"):
        decode(record(reason=63))
    with pytest.raises(DatapathError, match="policy-verdict event with unknown match 99"):
        decode(record(**{**VERDICT_ALLOW, "match": 99}))
    with pytest.raises(DatapathError, match="unknown observation point 7"):
        decode(record(**{**TRACE, "obs_point": 7}))


def test_summaries_name_the_kind() -> None:
    assert Event.from_bytes(record(**VERDICT_ALLOW)).summary() == (
        "policy-verdict forwarded ingress ifindex 9 tcp 10.1.1.5:40000 -> 10.2.1.7:80 "
        f"identity {CLIENT_ID} -> {WEB_ID} len 80 match L3-L4"
    )
    assert Event.from_bytes(record(**TRACE)).summary().endswith("at to-overlay")
    arp = Event.from_bytes(record(l3_proto=_be16(0x0806), reason=int(Reason.DROP_UNKNOWN_L3)))
    assert arp.summary() == "drop unknown-l3 egress ifindex 9 ethertype 0x0806 len 80"


# -- types, flags, labels --------------------------------------------------------------


def test_types_and_the_flags_they_need() -> None:
    assert parse_types([]) == frozenset(EventType)
    assert parse_types(["drop", "policy-verdict,trace"]) == frozenset(EventType)
    assert parse_types([" Drop "]) == {EventType.DROP}
    with pytest.raises(ValueError, match="unknown event type 'drops' \\(expected one of drop, "):
        parse_types(["drops"])
    assert flags_for([EventType.DROP]) == 0
    assert flags_for([EventType.POLICY_VERDICT]) == 1
    assert flags_for(EventType) == 3


def _lookup(n: int) -> Identity | None:
    return {
        CLIENT_ID: Identity(CLIENT_ID, CLIENT_LABELS),
        WEB_ID: Identity(WEB_ID, WEB_LABELS),
    }.get(n)


def test_identities_are_labelled() -> None:
    assert identity_info(6, _lookup) == {
        "identity": 6,
        "identity_name": "remote-node",
        "labels": {"reserved:remote-node": ""},
    }
    assert identity_info(2, _lookup)["labels"] == {"reserved:world": ""}
    assert identity_info(200, _lookup)["identity_name"] == "reserved-200"
    assert identity_info(1 << 24 | 5, _lookup) == {
        "identity": 1 << 24 | 5,
        "identity_name": "cidr",
        "labels": {},
    }
    assert identity_info(CLIENT_ID, _lookup)["labels"] == CLIENT_LABELS
    assert identity_info(0x10999, _lookup) == {
        "identity": 0x10999,
        "identity_name": None,
        "labels": {},
    }


def test_a_policy_verdict_names_ends_endpoints_and_rules() -> None:
    ctx = Context(
        "c2/n1",
        _lookup,
        {"10.2.1.7": "shop/web"},
        rules=lambda cookie: [f"shop/web: spec.ingress[{cookie - 42}]"],
    )
    out = event_dict(Event.from_bytes(record(**VERDICT_ALLOW)), ctx)
    assert out == {
        "type": "policy-verdict",
        "node": "c2/n1",
        "ts_ns": 7,
        "reason": "forwarded",
        "reason_code": 0,
        "action": "allow",
        "direction": "ingress",
        "ifindex": 9,
        "length": 80,
        "ethertype": 0x0800,
        "proto": "tcp",
        "src": {
            "ip": "10.1.1.5",
            "port": 40000,
            "identity": CLIENT_ID,
            "identity_name": None,
            "labels": CLIENT_LABELS,
            "endpoint": None,
        },
        "dst": {
            "ip": "10.2.1.7",
            "port": 80,
            "identity": WEB_ID,
            "identity_name": None,
            "labels": WEB_LABELS,
            "endpoint": "shop/web",
        },
        "tunnel_src": None,
        "match": "L3-L4",
        "rule_cookie": 42,
        "rules": ["shop/web: spec.ingress[0]"],
        "obs_point": None,
    }


def test_without_policy_subsystem_the_cookie_stays_and_a_failing_one_does_not_break() -> None:
    deny = Event.from_bytes(record(**POLICY_DENY, rule_cookie=3))
    out = event_dict(deny, Context("c1/n1"))
    assert (out["reason"], out["match"], out["rule_cookie"], out["rules"]) == (
        "policy-denied",
        "default-deny",
        3,
        None,
    )

    def broken(_cookie: int) -> list[str]:
        raise KeyError("gone")

    assert event_dict(deny, Context("c1/n1", rules=broken))["rules"] is None
    drop = event_dict(Event.from_bytes(record()), Context("c1/n1", rules=broken))
    assert (drop["rule_cookie"], drop["rules"], drop["action"]) == (None, None, None)
    arp = event_dict(Event.from_bytes(record(l3_proto=_be16(0x0806))), Context("c1/n1"))
    assert (arp["proto"], arp["src"]["ip"], arp["src"]["port"]) == (None, None, None)


# -- subscriptions ---------------------------------------------------------------------


def _ev(n: int) -> dict[str, Any]:
    return {"type": "drop", "n": n}


async def test_a_slow_subscriber_loses_events_and_is_told_where() -> None:
    sub = Subscription([EventType.DROP], limit=2)
    for n in range(5):
        sub.offer(_ev(n))
    assert [await sub.next(0) for _ in range(3)] == [_ev(0), _ev(1), {"type": "lost", "count": 3}]
    for n in range(5, 9):
        sub.offer(_ev(n))  # 5 and 6 fit, 7 and 8 are lost
    assert await sub.next(0) == _ev(5)
    sub.offer(_ev(9))  # room again: the gap is reported before it
    assert [await sub.next(0) for _ in range(3)] == [_ev(6), {"type": "lost", "count": 2}, _ev(9)]
    assert sub.lost == 5
    assert await sub.next(0.01) is None
    sub.close("agent stopping")
    sub.offer(_ev(10))
    assert await sub.next(0) == {"type": "end", "reason": "agent stopping"}


class PipeSource:
    """The ring's stand-in: a pipe whose read end is the epoll descriptor."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self.records: list[bytes] = []

    def push(self, *records: bytes) -> None:
        self.records += records
        os.write(self.w, b"x")

    def fileno(self) -> int:
        return self.r

    def consume(self) -> list[bytes]:
        os.read(self.r, 4096)
        out, self.records = self.records, []
        return out

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class Flags:
    pin_dir = Path("/nonexistent")

    def __init__(self) -> None:
        self.written: list[int] = []

    def set_flags(self, flags: int) -> None:
        self.written.append(flags)


async def _run_now(fn: Any) -> Any:
    return fn()


@pytest.fixture
async def monitor() -> AsyncIterator[tuple[Monitor, PipeSource, Flags]]:
    source, flags = PipeSource(), Flags()
    mon = Monitor(flags, _run_now, lambda: Context("c1/n1", _lookup), queue_events=16)
    await mon.start(source)
    try:
        yield mon, source, flags
    finally:
        await mon.stop()


async def test_events_fan_out_by_kind_and_the_flags_follow_the_subscribers(
    monitor: tuple[Monitor, PipeSource, Flags],
) -> None:
    mon, source, flags = monitor
    assert flags.written == [0]  # cleared at start
    drops = await mon.subscribe([EventType.DROP])
    assert flags.written == [0]
    verdicts = await mon.subscribe([EventType.POLICY_VERDICT, EventType.DROP])
    assert flags.written == [0, 1]
    traces = await mon.subscribe([EventType.TRACE])
    assert flags.written == [0, 1, 3]
    source.push(record(), record(**VERDICT_ALLOW), record(**TRACE), record(type=9), record()[:20])
    got = await drops.next(2)
    assert got is not None and got["type"] == "drop" and got["src"]["labels"] == CLIENT_LABELS
    assert [(await verdicts.next(1) or {}).get("type") for _ in range(2)] == [
        "drop",
        "policy-verdict",
    ]
    assert (await traces.next(1) or {}).get("obs_point") == "to-overlay"
    assert await drops.next(0.01) is None
    assert (mon.events, mon.unknown, mon.undecodable) == (3, 1, 1)
    mon.unsubscribe(traces)
    await asyncio.sleep(0.05)
    assert flags.written[-1] == 1
    mon.unsubscribe(verdicts)
    await asyncio.sleep(0.05)
    assert flags.written[-1] == 0
    assert mon.status()["subscribers"] == 1
    mon.close_all("agent stopping")
    assert await drops.next(0) == {"type": "end", "reason": "agent stopping"}


# -- the API stream --------------------------------------------------------------------


class MonitoredAgent(AgentState):
    def __init__(self, monitor: Monitor | None) -> None:
        super().__init__()
        self.monitor = monitor


@pytest.fixture
async def stream_api(
    monitor: tuple[Monitor, PipeSource, Flags],
) -> AsyncIterator[tuple[str, Monitor, PipeSource, Flags]]:
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        server = ApiServer(MonitoredAgent(monitor[0]), path)  # type: ignore[arg-type]
        await server.start()
        try:
            yield (path, *monitor)
        finally:
            await server.stop()


def _take(items: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    return [next(items) for _ in range(n)]


async def test_the_api_streams_json_lines_until_the_agent_ends_them(
    stream_api: tuple[str, Monitor, PipeSource, Flags],
) -> None:
    path, mon, source, flags = stream_api
    client = AgentClient(path, timeout=10)
    items = client.monitor(["drop", "policy-verdict"])
    first = await asyncio.to_thread(next, items)
    assert first == {"type": "start", "node": "c1/n1", "types": ["drop", "policy-verdict"]}
    assert flags.written[-1] == 1  # on before the first line
    source.push(record(), record(**VERDICT_ALLOW), record(**TRACE))
    got = await asyncio.to_thread(_take, items, 2)
    assert [g["type"] for g in got] == ["drop", "policy-verdict"]
    mon.close_all("agent stopping")
    assert await asyncio.to_thread(list, items) == [{"type": "end", "reason": "agent stopping"}]
    for _ in range(50):  # the handler leaves after the end line
        if flags.written[-1] == 0:
            break
        await asyncio.sleep(0.05)
    assert flags.written[-1] == 0


async def test_a_client_that_leaves_frees_its_subscription(
    stream_api: tuple[str, Monitor, PipeSource, Flags],
) -> None:
    path, mon, _, flags = stream_api
    items = AgentClient(path, timeout=10).monitor(["trace"])
    await asyncio.to_thread(next, items)
    assert mon.status()["subscribers"] == 1 and flags.written[-1] == 2
    items.close()  # the socket closes
    for _ in range(60):  # noticed within the idle check (1 s)
        if mon.status()["subscribers"] == 0 and flags.written[-1] == 0:
            break
        await asyncio.sleep(0.05)
    assert mon.status()["subscribers"] == 0 and flags.written[-1] == 0


async def test_bad_types_and_a_missing_monitor_are_errors(
    stream_api: tuple[str, Monitor, PipeSource, Flags],
) -> None:
    path = stream_api[0]
    with pytest.raises(AgentError) as ei:
        await asyncio.to_thread(list, AgentClient(path).monitor(["drops"]))
    assert (ei.value.http_status, ei.value.code) == (400, 7)
    assert ei.value.msg.startswith("query parameter type: unknown event type 'drops'")
    with short_tmpdir() as d:
        other = os.path.join(d, "agent.sock")
        server = ApiServer(MonitoredAgent(None), other)  # type: ignore[arg-type]
        await server.start()
        try:
            with pytest.raises(AgentError) as ei:
                await asyncio.to_thread(list, AgentClient(other).monitor())
        finally:
            await server.stop()
    assert (ei.value.http_status, ei.value.code) == (503, 50)
