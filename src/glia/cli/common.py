"""Options shared by the CLI commands that ask an agent: which agent, which output format.

Called by :mod:`glia.cli.inspect` and any other command module that talks to an
agent's API. Which socket (docs/agent-api.md):
``--socket PATH`` wins; ``--node CLUSTER/NODE`` means the lab's
``$GLIA_LAB_DIR/nodes/CLUSTER-NODE/agent.sock`` (``GLIA_LAB_DIR`` defaults to
``/run/glia/lab``); otherwise the host's ``/run/glia/agent.sock``.
Agent failures become one clear line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer

from glia.agent.client import (
    DEFAULT_SOCKET,
    AgentClient,
    AgentError,
    AgentProtocolError,
    AgentUnreachable,
)
from glia.cli.output import OutputFormat
from glia.model.cluster import validate_name

LAB_DIR_ENV = "GLIA_LAB_DIR"
DEFAULT_LAB_DIR = "/run/glia/lab"
EXIT_FAILURE = 1

NodeOption = Annotated[
    str | None,
    typer.Option(
        "--node",
        metavar="CLUSTER/NODE",
        help="Ask the agent of this lab node (its socket under $GLIA_LAB_DIR).",
        show_default=False,
    ),
]
SocketOption = Annotated[
    str | None,
    typer.Option(
        "--socket",
        metavar="PATH",
        help=f"Agent API socket (default {DEFAULT_SOCKET}); wins over --node.",
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="Output format.", case_sensitive=False),
]


def parse_node(value: str) -> tuple[str, str]:
    """``CLUSTER/NODE`` -> (cluster, node); ValueError with the reason otherwise."""
    cluster, sep, node = value.partition("/")
    if not sep:
        raise ValueError(f"{value!r} is not CLUSTER/NODE")
    return validate_name("cluster", cluster), validate_name("node", node)


def lab_socket(cluster: str, node: str, lab_dir: str) -> str:
    return os.path.join(lab_dir, "nodes", f"{cluster}-{node}", "agent.sock")


def resolve_socket(socket: str | None, node: str | None, env: Mapping[str, str]) -> str:
    """The socket the options designate (see the module docstring); ValueError on a bad --node."""
    if socket:
        return socket
    if node:
        cluster, name = parse_node(node)
        return lab_socket(cluster, name, env.get(LAB_DIR_ENV) or DEFAULT_LAB_DIR)
    return DEFAULT_SOCKET


def fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_FAILURE)


def client_for(node: str | None, socket: str | None) -> AgentClient:
    try:
        path = resolve_socket(socket, node, os.environ)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--node") from None
    return AgentClient(path)


def unreachable_message(e: AgentUnreachable) -> str:
    reason = e.error.strerror or str(e.error)
    return (
        f"cannot reach the glia agent at {e.socket_path}: {reason} "
        "(is it running? use --node CLUSTER/NODE for the lab)"
    )


@contextmanager
def agent_errors() -> Iterator[None]:
    """Turn the client's exceptions into a message on stderr and exit code 1."""
    try:
        yield
    except AgentUnreachable as e:
        fail(unreachable_message(e))
    except AgentError as e:
        details = f": {e.details}" if e.details else ""
        fail(f"the glia agent answered an error (code {e.code}): {e.msg}{details}")
    except AgentProtocolError as e:
        fail(str(e))
