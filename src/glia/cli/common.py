"""Options shared by the CLI commands that ask an agent: which agent, and agent failures.

Called by :mod:`glia.cli.inspect`, :mod:`glia.cli.services`,
:mod:`glia.cli.config` and any other command module that talks to an agent's
API. Which socket (docs/agent-api.md):

- ``--socket PATH`` wins;
- ``--node CLUSTER/NODE`` means that node's ``agent.sock`` in a lab: the lab
  ``--lab NAME``, else ``$GLIA_LAB_NAME``, else "glia", in its directory as
  ``glia lab`` finds it (``$GLIA_LAB_DIR``, else ``/run/glia/lab`` for "glia",
  ``/run/glia/lab-NAME`` for another; :mod:`glia.lab.topology`);
- otherwise the host's ``/run/glia/agent.sock``.

A ``--node`` whose lab is not up, whose node the lab does not have, or whose
agent is not running is said so in one line (exit code 1) before any
connection is tried. Agent failures become one clear line on stderr and exit
code 1, never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from glia.agent.client import (
    DEFAULT_SOCKET,
    AgentClient,
    AgentError,
    AgentProtocolError,
    AgentUnreachable,
)
from glia.cli.output import OutputFormat, OutputOption
from glia.lab import topology
from glia.model.cluster import validate_name

__all__ = [
    "EXIT_FAILURE",
    "LabOption",
    "NodeOption",
    "OutputFormat",
    "OutputOption",
    "SocketOption",
    "Target",
    "agent_errors",
    "client_for",
    "fail",
    "parse_node",
    "resolve_target",
]

EXIT_FAILURE = 1

NodeOption = Annotated[
    str | None,
    typer.Option(
        "--node",
        metavar="CLUSTER/NODE",
        help="Ask the agent of this lab node (its socket in the lab's directory).",
        show_default=False,
    ),
]
LabOption = Annotated[
    str | None,
    typer.Option(
        "--lab",
        metavar="NAME",
        help=(
            "The lab of --node (default $GLIA_LAB_NAME, else 'glia'); "
            "its directory is $GLIA_LAB_DIR if set."
        ),
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


@dataclass(frozen=True, slots=True)
class Target:
    """The agent the options designate: its socket and, for ``--node``, where in which lab."""

    socket: str
    lab: str | None = None  # lab name, for --node
    lab_dir: Path | None = None
    node: str | None = None  # "CLUSTER/NODE", for --node

    @property
    def lab_hint(self) -> str:
        """The ``--lab NAME`` to repeat in a suggested command ("" for the default lab)."""
        return "" if self.lab in (None, topology.DEFAULT_LAB) else f" --lab {self.lab}"


def parse_node(value: str) -> tuple[str, str]:
    """``CLUSTER/NODE`` -> (cluster, node); ValueError with the reason otherwise."""
    cluster, sep, node = value.partition("/")
    if not sep:
        raise ValueError(f"{value!r} is not CLUSTER/NODE")
    return validate_name("cluster", cluster), validate_name("node", node)


def lab_socket(cluster: str, node: str, lab_dir: Path) -> Path:
    # The layout glia.lab.topology.NodeSpec.socket gives a node: <dir>/nodes/<c>-<n>.
    return lab_dir / "nodes" / f"{cluster}-{node}" / "agent.sock"


def resolve_target(socket: str | None, node: str | None, lab: str | None = None) -> Target:
    """The agent the options designate (see the module docstring).

    Raises :class:`typer.BadParameter` for a malformed ``--node`` or lab name,
    or ``--lab`` without ``--node``.
    """
    if socket:
        return Target(socket)
    if not node:
        if lab:
            raise typer.BadParameter(
                "--lab names the lab of --node CLUSTER/NODE: give --node too", param_hint="--lab"
            )
        return Target(DEFAULT_SOCKET)
    try:
        cluster, name = parse_node(node)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--node") from None
    from_env = not lab
    lab_name = lab or topology.default_lab_name()
    try:
        topology.validate_lab_name(lab_name)
    except topology.TopologyError as e:
        where = f"${topology.LAB_NAME_ENV}" if from_env else "--lab"
        raise typer.BadParameter(str(e), param_hint=where) from None
    lab_dir = topology.default_lab_dir(lab_name)
    return Target(str(lab_socket(cluster, name, lab_dir)), lab_name, lab_dir, f"{cluster}/{name}")


def fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(EXIT_FAILURE)


def lab_problem(target: Target) -> str | None:
    """Why a ``--node`` target cannot answer, from the files alone; None if its socket is there."""
    if target.lab_dir is None or target.node is None or os.path.exists(target.socket):
        return None
    lab = f"lab {target.lab!r}"
    if not target.lab_dir.is_dir():
        return (
            f"{lab} is not up: its directory {target.lab_dir} does not exist "
            f"(`glia lab up{target.lab_hint}` builds it; --lab NAME or "
            f"${topology.LAB_NAME_ENV} picks another lab)"
        )
    node_dir = Path(target.socket).parent
    if not node_dir.is_dir():
        return (
            f"{lab} has no node {target.node} (no {node_dir}; "
            f"`glia lab status{target.lab_hint}` lists its nodes)"
        )
    return (
        f"the agent of node {target.node} in {lab} is not running: no socket at "
        f"{target.socket} (`glia lab status{target.lab_hint}` shows the lab's processes)"
    )


def client_for(node: str | None, socket: str | None, lab: str | None = None) -> AgentClient:
    """A client of the agent the options designate; exits (code 1) if a lab node cannot answer."""
    target = resolve_target(socket, node, lab)
    problem = lab_problem(target)
    if problem:
        fail(problem)
    return AgentClient(target.socket)


def unreachable_message(e: AgentUnreachable) -> str:
    reason = e.error.strerror or str(e.error)
    return (
        f"cannot reach the glia agent at {e.socket_path}: {reason} "
        "(is it running? use --node CLUSTER/NODE for a lab node)"
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
