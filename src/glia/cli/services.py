"""``glia service list``: the Services as this node's load balancer holds them.

The agent answers with what its maps are programmed from: this cluster's
ClusterService records (resolved by the operator) and, for a global Service,
the backends the remote clusters share, merged (docs/services.md, "Global
services"); so two nodes of a mesh can rightly disagree while a change
propagates, and a Service the agent refused is not listed.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`;
``service_app`` is a module attribute so other command modules can add to it.
One table row per frontend (ClusterIP:port/protocol) with the backends serving
it, each with its state (ready / not-ready) and node (on a terminal one line per
backend; in a pipe all on the row's line); ``-o json|yaml`` prints the
ClusterService records as the agent returns them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import typer

from glia.cli import output
from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for
from glia.cli.output import Column, OutputFormat, OutputOption

service_app = typer.Typer(help="Services of the agent's cluster.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(service_app, name="service")


def _str(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _flags(svc: Mapping[str, Any]) -> str:
    flags = []
    if svc.get("host_port"):
        flags.append("host port")  # podman run -p of a local endpoint (docs/hostport.md)
    if svc.get("global_"):
        flags.append("global" if svc.get("shared", True) else "global (not shared)")
    if svc.get("affinity"):
        flags.append(f"affinity={svc['affinity']}")
    if svc.get("session_affinity"):
        flags.append(f"ClientIP affinity {_str(svc.get('affinity_timeout'))}s")
    if svc.get("lb_algorithm") not in (None, "", "random"):
        flags.append(str(svc["lb_algorithm"]))
    return ", ".join(flags) or "-"


def _backend(b: Mapping[str, Any]) -> str:
    """``10.2.0.5:80 ready (c2/n1, preferred)``: a node is always (cluster, name)."""
    state = "ready" if b.get("ready") is True else "not-ready"
    where = [f"{_str(b.get('cluster'))}/{_str(b.get('node'))}"]
    where += [flag for flag in ("preferred", "stale", "standby") if b.get(flag) is True]
    return f"{_str(b.get('ip'))}:{_str(b.get('port'))} {state} ({', '.join(where)})"


def frontend_rows(services: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per frontend of each Service, with the backends of that frontend."""
    rows: list[dict[str, Any]] = []
    for svc in services:
        name = f"{_str(svc.get('namespace'))}/{_str(svc.get('name'))}"
        raw_ports = svc.get("ports")
        ports: list[Any] = raw_ports if isinstance(raw_ports, list) else []
        backends = [b for b in svc.get("backends") or [] if isinstance(b, Mapping)]
        for p in ports:
            if not isinstance(p, Mapping):
                continue
            mine = [
                b
                for b in backends
                if b.get("frontend_port") == p.get("port")
                and b.get("protocol") == p.get("protocol")
            ]
            rows.append(
                {
                    "service": name,
                    "frontend": f"{_str(svc.get('cluster_ip'))}:{_str(p.get('port'))}/"
                    f"{_str(p.get('protocol'))}",
                    "flags": _flags(svc),
                    "backends": "\n".join(_backend(b) for b in mine) or "(none)",
                }
            )
    return rows


COLUMNS: Sequence[Column] = (
    Column("SERVICE", "service"),
    Column("FRONTEND", "frontend"),
    Column("FLAGS", "flags"),
    Column("BACKENDS", "backends"),
)


@service_app.command("list")
def service_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the Services this node load-balances: frontends and backends (ready, cluster/node).

    A backend shows its cluster/node and, for global Services, whether it is on
    the preferred side (affinity), of a stale cluster, or held back (standby).
    """
    client = client_for(node, socket, lab)
    with agent_errors():
        services = client.services()
    services.sort(key=lambda s: (_str(s.get("namespace")), _str(s.get("name"))))
    if output.print_structured(services, out):
        return
    output.print_rows(frontend_rows(services), COLUMNS, out, empty="No services.")
