"""``glia bpf policy list ENDPOINT``: one endpoint's policy map entries, as the kernel holds them.

Registered by :mod:`glia.cli.main` through :func:`register` (it adds ``policy``
to :data:`glia.cli.inspect.bpf_app`). The agent reads the rows of the
endpoint's subject (its identity: endpoints with one identity share them) from
the pinned map (``GET /v1/bpf/policy``), one per port block, like ``cilium bpf
policy get``: direction, peer identity and its labels, protocol, ports,
action, and the rules the entry comes from (its cookie). ``-o json|yaml``
prints the agent's answer whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer

from glia.cli import output
from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for
from glia.cli.inspect import bpf_app
from glia.cli.output import Column, OutputFormat, OutputOption, Row

bpf_policy_app = typer.Typer(
    help="The policy map: per local identity, allowed and denied peers and ports."
)

PORT_MAX = 65535


def register(app: typer.Typer) -> None:
    """Add ``glia bpf policy`` (``app``, the top-level app, is not touched)."""
    bpf_app.add_typer(bpf_policy_app, name="policy", no_args_is_help=True)


def _peer(row: Row) -> str:
    return "ANY" if row.get("peer") == 0 else str(row.get("peer"))


def _ports(value: Any) -> str:
    if not isinstance(value, list) or len(value) != 2:
        return str(value)
    lo, hi = value
    if (lo, hi) == (0, PORT_MAX):
        return "ANY"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _lines(value: Any) -> str:
    return "\n".join(str(v) for v in value) if isinstance(value, list) and value else "-"


BPF_POLICY_COLUMNS: Sequence[Column] = (
    Column("DIRECTION", "direction"),
    Column("IDENTITY", _peer, justify="right"),
    Column("LABELS", "peer_labels", _lines),
    Column("PROTO", "proto"),
    Column("PORTS", "ports", _ports),
    Column("ACTION", "action"),
    Column("RULES", "rules", _lines),
)


def _enforced(on: Any) -> str:
    return "enforced" if on else "not enforced (allow all)"


@bpf_policy_app.command("list")
def bpf_policy_list(
    endpoint: Annotated[
        str,
        typer.Argument(
            metavar="ENDPOINT",
            help="The endpoint: IP, NAMESPACE/NAME, NAME, container id, identity",
        ),
    ],
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the policy map entries of an endpoint's identity (read back from the kernel)."""
    client = client_for(node, socket, lab)
    with agent_errors():
        data = client.bpf_policy(endpoint)
    if output.print_structured(data, out):
        return
    rows = data.get("rows") or []
    typer.echo(f"Endpoints: {', '.join(data.get('endpoints') or [])}")
    typer.echo(f"Identity:  {data.get('identity')}  {' '.join(data.get('labels') or [])}")
    typer.echo(f"Ingress:   {_enforced(data.get('ingress_enforced'))}")
    typer.echo(f"Egress:    {_enforced(data.get('egress_enforced'))}")
    if rows:
        output.print_table(output.build_table(rows, BPF_POLICY_COLUMNS))
    else:
        typer.echo("No policy map entries: every direction allows all.")
