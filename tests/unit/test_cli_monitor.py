"""``glia monitor``: its text lines (pure), and the command against a real API socket.

The agent side is a real :class:`~glia.agent.api.ApiServer` with a real
:class:`~glia.agent.monitor.Monitor` fed through a pipe (test_monitor.py's
fixtures); the command runs as a process, so Ctrl-C is a real SIGINT. A
"lost connection" is a socket that answers the headers and one line, then
closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import test_monitor
from test_agent_client import short_tmpdir
from test_monitor import (
    CLIENT_ID,
    CLIENT_LABELS,
    POLICY_DENY,
    TRACE,
    VERDICT_ALLOW,
    WEB_ID,
    Flags,
    PipeSource,
    record,
)

from glia.agent.monitor import Monitor
from glia.cli.monitor import format_item

# The API with a pipe-fed Monitor behind it (and the Monitor it needs).
monitor = test_monitor.monitor
stream_api = test_monitor.stream_api

GLIA = [sys.executable, "-c", "from glia.cli.main import main; main()"]


def _end(
    ip: str, port: int | None, identity: int, labels: dict[str, str], **kw: Any
) -> dict[str, Any]:
    return {"ip": ip, "port": port, "identity": identity, "labels": labels, **kw}


SRC = _end("10.1.1.5", 40000, CLIENT_ID, {"app": "client"}, endpoint="default/client")
DST = _end("10.2.1.7", 80, WEB_ID, {"app": "web", "tier": ""})


def test_text_lines_of_every_kind() -> None:
    drop = {"type": "drop", "reason": "policy-denied", "direction": "ingress", "proto": "tcp",
            "src": SRC, "dst": DST, "match": "default-deny", "rules": []}  # fmt: skip
    assert format_item(drop) == (
        "xx drop (policy-denied) ingress flow 10.1.1.5:40000 (default/client) -> 10.2.1.7:80 tcp "
        f"identity {CLIENT_ID} [app=client] -> {WEB_ID} [app=web tier] match default-deny"
    )
    verdict = {**drop, "type": "policy-verdict", "action": "allow", "match": "L3-L4",
               "rules": ["shop/web: spec.ingress[0]"]}  # fmt: skip
    assert format_item(verdict) == (
        "Policy verdict log: ingress flow 10.1.1.5:40000 (default/client) -> 10.2.1.7:80 tcp "
        f"identity {CLIENT_ID} [app=client] -> {WEB_ID} [app=web tier] action allow "
        "match L3-L4 rule shop/web: spec.ingress[0]"
    )
    no_policy = {**verdict, "rules": None, "rule_cookie": 42}
    assert format_item(no_policy).endswith("action allow match L3-L4 cookie 42")
    two = {**verdict, "rules": ["a/b: spec.ingress[0]", "a/c: spec.ingress[1]"]}
    assert format_item(two).endswith("rules a/b: spec.ingress[0], a/c: spec.ingress[1]")
    overlay = {"type": "drop", "reason": "overlay-port", "direction": "egress", "proto": "udp",
               "src": SRC, "dst": _end("198.18.0.2", 8472, 6, {"reserved:remote-node": ""}),
               "tunnel_src": None, "match": None, "rules": None}  # fmt: skip
    assert format_item(overlay) == (
        "xx drop (overlay-port) egress flow 10.1.1.5:40000 (default/client) -> 198.18.0.2:8472 "
        f"udp identity {CLIENT_ID} [app=client] -> 6 [reserved:remote-node]"
    )
    trace = {"type": "trace", "reason": "forwarded", "direction": "egress", "proto": "icmp",
             "obs_point": "to-overlay", "src": {**SRC, "port": None}, "dst": {**DST, "port": None,
             "labels": {}}, "tunnel_src": "198.18.0.9"}  # fmt: skip
    assert format_item(trace) == (
        "-> to-overlay (forwarded) egress flow 10.1.1.5 (default/client) -> 10.2.1.7 icmp via "
        f"198.18.0.9 identity {CLIENT_ID} [app=client] -> {WEB_ID} []"
    )
    nobody = _end("", None, 0, {})
    arp = {"type": "drop", "reason": "unknown-l3", "direction": "egress", "proto": None,
           "ethertype": 0x0806, "src": nobody, "dst": nobody}  # fmt: skip
    assert format_item(arp) == (
        "xx drop (unknown-l3) egress flow ethertype 0x0806 identity 0 [] -> 0 []"
    )
    assert format_item({"type": "lost", "count": 3}) == (
        "Lost 3 events (this client read too slowly)"
    )
    assert format_item({"type": "start", "node": "c1/n1", "types": ["drop"]}) == (
        "Listening for events on node c1/n1 (drop); press Ctrl-C to quit"
    )
    assert format_item({"type": "new-kind", "x": 1}) == '?? {"type": "new-kind", "x": 1}'


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GLIA, "monitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _readline(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)


async def test_json_lines_parse_and_an_ending_agent_is_an_error(
    stream_api: tuple[str, Monitor, PipeSource, Flags],
) -> None:
    path, mon, source, _ = stream_api
    proc = _spawn("--socket", path, "-o", "json", "--type", "drop", "-t", "policy-verdict")
    try:
        start = json.loads(await _readline(proc))
        assert start == {"type": "start", "node": "c1/n1", "types": ["drop", "policy-verdict"]}
        source.push(record(**POLICY_DENY), record(**VERDICT_ALLOW), record(**TRACE))
        deny = json.loads(await _readline(proc))
        allow = json.loads(await _readline(proc))
        assert (deny["type"], deny["reason"], deny["match"]) == (
            "drop",
            "policy-denied",
            "default-deny",
        )
        assert deny["src"]["labels"] == CLIENT_LABELS
        assert (allow["type"], allow["action"], allow["rule_cookie"]) == (
            "policy-verdict",
            "allow",
            42,
        )
        mon.close_all("agent stopping")
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert json.loads(out) == {"type": "end", "reason": "agent stopping"}
    assert proc.returncode == 1
    assert err.strip() == "the glia agent ended the stream: agent stopping"


async def test_ctrl_c_ends_cleanly(stream_api: tuple[str, Monitor, PipeSource, Flags]) -> None:
    path, _, source, _ = stream_api
    proc = _spawn("--socket", path)
    try:
        assert (await _readline(proc)).startswith("Listening for events on node c1/n1 (drop, ")
        source.push(record())
        assert (await _readline(proc)).startswith(
            "xx drop (overlay-port) egress flow 10.1.1.5:40000"
        )
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (0, "", "")


@pytest.fixture
def broken_agent() -> Iterator[str]:
    """A socket that answers the stream's headers and start line, then closes."""
    with short_tmpdir() as d:
        path = os.path.join(d, "agent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\nContent-Type: application/x-ndjson\r\n\r\n"
                    b'{"type":"start","node":"c1/n1","types":["drop"]}\n{"type":"dr'
                )

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            yield path
        finally:
            srv.close()
            t.join(5)


def test_a_lost_connection_is_a_clear_error(broken_agent: str) -> None:
    done = subprocess.run(
        [*GLIA, "monitor", "--socket", broken_agent], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert done.stdout.startswith("Listening for events on node c1/n1 (drop)")
    assert done.stderr.strip() == (
        f"glia agent at {broken_agent}: GET /v1/monitor: the connection to the agent was lost "
        "(it closed the stream without saying why)"
    )


def test_no_agent_is_a_clear_error() -> None:
    with short_tmpdir() as d:
        path = os.path.join(d, "none.sock")
        done = subprocess.run(
            [*GLIA, "monitor", "--socket", path], capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"cannot reach the glia agent at {path}: No such file")
    bad = subprocess.run([*GLIA, "monitor", "--type", "drops"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'drops' is not one of" in bad.stderr
