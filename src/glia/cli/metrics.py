"""``glia metrics``: the agent's Prometheus metrics, as text exposition.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`.
Reads ``GET /v1/metrics`` on the agent's API socket
(:meth:`glia.agent.client.AgentClient.get_text`): the same text the agent
serves on ``prometheus_listen`` (docs/metrics.md), available whether or not
that is set.
"""

from __future__ import annotations

import sys

import typer

from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for

METRICS_PATH = "/v1/metrics"


def register(app: typer.Typer) -> None:
    """Add this module's command to the top-level app."""
    app.command("metrics")(metrics)


def metrics(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
) -> None:
    """Print the agent's Prometheus metrics (text exposition format; docs/metrics.md)."""
    client = client_for(node, socket, lab)
    with agent_errors():
        text = client.get_text(METRICS_PATH)
    sys.stdout.write(text)
