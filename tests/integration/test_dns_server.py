"""glia.dns.server over real UDP and TCP, on loopback in a namespace of the test's own.

Each test runs its event loop in a thread inside that namespace, so the
server's sockets, the clients' and the forwarder's all live there.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import pytest
from netns_util import add_netns, call_in, del_netns

from glia.dns.names import ServiceName, Sources
from glia.dns.server import DnsServer, Upstream

pytestmark = pytest.mark.root

SERVICES = {("shop", "web"): ServiceName("100.64.0.10", global_=True)}
PODS = {"client": [("default", "10.1.0.5")]}
# More addresses than 512 bytes of UDP hold: the answer is truncated there.
PODS["crowd"] = [("default", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(60)]
SRC = Sources(
    service=lambda ns, name: SERVICES.get((ns, name)), pods=lambda name: PODS.get(name, [])
)
LO = "127.0.0.1"


@pytest.fixture
def in_ns() -> Iterator[Callable[[Callable[[], Coroutine[Any, Any, None]]], None]]:
    name = f"glia-t{os.getpid()}-dns"
    add_netns(name)

    def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        call_in(name, lambda: asyncio.run(body()))

    try:
        yield run
    finally:
        del_netns(name)


async def _server(port: int, upstreams: list[Upstream] | None = None) -> DnsServer:
    server = DnsServer(SRC, LO, port, upstreams or [], timeout=0.3)
    await server.start()
    return server


async def _query(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(q, LO, 2.0, port)
    return await dns.asyncquery.udp(q, LO, 2.0, port)


def _a(msg: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in msg.answer for r in rrset)


def test_answers_over_udp_and_tcp(in_ns: Any) -> None:
    async def body() -> None:
        server = await _server(5301)
        try:
            for tcp in (False, True):
                got = await _query(5301, "web.shop.svc.cluster.local", tcp=tcp)
                assert (got.rcode(), _a(got)) == (dns.rcode.NOERROR, ["100.64.0.10"])
                assert got.flags & dns.flags.AA
                got = await _query(5301, "web.shop.svc.clusterset.local", tcp=tcp)
                assert _a(got) == ["100.64.0.10"]
                got = await _query(5301, "client.cluster.local", tcp=tcp)
                assert _a(got) == ["10.1.0.5"]
                got = await _query(5301, "client", "AAAA", tcp=tcp)
                assert (got.rcode(), got.answer) == (dns.rcode.NOERROR, [])
                got = await _query(5301, "nope.shop.svc.cluster.local", tcp=tcp)
                assert got.rcode() == dns.rcode.NXDOMAIN
                got = await _query(5301, "example.org", tcp=tcp)
                assert got.rcode() == dns.rcode.NXDOMAIN  # no upstream: at once
            assert server.counts["answered"] == 8
            # The metrics' recorders: 8 answers and 4 NXDOMAIN, each timed once.
            assert server.rcodes == {dns.rcode.NOERROR: 8, dns.rcode.NXDOMAIN: 4}
            assert server.latency.count == 12
            assert 0 < server.latency.sum < 12 * 2.0
        finally:
            await server.stop()

    in_ns(body)


def test_a_long_answer_is_truncated_over_udp_and_whole_over_tcp(in_ns: Any) -> None:
    async def body() -> None:
        server = await _server(5302)
        try:
            udp = await _query(5302, "crowd")
            assert udp.flags & dns.flags.TC
            tcp = await _query(5302, "crowd", tcp=True)
            assert len(_a(tcp)) == 60
        finally:
            await server.stop()

    in_ns(body)


def test_other_names_go_upstream_and_a_dead_upstream_fails_fast(in_ns: Any) -> None:
    async def body() -> None:
        upstream = await _server(5303)
        dead = Upstream(LO, 9)  # nothing listens there
        server = await _server(5304, [dead, Upstream(LO, 5303)])
        only_dead = await _server(5305, [dead])
        try:
            got = await _query(5304, "example.org")
            assert got.rcode() == dns.rcode.NXDOMAIN  # the upstream's answer
            assert (server.counts["forwarded"], upstream.counts["queries"]) == (1, 1)
            got = await _query(5304, "example.org", tcp=True)
            assert (got.rcode(), upstream.counts["queries"]) == (dns.rcode.NXDOMAIN, 2)
            start = time.monotonic()
            got = await _query(5305, "example.org")
            assert got.rcode() == dns.rcode.SERVFAIL
            assert time.monotonic() - start < 1.0  # the issue: an unknown name fails within 1 s
            got = await _query(5305, "client")  # our names never wait for an upstream
            assert _a(got) == ["10.1.0.5"]
            # Forwarded answers count under the upstream's rcode and are timed to the send.
            assert server.rcodes == {dns.rcode.NXDOMAIN: 2}
            assert server.latency.count == 2
            assert only_dead.rcodes == {dns.rcode.SERVFAIL: 1, dns.rcode.NOERROR: 1}
            assert only_dead.latency.count == 2
        finally:
            for s in (server, only_dead, upstream):
                await s.stop()

    in_ns(body)


def test_garbage_gets_no_answer_and_the_server_goes_on(in_ns: Any) -> None:
    async def body() -> None:
        server = await _server(5306)
        try:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=(LO, 5306)
            )
            transport.sendto(b"\x01\x02garbage")
            transport.close()
            assert _a(await _query(5306, "client")) == ["10.1.0.5"]
        finally:
            await server.stop()

    in_ns(body)


def test_upstream_entries_are_checked() -> None:
    assert Upstream.parse("10.0.0.1") == Upstream("10.0.0.1", 53)
    assert Upstream.parse("10.0.0.1:5353") == Upstream("10.0.0.1", 5353)
    for bad in ("dns.example", "10.0.0.1:0", "10.0.0.1:x"):
        with pytest.raises(ValueError, match="dns_upstreams"):
            Upstream.parse(bad)
