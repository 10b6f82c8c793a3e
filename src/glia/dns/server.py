"""The agent's DNS server: UDP and TCP on the node's address, port 53 by default.

Started by :class:`glia.agent.daemon.Agent` on its event loop (an asyncio
datagram endpoint and a stream server); each query is answered from memory
by :func:`glia.dns.names.resolve`. dnspython parses and builds the messages.
Names outside our zones go to the configured upstreams (one try each, a
short timeout, then SERVFAIL), or get NXDOMAIN when none is configured:
no query is ever left without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from glia.dns.cache import AnswerCache
from glia.dns.names import TTL, Sources, Verdict, resolve
from glia.metrics.recorders import DNS_BUCKETS, Histogram

log = logging.getLogger(__name__)

UDP_LIMIT = 512  # without EDNS (RFC 1035)
TCP_IDLE = 10.0  # seconds a TCP client may keep a connection without asking
# Response codes as plain ints: the keys of DnsServer.rcodes.
_NOERROR, _FORMERR, _SERVFAIL, _NXDOMAIN, _NOTIMP = (
    int(c)
    for c in (
        dns.rcode.NOERROR,
        dns.rcode.FORMERR,
        dns.rcode.SERVFAIL,
        dns.rcode.NXDOMAIN,
        dns.rcode.NOTIMP,
    )
)


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int = 53

    @classmethod
    def parse(cls, text: str, field: str = "dns_upstreams") -> Upstream:
        """``IP`` or ``IP:PORT``; :class:`ValueError` names the field and the bad entry."""
        import ipaddress

        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "53"
        try:
            ipaddress.IPv4Address(host)
            p = int(port)
            if not 0 < p < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(f"{field}: {text!r} is not IPv4 or IPv4:PORT") from None
        return cls(host, p)


@dataclass(frozen=True, slots=True)
class _Forward:
    """A query for the upstreams, with the response to send if none answers."""

    query: dns.message.Message
    response: dns.message.Message
    limit: int


class DnsServer:
    def __init__(
        self,
        sources: Sources,
        host: str,
        port: int = 53,
        upstreams: Sequence[Upstream] = (),
        timeout: float = 0.5,
    ) -> None:
        self._src = sources
        self.host = host
        self.port = port
        self._upstreams = list(upstreams)
        self._timeout = timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = {"queries": 0, "answered": 0, "nxdomain": 0, "forwarded": 0, "failed": 0}
        # For the agent's metrics (glia.agent.metrics), read at scrape time: responses
        # by rcode and the time from a query's arrival to its answer being sent.
        self.rcodes: dict[int, int] = {}
        self.latency = Histogram(DNS_BUCKETS)
        self._cache: AnswerCache[tuple[str, int]] | None = (
            AnswerCache(sources.version) if sources.version is not None else None
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )
        self._udp = transport
        try:
            self._tcp = await asyncio.start_server(self._tcp_client, self.host, self.port)
        except OSError:
            transport.close()
            raise
        log.info("dns: serving on %s:%d (udp, tcp)", self.host, self.port)

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
        for t in list(self._tasks):
            t.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "listen": f"{self.host}:{self.port}",
            "upstreams": [f"{u.host}:{u.port}" for u in self._upstreams],
            **self.counts,
        }

    # ---- one query -----------------------------------------------------

    async def answer(self, wire: bytes, tcp: bool) -> bytes | None:
        """The response to one query message; None for bytes that are no query at all."""
        out = self.answer_local(wire, tcp)
        if isinstance(out, _Forward):
            return await self._forward(out, tcp)
        return out

    def answer_local(self, wire: bytes, tcp: bool) -> bytes | _Forward | None:
        """The response from memory, or what to forward (the only case that waits)."""
        hit = self._cache.get(wire, tcp) if self._cache is not None else None
        if hit is not None:
            answer, (kind, code) = hit
            self.counts["queries"] += 1
            if kind:
                self.counts[kind] += 1
            self.rcodes[code] = self.rcodes.get(code, 0) + 1
            return answer
        out = self._build(wire, tcp)
        if isinstance(out, tuple):
            if self._cache is not None:
                self._cache.put(wire, tcp, *out)
            return out[0]
        return out

    def _build(self, wire: bytes, tcp: bool) -> tuple[bytes, tuple[str, int]] | _Forward | None:
        """A local response with the counter it went to ("" for none) and its rcode, or
        what to forward."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS message: nobody waits for an answer to it
        self.counts["queries"] += 1
        if query.flags & dns.flags.QR:
            return None
        limit = 65535 if tcp else max(UDP_LIMIT, query.payload if query.edns >= 0 else 0)
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return self._reply(response, limit, _NOTIMP), ("", _NOTIMP)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return self._reply(response, limit, _FORMERR), ("", _FORMERR)
        q = query.question[0]
        qtype = dns.rdatatype.to_text(q.rdtype)
        ans = resolve(q.name.to_text(), qtype, self._src)
        if ans.verdict is Verdict.ELSEWHERE and self._upstreams:
            return _Forward(query, response, limit)
        if ans.verdict is not Verdict.ELSEWHERE:
            response.flags |= dns.flags.AA
        code = _NOERROR
        if ans.verdict is Verdict.ANSWER:
            kind = "answered"
            if ans.addresses and q.rdclass == dns.rdataclass.IN:
                response.answer.append(
                    dns.rrset.from_text_list(q.name, TTL, "IN", "A", list(ans.addresses))
                )
        else:
            kind = "nxdomain"
            response.set_rcode(dns.rcode.NXDOMAIN)
            code = _NXDOMAIN
        self.counts[kind] += 1
        return self._reply(response, limit, code), (kind, code)

    async def _forward(self, fwd: _Forward, tcp: bool) -> bytes:
        query, response, limit = fwd.query, fwd.response, fwd.limit
        self.counts["forwarded"] += 1
        for up in self._upstreams:
            try:
                if tcp:
                    got = await dns.asyncquery.tcp(query, up.host, self._timeout, up.port)
                else:
                    got = await dns.asyncquery.udp(
                        query, up.host, self._timeout, up.port, ignore_trailing=True
                    )
            except (dns.exception.DNSException, OSError) as e:
                log.debug("dns: upstream %s:%d: %s", up.host, up.port, e)
                continue
            return self._reply(got, limit, int(got.rcode()))
        self.counts["failed"] += 1
        response.set_rcode(dns.rcode.SERVFAIL)
        return self._reply(response, limit, _SERVFAIL)

    def _reply(self, response: dns.message.Message, limit: int, code: int) -> bytes:
        # ``code`` is the rcode just set: reading it back (Message.rcode()) costs more
        # than the rest of the count on this path.
        self.rcodes[code] = self.rcodes.get(code, 0) + 1
        return _wire(response, limit)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                wire = await asyncio.wait_for(
                    reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE
                )
                start = time.perf_counter()
                out = await self.answer(wire, tcp=True)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                self.latency.observe(time.perf_counter() - start)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # Answered in the callback: a task per query would cost more than the answer.
        start = time.perf_counter()
        out = self._server.answer_local(data, tcp=False)
        if isinstance(out, _Forward):
            self._server._spawn(self._forwarded(out, addr, start))
        elif out is not None and self._transport is not None:
            self._transport.sendto(out, addr)
            self._server.latency.observe(time.perf_counter() - start)

    async def _forwarded(self, fwd: _Forward, addr: tuple[str, int], start: float) -> None:
        out = await self._server._forward(fwd, tcp=False)
        if self._transport is not None:
            self._transport.sendto(out, addr)
            self._server.latency.observe(time.perf_counter() - start)


def _wire(response: dns.message.Message, limit: int) -> bytes:
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        # Too long for UDP: the header says so and the client asks again over TCP.
        response.answer.clear()
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit)
