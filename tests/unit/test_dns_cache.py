"""glia.dns.cache and the server's use of it: a kept answer is byte for byte the one the
server would build (ID patched), and no answer outlives a change of names."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
from hypothesis import given
from hypothesis import strategies as st

from glia.dns.cache import AnswerCache
from glia.dns.names import ServiceName, Sources
from glia.dns.server import DnsServer

SERVICES: dict[tuple[str, str], ServiceName] = {}
PODS: dict[str, list[tuple[str, str]]] = {}
VERSION = [0]


def _server(cached: bool = True) -> DnsServer:
    src = Sources(
        service=lambda ns, name: SERVICES.get((ns, name)),
        pods=lambda name: PODS.get(name, []),
        version=(lambda: VERSION[0]) if cached else None,
    )
    return DnsServer(src, "127.0.0.1", 0)


def _change(**pods: list[tuple[str, str]]) -> None:
    PODS.clear()
    PODS.update(pods)
    VERSION[0] += 1


def _ask(server: DnsServer, name: str, qid: int, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    out = server.answer_local(q.to_wire(), tcp=False)
    assert isinstance(out, bytes)
    return dns.message.from_wire(out)


def _a(msg: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in msg.answer for r in rrset)


def test_a_repeated_query_is_answered_from_the_cache_with_its_own_id() -> None:
    SERVICES[("shop", "web")] = ServiceName("100.64.0.10", global_=False)
    _change()
    server = _server()
    first = _ask(server, "web.shop.svc.cluster.local", 1)
    second = _ask(server, "web.shop.svc.cluster.local", 2)
    assert (first.id, second.id) == (1, 2)
    assert _a(first) == _a(second) == ["100.64.0.10"]
    assert second.flags & dns.flags.AA and second.flags & dns.flags.QR
    assert len(server._cache or []) == 1
    assert server.counts["queries"] == 2 and server.counts["answered"] == 2
    assert server.rcodes == {dns.rcode.NOERROR: 2}  # a kept answer is counted as built


def test_no_answer_outlives_a_change_of_names() -> None:
    _change(db=[("default", "10.1.0.5")])
    server = _server()
    assert _a(_ask(server, "db", 1)) == ["10.1.0.5"]
    _change(db=[("default", "10.1.0.6")])
    assert _a(_ask(server, "db", 2)) == ["10.1.0.6"]
    _change()
    gone = _ask(server, "db", 3)
    assert gone.rcode() == dns.rcode.NXDOMAIN
    assert server.rcodes == {dns.rcode.NOERROR: 2, dns.rcode.NXDOMAIN: 1}
    assert server.counts == {
        "queries": 3,
        "answered": 2,
        "nxdomain": 1,
        "forwarded": 0,
        "failed": 0,
    }


def test_without_a_version_nothing_is_kept() -> None:
    _change(db=[("default", "10.1.0.5")])
    server = _server(cached=False)
    _ask(server, "db", 1)
    assert server._cache is None
    PODS["db"] = [("default", "10.1.0.9")]  # no version change: only a cache would miss it
    assert _a(_ask(server, "db", 2)) == ["10.1.0.9"]


def test_udp_and_tcp_answers_are_kept_apart() -> None:
    # 60 addresses do not fit 512 bytes of UDP: truncated there, whole over TCP.
    _change(crowd=[("default", f"10.1.0.{i}") for i in range(1, 61)])
    server = _server()
    wire = dns.message.make_query("crowd", "A").to_wire()
    for _ in range(2):
        udp = dns.message.from_wire(server.answer_local(wire, tcp=False))  # type: ignore[arg-type]
        tcp = dns.message.from_wire(server.answer_local(wire, tcp=True))  # type: ignore[arg-type]
        assert udp.flags & dns.flags.TC and not udp.answer
        assert len(_a(tcp)) == 60


def test_garbage_and_responses_get_no_answer_and_are_not_kept() -> None:
    _change()
    server = _server()
    response = dns.message.make_response(dns.message.make_query("db", "A")).to_wire()
    for wire in (b"", b"\x00" * 5, b"\xff" * 40, response):
        assert server.answer_local(wire, tcp=False) is None
        assert server.answer_local(wire, tcp=False) is None
    assert len(server._cache or []) == 0


@given(st.binary(min_size=12, max_size=64), st.booleans())
def test_cache_misses_before_the_first_version_and_after_each_change(
    query: bytes, tcp: bool
) -> None:
    version = [0]
    cache = AnswerCache(lambda: version[0])
    assert cache.get(query, tcp) is None
    cache.put(query, tcp, b"\x00\x00" + b"A" * 20, "answered")
    hit = cache.get(b"\x12\x34" + query[2:], tcp)
    assert hit == (b"\x12\x34" + b"A" * 20, "answered")
    assert cache.get(query, not tcp) is None
    version[0] += 1
    assert cache.get(query, tcp) is None
    assert len(cache) == 0


def test_a_full_cache_starts_over() -> None:
    cache = AnswerCache(lambda: 0, limit=2)
    cache.get(b"\x00" * 12, False)
    for i in range(3):
        cache.put(bytes([0, 0, i]) + b"\x00" * 10, False, b"\x00" * 12, "")
    assert len(cache) == 1
