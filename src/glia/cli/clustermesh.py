"""``glia clustermesh status``: the remote clusters an agent reads, their state, what it imported.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`.
Asks the agent's ``GET /v1/clustermesh`` (docs/agent-api.md) and prints, as a
table, one row per remote cluster: its name and id, its state (connecting,
connected, synced, stale with for how long, refused, withdrawn), its pod CIDRs, how many nodes,
endpoints, identities and Services were imported from it and how many of its
records were rejected, the age of its heartbeat, how long its last sync took
and its last error; below, the records of each remote cluster it rejected (the
first few the agent names, with why) and the problems of the remote cluster
directory (one line per broken file). ``-o json|yaml`` prints the agent's answer as is.

Exit code 0 whenever the agent answers: a remote cluster that is down, stale or
refused is the state being shown, not a failure of the command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import typer
from rich.markup import escape

from glia.cli import output
from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for
from glia.cli.output import Column, OutputFormat, OutputOption, Row, format_value

clustermesh_app = typer.Typer(
    help="ClusterMesh: the remote clusters an agent reads (read-only) and imports.",
    no_args_is_help=True,
)

_STATE_COLOUR = {
    "synced": "green",
    "connected": "yellow",
    "connecting": "yellow",
    "stale": "yellow",
    "refused": "red",
    "withdrawn": "red",
}


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(clustermesh_app, name="clustermesh")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return format_value(value)


def _duration(value: Any) -> str:
    """Seconds, readable: 42ms, 1.2s, 1m 15s, 2h 5m."""
    if not _is_number(value):
        return format_value(value)
    secs = float(value)
    if secs < 0:
        return format_value(value)
    if secs < 1:
        return f"{secs * 1000:.0f}ms"
    if secs < 60:
        return f"{secs:.1f}s"
    whole = int(secs)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}m"


def _age(value: Any) -> str:
    return f"{_duration(value)} ago" if _is_number(value) and value >= 0 else format_value(value)


def _state(row: Row) -> str:
    """The state as rich markup (coloured on a terminal, plain words in a pipe); a stale
    cluster's says for how long (``stale_since``: seconds)."""
    value = row.get("state")
    text = escape(format_value(value))
    since = row.get("stale_since")
    if value == "stale" and _is_number(since) and since >= 0:
        text += f" {_duration(since)}"
    colour = _STATE_COLOUR.get(str(value))
    return f"[{colour}]{text}[/{colour}]" if colour else text


COLUMNS: Sequence[Column] = (
    Column("CLUSTER", "name"),
    Column("ID", "id", justify="right"),
    Column("STATE", _state, str, markup=True),
    Column("POD CIDRS", "pod_pools"),
    Column("NODES", "nodes", _count, justify="right"),
    Column("ENDPOINTS", "endpoints", _count, justify="right"),
    Column("IDENTITIES", "identities", _count, justify="right"),
    Column("SERVICES", "services", _count, justify="right"),
    Column("REJECTED", "rejected", _count, justify="right"),
    Column("HEARTBEAT", "heartbeat_age", _age),
    Column("LAST SYNC", "last_sync_seconds", _duration),
    Column("LAST ERROR", "last_error"),
)


def cluster_rows(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The answer's remote clusters (entries that are not objects dropped), by name."""
    clusters = answer.get("clusters")
    rows = [c for c in clusters if isinstance(c, Mapping)] if isinstance(clusters, list) else []
    return sorted(rows, key=lambda c: str(c.get("name")))


def config_problems(answer: Mapping[str, Any]) -> list[str]:
    """One line per broken file of the directory, by path (its message names the file)."""
    errors = answer.get("config_errors")
    if not isinstance(errors, Mapping):
        return []
    lines = []
    for path, why in sorted(errors.items(), key=lambda kv: str(kv[0])):
        text = str(why)
        lines.append(text if text.startswith(str(path)) else f"{path}: {text}")
    return lines


def rejected_records(row: Mapping[str, Any]) -> list[str]:
    """One line per rejected record of a remote cluster the agent names (it sends
    the first few, by key, with ``rejected`` counting them all)."""
    sample = row.get("rejected_keys")
    if not isinstance(sample, Mapping):
        return []
    return [f"{key}: {why}" for key, why in sorted(sample.items(), key=lambda kv: str(kv[0]))]


@clustermesh_app.command("status")
def status(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """Show each remote cluster: state, id, CIDRs, what was imported and rejected, heartbeat.

    Below the table, the records each remote cluster had rejected (with why) and the
    problems of the remote cluster directory. Exits with code 0
    whenever the agent answers (a remote cluster being down is not a failure here).
    """
    client = client_for(node, socket, lab)
    with agent_errors():
        answer = client.clustermesh()
    if output.print_structured(answer, out):
        return
    directory = answer.get("config_dir")
    if not directory:
        typer.echo(
            "ClusterMesh is off: this agent has no remote cluster directory "
            "(clustermesh_dir in its config)."
        )
        return
    typer.echo(f"Remote cluster directory: {directory}")
    rows = cluster_rows(answer)
    console = output.console()
    if rows:
        if not console.is_terminal:
            typer.echo()  # rich leaves a blank line above a table; so does a pipe
        output.print_table(output.build_table(rows, COLUMNS), console)
    else:
        typer.echo("No remote clusters.")
    for row in rows:
        lines = rejected_records(row)
        if lines:
            total = row.get("rejected")
            more = f", the first {len(lines)}" if _is_number(total) and total > len(lines) else ""
            typer.echo(f"\nRecords of {row.get('name')} rejected ({_count(total)}{more}):")
            for line in lines:
                typer.echo(f"  {line}")
    problems = config_problems(answer)
    if problems:
        typer.echo(f"\nProblems in the directory ({len(problems)}):")
        for line in problems:
            typer.echo(f"  {line}")
