"""``glia monitor``: a node's datapath events as they happen, as ``cilium monitor`` shows them.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`.
Reads the agent's ``GET /v1/monitor`` stream
(:meth:`glia.agent.client.AgentClient.monitor`; the agent is the ring
buffer's one reader, docs/monitor.md) and prints one line per event: text for
people (:func:`format_item`, pure), or the agent's JSON objects unchanged
with ``-o json``, one per line. Ctrl-C ends it with exit code 0; a lost
connection or an agent that stops ends it with a message and exit code 1.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for, fail


class EventKind(enum.StrEnum):
    drop = "drop"
    policy_verdict = "policy-verdict"
    trace = "trace"


class MonitorFormat(enum.StrEnum):
    text = "text"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add this module's command to the top-level app."""
    app.command("monitor")(monitor)


# -- text lines (pure) -----------------------------------------------------------


def _labels(labels: Any) -> str:
    if not isinstance(labels, Mapping) or not labels:
        return "[]"
    return "[" + " ".join(f"{k}={v}" if v else str(k) for k, v in sorted(labels.items())) + "]"


def _address(end: Mapping[str, Any]) -> str:
    ip, port = end.get("ip"), end.get("port")
    text = f"{ip}:{port}" if port is not None else str(ip)
    return f"{text} ({end['endpoint']})" if end.get("endpoint") else text


def _identity(end: Mapping[str, Any]) -> str:
    return f"{end.get('identity')} {_labels(end.get('labels'))}"


def _flow(item: Mapping[str, Any]) -> str:
    src, dst = item.get("src") or {}, item.get("dst") or {}
    if item.get("proto") is None:  # not IPv4: no addresses
        flow = f"ethertype 0x{int(item.get('ethertype') or 0):04x}"
    else:
        via = f" via {item['tunnel_src']}" if item.get("tunnel_src") else ""
        flow = f"{_address(src)} -> {_address(dst)} {item['proto']}{via}"
    return f"flow {flow} identity {_identity(src)} -> {_identity(dst)}"


def _policy(item: Mapping[str, Any]) -> str:
    out = f" match {item['match']}" if item.get("match") else ""
    rules = item.get("rules")
    if rules:
        out += f" rule{'s' if len(rules) > 1 else ''} {', '.join(map(str, rules))}"
    elif rules is None and item.get("rule_cookie"):
        out += f" cookie {item['rule_cookie']}"
    return out


def format_item(item: Mapping[str, Any]) -> str:
    """One stream item as a line for people."""
    kind = item.get("type")
    direction = item.get("direction", "")
    if kind == "start":
        types = ", ".join(item.get("types") or [])
        return f"Listening for events on node {item.get('node')} ({types}); press Ctrl-C to quit"
    if kind == "lost":
        return f"Lost {item.get('count')} events (this client read too slowly)"
    if kind == "end":
        return f"The agent ended the stream: {item.get('reason')}"
    if kind == "drop":
        return f"xx drop ({item.get('reason')}) {direction} {_flow(item)}{_policy(item)}"
    if kind == "policy-verdict":
        return (
            f"Policy verdict log: {direction} {_flow(item)} action {item.get('action')}"
            f"{_policy(item)}"
        )
    if kind == "trace":
        return f"-> {item.get('obs_point')} ({item.get('reason')}) {direction} {_flow(item)}"
    return f"?? {json.dumps(item, sort_keys=True)}"


# -- the command -----------------------------------------------------------------


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # events are read as they come, also through a pipe


def monitor(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    types: Annotated[
        list[EventKind] | None,
        typer.Option(
            "--type",
            "-t",
            metavar="drop|policy-verdict|trace",
            help=(
                "Kinds of events (repeat the option for several; default all): drop (every "
                "dropped packet, with its reason), policy-verdict (policy decisions on new "
                "connections: denies always, allows while asked for), trace (every forwarded "
                "packet: costly on a busy node, only while asked for)."
            ),
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        MonitorFormat,
        typer.Option(
            "--output",
            "-o",
            metavar="text|json",
            help="text: one line per event, as cilium monitor prints; json: the agent's "
            "JSON object per line (docs/monitor.md), including the start, lost and end "
            "notices.",
            case_sensitive=False,
        ),
    ] = MonitorFormat.text,
) -> None:
    """Stream a node's datapath events (drops, policy verdicts, traces) with both ends' labels.

    Each event names its kind, reason, direction, addresses and ports, protocol, both
    security identities with their labels (reserved ones by name, e.g. reserved:world;
    node-local CIDR identities as cidr), the local endpoints' names, and for policy
    events how the verdict was reached (match) and the rules behind it. A client too
    slow to keep up is told how many events it lost. Runs until Ctrl-C (exit 0); a lost
    connection to the agent, or an agent that stops, ends it with exit code 1.

    Example: glia monitor --node c1/n1 --type drop -o json
    """
    client = client_for(node, socket, lab)
    kinds = [t.value for t in dict.fromkeys(types or [])]
    try:
        with agent_errors():
            for item in client.monitor(kinds):
                _emit(json.dumps(item) if output is MonitorFormat.json else format_item(item))
                if item.get("type") == "end":
                    fail(f"the glia agent ended the stream: {item.get('reason')}")
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say; silence the
        # interpreter's complaint about flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
