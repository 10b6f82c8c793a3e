"""Read-only CLI commands that ask an agent: status, nodes, endpoints, identities, BPF maps.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`.
The sub-apps are module attributes so other command modules can add to them
(e.g. ``bpf_app`` gets ``bpf lb list`` and ``bpf ct list``). Every command takes
``--node CLUSTER/NODE`` (``--lab NAME``) / ``--socket PATH`` and ``-o table|json|yaml``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from glia.agent.client import AgentClient
from glia.cli import output
from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for
from glia.cli.output import Column, OutputFormat, OutputOption, Row, format_value
from glia.model.identity import MIN_LOCAL, ReservedIdentity, identity_cluster

node_app = typer.Typer(help="Nodes of the agent's cluster.", no_args_is_help=True)
endpoint_app = typer.Typer(help="Endpoints (container interfaces) of a node.", no_args_is_help=True)
identity_app = typer.Typer(help="Security identities of the cluster.", no_args_is_help=True)
bpf_app = typer.Typer(
    help="The datapath's BPF maps, read back from the kernel by the agent.", no_args_is_help=True
)
bpf_ipcache_app = typer.Typer(help="The ipcache map: IP prefix -> identity, tunnel endpoint.")
bpf_endpoint_app = typer.Typer(help="The endpoints map: local endpoint IP -> interface, identity.")
bpf_app.add_typer(bpf_ipcache_app, name="ipcache", no_args_is_help=True)
bpf_app.add_typer(bpf_endpoint_app, name="endpoint", no_args_is_help=True)
bpf_lb_app = typer.Typer(help="The load-balancer maps: service frontends -> backends.")
bpf_ct_app = typer.Typer(help="The conntrack map: service connections and their NAT.")
bpf_app.add_typer(bpf_lb_app, name="lb", no_args_is_help=True)
bpf_app.add_typer(bpf_ct_app, name="ct", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("status")(status)
    app.add_typer(node_app, name="node")
    app.add_typer(endpoint_app, name="endpoint")
    app.add_typer(identity_app, name="identity")
    app.add_typer(bpf_app, name="bpf")


# -- helpers ----------------------------------------------------------------------


def _fetch_rows(
    node: str | None,
    lab: str | None,
    socket: str | None,
    fetch: Callable[[AgentClient], list[dict[str, Any]]],
    sort_key: Callable[[Row], Any],
) -> list[dict[str, Any]]:
    client = client_for(node, socket, lab)
    with agent_errors():
        rows = fetch(client)
    return sorted(rows, key=sort_key)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else format_value(value)


def _ip_key(text: Any) -> tuple[int, Any, str]:
    """Order addresses and prefixes numerically; anything unparsable last, as text."""
    try:
        net = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return (9, (0, 0), str(text))
    return (net.version - 4, (int(net.network_address), net.prefixlen), str(text))


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _text(value)


def _identity_meaning(value: Any) -> str:
    """What an identity number says by itself: its reserved name, or the cluster that minted it."""
    if not isinstance(value, int) or isinstance(value, bool):
        return "-"
    if value < MIN_LOCAL:
        try:
            return ReservedIdentity(value).name.lower().replace("_", "-")
        except ValueError:
            return "reserved"
    return f"cluster {identity_cluster(value)}"


def _identity(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return _text(value)
    return f"{value} ({_identity_meaning(value)})"


def _short_id(value: Any) -> str:
    return _text(value)[:12]


def _uptime(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _text(value)
    secs = int(value)
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (mins, "m"), (secs, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join(shown) or "0s"


def _health(value: Any) -> str:
    return "[green]ok[/green]" if value is True else "[red]FAILING[/red]"


def _state(value: Any) -> str:
    """A subsystem's ``state``: ok, degraded (works, refuses some input), failed."""
    if value == "degraded":
        return "[yellow]degraded[/yellow]"
    return _health(value == "ok")


def _subsystem_summary(value: Any) -> str:
    """``{"ok": bool, ...rest}`` -> "ok  k=v, ..." (rich markup); else the plain value."""
    if not isinstance(value, Mapping):
        return escape(_text(value))
    rest = {k: v for k, v in value.items() if k not in ("ok", "msg")}
    parts = []
    if "ok" in value:
        parts.append(_health(value["ok"]))
    if value.get("msg"):
        parts.append(escape(str(value["msg"])))
    if rest:
        parts.append(escape(format_value(rest)))
    return "  ".join(parts) or "-"


# -- glia status ------------------------------------------------------------------


def status(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """Show the agent's node, cluster, kvstore and datapath state, counts and subsystem health.

    Exits with code 1 when the agent reports itself not healthy, also with -o json or yaml.
    """
    client = client_for(node, socket, lab)
    with agent_errors():
        st = client.status()
    if not output.print_structured(st, out):
        console = output.console()
        output.print_table(_status_grid(st), console)
        subsystems = st.get("subsystems")
        if isinstance(subsystems, Mapping) and subsystems:
            rows = [
                {"name": name, **(info if isinstance(info, Mapping) else {"msg": info})}
                for name, info in sorted(subsystems.items())
            ]
            for row in rows:  # agents before issue 7 send only "ok"
                row.setdefault("state", "ok" if row.get("ok") is True else "failed")
            columns = [
                Column("SUBSYSTEM", "name"),
                Column("HEALTH", "state", _state, markup=True),
                Column("MESSAGE", "msg"),
            ]
            if not console.is_terminal:
                console.file.write("\n")  # rich leaves a blank line above a table; so does a pipe
            output.print_table(output.build_table(rows, columns), console)
    if st.get("healthy") is not True:
        raise typer.Exit(1)


def _status_grid(st: Mapping[str, Any]) -> Table:
    node = st.get("node")
    cluster = st.get("cluster")
    cluster_id = st.get("cluster_id")
    if isinstance(node, Mapping):
        cluster = cluster or node.get("cluster")
        cluster_id = cluster_id if cluster_id is not None else node.get("cluster_id")
        node_line = (
            f"{_text(node.get('name'))}  node IP {_text(node.get('node_ip'))}, "
            f"pod CIDR {_text(node.get('pod_cidr'))}"
        )
        if st.get("chained_cidr"):  # left to a chained plugin's IPAM (docs/chaining.md)
            node_line += f", chained {_text(st['chained_cidr'])}"
    else:
        node_line = "- (not registered in the kvstore yet)"
    cluster_line = _text(cluster) + (f" (id {cluster_id})" if cluster_id is not None else "")
    healthy = st.get("healthy") is True
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Node:", escape(node_line))
    grid.add_row("Cluster:", escape(cluster_line))
    grid.add_row("KVStore:", _subsystem_summary(st.get("kvstore")))
    grid.add_row("Datapath:", _subsystem_summary(st.get("datapath")))
    grid.add_row("Endpoints:", _number(st.get("endpoints")))
    grid.add_row("Identities:", _number(st.get("identities")))
    grid.add_row("Uptime:", _uptime(st.get("uptime")))
    grid.add_row("Healthy:", "[green]yes[/green]" if healthy else "[red]NO[/red]")
    return grid


# -- lists ------------------------------------------------------------------------

NODE_COLUMNS: Sequence[Column] = (
    Column("CLUSTER", "cluster"),
    Column("NAME", "name"),
    Column("CLUSTER ID", "cluster_id", justify="right"),
    Column("NODE IP", "node_ip"),
    Column("POD CIDR", "pod_cidr"),
    Column("HEALTH IP", "health_ip"),
)


@node_app.command("list")
def node_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the nodes of the agent's cluster, as published in the kvstore."""
    rows = _fetch_rows(
        node,
        lab,
        socket,
        AgentClient.nodes,
        lambda r: (_text(r.get("cluster")), _text(r.get("name"))),
    )
    output.print_rows(rows, NODE_COLUMNS, out, empty="No nodes.")


ENDPOINT_COLUMNS: Sequence[Column] = (
    Column("ENDPOINT", lambda r: f"{_text(r.get('namespace'))}/{_text(r.get('name'))}"),
    Column("IP", "ip"),
    Column("IDENTITY", "identity", _identity),
    Column("STATE", "state"),
    Column("READY", "ready"),
    # A chained endpoint's veth is the previous plugin's (docs/chaining.md).
    Column(
        "HOST IF",
        lambda r: _text(r.get("host_ifname")) + (" (chained)" if r.get("chained") else ""),
    ),
    Column("CONTAINER", "container_id", _short_id),
    Column("LABELS", "labels"),
)


@endpoint_app.command("list")
def endpoint_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List this node's endpoints: address, identity, state, readiness, labels."""
    rows = _fetch_rows(
        node,
        lab,
        socket,
        AgentClient.endpoints,
        lambda r: (_text(r.get("namespace")), _text(r.get("name")), _text(r.get("ifname"))),
    )
    output.print_rows(rows, ENDPOINT_COLUMNS, out, empty="No endpoints on this node.")


IDENTITY_COLUMNS: Sequence[Column] = (
    Column("ID", "id", justify="right"),
    Column("MEANING", "id", _identity_meaning),
    Column("LABELS", "labels"),
)


@identity_app.command("list")
def identity_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the cluster's identities (numeric id -> label set), from the kvstore."""
    rows = _fetch_rows(node, lab, socket, AgentClient.identities, _by_int("id"))
    output.print_rows(rows, IDENTITY_COLUMNS, out, empty="No identities.")


def _by_int(key: str) -> Callable[[Row], tuple[int, str]]:
    def sort_key(row: Row) -> tuple[int, str]:
        value = row.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, "")
        return (2**63, _text(value))

    return sort_key


IPCACHE_COLUMNS: Sequence[Column] = (
    Column("PREFIX", "prefix"),
    Column("IDENTITY", "identity", _identity),
    Column("TUNNEL ENDPOINT", "tunnel_endpoint"),
    Column("CLUSTER ID", "cluster_id", justify="right"),
    Column("FLAGS", "flags", justify="right"),
)


@bpf_ipcache_app.command("list")
def bpf_ipcache_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the ipcache BPF map as the kernel holds it (prefix -> identity, tunnel endpoint)."""
    rows = _fetch_rows(
        node, lab, socket, AgentClient.bpf_ipcache, lambda r: _ip_key(r.get("prefix"))
    )
    output.print_rows(rows, IPCACHE_COLUMNS, out, empty="The ipcache map is empty.")


BPF_ENDPOINT_COLUMNS: Sequence[Column] = (
    Column("IP", "ip"),
    Column("IFINDEX", "ifindex", justify="right"),
    Column("IDENTITY", "identity", _identity),
    Column("MAC", "mac"),
    Column("NODE MAC", "node_mac"),
    Column("FLAGS", "flags", justify="right"),
)


@bpf_endpoint_app.command("list")
def bpf_endpoint_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the endpoints BPF map as the kernel holds it (local IP -> ifindex, identity, MACs)."""
    rows = _fetch_rows(node, lab, socket, AgentClient.bpf_endpoints, lambda r: _ip_key(r.get("ip")))
    output.print_rows(rows, BPF_ENDPOINT_COLUMNS, out, empty="The endpoints map is empty.")


METRICS_COLUMNS: Sequence[Column] = (
    Column("REASON", "reason"),
    Column("CODE", "code", justify="right"),
    Column("DIRECTION", "direction"),
    Column("PACKETS", "packets", _number, justify="right"),
    Column("BYTES", "bytes", _number, justify="right"),
)


@bpf_app.command("metrics")
def bpf_metrics(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """Show the datapath's packet and byte counters per verdict (forwarded, drop reasons)."""
    rows = _fetch_rows(
        node,
        lab,
        socket,
        AgentClient.bpf_metrics,
        lambda r: (_text(r.get("direction")), _text(r.get("reason"))),
    )
    output.print_rows(rows, METRICS_COLUMNS, out, empty="No packets counted yet.")


def _lb_backends(row: Row) -> str:
    backends = row.get("backends")
    if not isinstance(backends, list) or not backends:
        return "(none)"
    out = []
    for b in backends:
        if not isinstance(b, Mapping):
            continue
        slot = b.get("slot")
        # A node is (cluster, name); global Services add preferred / stale / standby.
        place = "/".join(str(x) for x in (b.get("cluster"), b.get("node")) if x)
        flags = [str(f) for f in b.get("flags") or [] if isinstance(f, str)]
        where = f" [{', '.join([place, *flags]) if place else ', '.join(flags)}]"
        where = where if place or flags else ""
        ident = f" #{b.get('id')}" if b.get("id") is not None else ""
        out.append(
            f"{_text(b.get('address'))}{ident} {_text(b.get('state'))}{where}"
            + ("" if slot is None else f" slot {slot}")
        )
    return "\n".join(out)


BPF_LB_COLUMNS: Sequence[Column] = (
    Column("FRONTEND", "frontend"),
    Column("SVC ID", "svc_id", justify="right"),
    Column("SERVICE", "service"),
    Column("ALGORITHM", "algorithm"),
    Column("AFFINITY", "affinity_timeout", lambda v: "-" if not v else f"{v}s"),
    Column("BACKENDS", _lb_backends, str),
)


@bpf_lb_app.command("list")
def bpf_lb_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the load-balancer maps as the kernel holds them (frontend -> backends)."""
    rows = _fetch_rows(node, lab, socket, AgentClient.bpf_lb, lambda r: _ip_key(r.get("vip")))
    output.print_rows(rows, BPF_LB_COLUMNS, out, empty="No service frontends are programmed.")


BPF_CT_COLUMNS: Sequence[Column] = (
    Column("KIND", "kind"),
    Column("PROTO", "proto"),
    Column("SOURCE", "src"),
    Column("DESTINATION", "dst"),
    Column("NAT", "nat"),
    Column("SVC ID", "svc_id", justify="right"),
    Column("EXPIRES IN", "expires_in", lambda v: f"{v}s", justify="right"),
    Column("FLAGS", "tcp_flags", lambda v: ",".join(v) if isinstance(v, list) else _text(v)),
)


@bpf_ct_app.command("list")
def bpf_ct_list(
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """List the conntrack map: each service connection, its NAT and expiry."""
    rows = _fetch_rows(
        node, lab, socket, AgentClient.bpf_ct, lambda r: (_text(r.get("src")), _text(r.get("dst")))
    )
    output.print_rows(rows, BPF_CT_COLUMNS, out, empty="The conntrack map is empty.")
