"""``glia policy get`` and ``glia policy trace``: the policies an agent enforces, and verdicts.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`.

- ``policy get`` lists the agent's view of its cluster's policies (``GET
  /v1/policy``): the ``glia get policies`` listing (:func:`glia.cli.config.print_declared`,
  its columns) with, per policy, the store revision of its last change and how
  many of the node's endpoints it selects.
- ``policy trace`` asks the agent for the verdict on one connection (``POST
  /v1/policy/trace``, docs/policy.md "Tracing"). The request is parsed here
  first with the agent's own parser (:mod:`glia.policy.trace`), so a mistake
  names its flag before any agent is asked. Exit code: 0 allowed,
  :data:`EXIT_DENIED` denied (also with ``-o json|yaml``), 1 when no verdict
  could be given (agent unreachable, a side's cluster unreadable), 2 usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from glia.agent.client import AgentClient
from glia.cli import output
from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for, fail
from glia.cli.config import POLICY_COLUMNS, print_declared
from glia.cli.output import Column, OutputFormat, OutputOption
from glia.model.identity import CLUSTER_LABEL
from glia.policy import trace
from glia.policy.manifest import DEFAULT_NAMESPACE

EXIT_DENIED = 3  # policy trace: the connection would be dropped

policy_app = typer.Typer(
    help="Network policy: what the agent enforces, and the verdict on a connection.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(policy_app, name="policy")


# -- policy get -------------------------------------------------------------------


def _status(key: str) -> Any:
    def get(policy: Mapping[str, Any]) -> Any:
        status = policy.get("status")
        return status.get(key) if isinstance(status, Mapping) else None

    return get


GET_COLUMNS = (
    *POLICY_COLUMNS,
    Column("ENDPOINTS", _status("endpoints"), justify="right"),
    Column("REVISION", _status("revision"), justify="right"),
)


def _enforced(client: AgentClient, namespace: str | None, name: str | None) -> list[Any]:
    answer = client.policy(namespace=namespace, name=name)
    policies = answer.get("policies")
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        fail(f"the glia agent answered without a list of policies: {output.to_json(answer)}")
    for why in answer.get("skipped") or []:
        typer.echo(f"warning: left out: {why}", err=True)
    return policies


@policy_app.command("get")
def policy_get(
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="Only this policy.")] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="The policies' namespace.")
    ] = DEFAULT_NAMESPACE,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Policies of every namespace.")
    ] = False,
    out: OutputOption = OutputFormat.table,
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
) -> None:
    """Show the CiliumNetworkPolicies the agent's cluster enforces, with their status.

    Like `glia get policies`, read by the agent, plus for each policy the store
    revision of its last change (REVISION) and how many endpoints of this node
    its rules select (ENDPOINTS). -o json|yaml prints cilium.io/v2 objects with
    that in `status`. Damaged records are left out, with a warning on stderr.
    """
    print_declared(
        "ciliumnetworkpolicy",
        "CiliumNetworkPolicies",
        GET_COLUMNS,
        lambda client, ns: _enforced(client, ns, name),
        name,
        namespace,
        all_namespaces,
        out,
        lambda: client_for(node, socket, lab),
    )


# -- policy trace -----------------------------------------------------------------

FLAGS = {
    "src": "--src",
    "dst": "--dst",
    "src_identity": "--src-identity",
    "dst_identity": "--dst-identity",
    "dport": "--dport",
    "proto": "--proto",
}
END_HELP = (
    "labels k=v[,k=v...] of an endpoint (its cluster: the io.cilium.k8s.policy.cluster label, "
    "else the agent's; namespace label default 'default'), reserved:NAME (host, world, "
    "remote-node, health, init, unmanaged) or ip:A.B.C.D (a world address)."
)


def request_body(
    src: str | None,
    dst: str | None,
    src_identity: int | None,
    dst_identity: int | None,
    dport: str | None,
    proto: str | None,
) -> dict[str, Any]:
    """The API request, checked with the agent's parser; a usage error naming the flag."""
    body = {
        "src": src,
        "dst": dst,
        "src_identity": src_identity,
        "dst_identity": dst_identity,
        "dport": dport,
        "proto": proto,
    }
    body = {k: v for k, v in body.items() if v is not None}
    try:
        trace.parse_request(body, names=FLAGS)
    except trace.TraceError as e:
        raise typer.BadParameter(e.reason, param_hint=FLAGS.get(e.field, e.field)) from None
    return body


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _end_text(end: Mapping[str, Any]) -> str:
    kind = end.get("kind")
    if kind == "endpoint":
        labels = _mapping(end.get("labels"))
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != CLUSTER_LABEL)
        ident = end.get("identity") or "?"
        return f"endpoint {ident} of cluster {end.get('cluster')} ({shown})"
    if kind == "reserved":
        addr = end.get("address")
        return f"reserved:{end.get('name')}" + (f" (address {addr})" if addr else "")
    return str(kind)


def _rule_text(ref: Any) -> str:
    if not isinstance(ref, Mapping):
        return "-"
    cluster = ref.get("cluster")
    return f"{ref.get('id')}" + (f" (cluster {cluster})" if cluster else "")


def render(answer: Mapping[str, Any]) -> list[str]:
    """The trace for people: each side's verdict, reason and deciding rule, then the verdict."""
    resolved = _mapping(answer.get("resolved"))
    src, dst = _mapping(resolved.get("src")), _mapping(resolved.get("dst"))
    port = f"{answer.get('dport')}/{answer.get('proto')}"
    if answer.get("proto") == "ICMP":
        port = "ICMP"
    lines = [
        f"From: {_end_text(src)}",
        f"To:   {_end_text(dst)}",
        f"Port: {port}",
        "",
    ]
    for side, where, end in (
        ("egress", "at the source", src),
        ("ingress", "at the destination", dst),
    ):
        v = answer.get(side)
        if not isinstance(v, Mapping):
            continue
        cluster = f", cluster {end.get('cluster')}" if end.get("kind") == "endpoint" else ""
        verdict = "allowed" if v.get("allowed") else "DENIED"
        reason = str(v.get("reason"))
        lines.append(f"{side.capitalize()} ({where}{cluster}): {verdict}")
        lines.append(f"  reason: {reason} ({trace.REASON_TEXT.get(reason, '?')})")
        if v.get("rule") is not None:
            lines.append(f"  decided by: {_rule_text(v.get('rule'))}")
        if v.get("selected_by"):
            lines.append(f"  selected by: {', '.join(str(s) for s in v['selected_by'])}")
        for what in ("denies", "allows"):
            refs = v.get(what) or []
            if refs:
                lines.append(f"  matching {what}: {'; '.join(_rule_text(r) for r in refs)}")
    lines.append("")
    decided = answer.get("decided_by")
    lines.append(f"Final verdict: {answer.get('verdict')} (decided at {decided})")
    lines += [f"warning: {w}" for w in answer.get("warnings") or []]
    return lines


@policy_app.command("trace")
def policy_trace(
    src: Annotated[
        str | None, typer.Option("--src", "-s", metavar="END", help="The source: " + END_HELP)
    ] = None,
    dst: Annotated[
        str | None,
        typer.Option("--dst", "-d", metavar="END", help="The destination: " + END_HELP),
    ] = None,
    src_identity: Annotated[
        int | None,
        typer.Option(
            "--src-identity", metavar="N", help="The source by identity (glia identity list)."
        ),
    ] = None,
    dst_identity: Annotated[
        int | None,
        typer.Option(
            "--dst-identity", metavar="N", help="The destination by identity (any cluster)."
        ),
    ] = None,
    dport: Annotated[
        str | None,
        typer.Option(
            "--dport", metavar="PORT[/TCP|UDP]", help="Destination port and protocol (TCP default)."
        ),
    ] = None,
    proto: Annotated[
        str | None,
        typer.Option("--proto", metavar="TCP|UDP|ICMP", help="Protocol; ICMP takes no --dport."),
    ] = None,
    out: OutputOption = OutputFormat.table,
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
) -> None:
    """Say whether a connection is allowed, and which rule decided it, on each side.

    Egress is judged at the source by the source cluster's policies, ingress at
    the destination by the destination cluster's (read by this agent from that
    cluster's etcd, read-only; no other agent is asked). Exit code 0 allowed,
    3 denied, 1 no verdict (e.g. a cluster's policies cannot be read).

    Example: glia policy trace --src app=client --dst app=web,io.cilium.k8s.policy.cluster=c2
    --dport 80/TCP
    """
    body = request_body(src, dst, src_identity, dst_identity, dport, proto)
    client = client_for(node, socket, lab)
    with agent_errors():
        answer = client.policy_trace(body)
    allowed = answer.get("allowed")
    if not isinstance(allowed, bool):
        fail(f"the glia agent answered without a verdict: {output.to_json(answer)}")
    if not output.print_structured(answer, out):
        for line in render(answer):
            typer.echo(line)
    if not allowed:
        raise typer.Exit(EXIT_DENIED)
