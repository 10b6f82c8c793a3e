"""``glia apply/delete -f``, ``glia get services|policies``: declared resources, kubectl-style.

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`.
Files (``-f -`` is stdin) are parsed and validated here first
(:mod:`glia.declared`: ``v1 Service`` and ``cilium.io/v2
CiliumNetworkPolicy`` documents, mixed in one file), so mistakes show before any agent is asked;
the agent validates again and stores (docs/services.md). Every command takes
``--node CLUSTER/NODE`` (``--lab NAME``) / ``--socket PATH`` and
``-o table|json|yaml`` like the other agent commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from glia import declared
from glia.agent.client import AgentClient, AgentError
from glia.cli import output
from glia.cli.common import LabOption, NodeOption, SocketOption, agent_errors, client_for, fail
from glia.cli.output import Column, OutputFormat, OutputOption
from glia.policy import manifest as policy_manifest
from glia.service import manifest, yamlload
from glia.service.manifest import ManifestError

get_app = typer.Typer(help="Show declared resources (as Kubernetes objects).", no_args_is_help=True)


FileOption = Annotated[
    str,
    typer.Option(
        "--filename",
        "-f",
        metavar="FILE",
        help=(
            "YAML file of v1 Service and cilium.io/v2 CiliumNetworkPolicy objects "
            "('---' between them); '-' reads stdin."
        ),
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("apply")(apply)
    app.command("delete")(delete)
    app.add_typer(get_app, name="get")


# -- helpers ----------------------------------------------------------------------


def _load(filename: str) -> tuple[list[Any], str]:
    """The file's YAML documents and its name for messages; exits with the reason on failure.

    Reads at most yamlload.MAX_BYTES (and one more to tell): a huge file or
    /dev/zero is refused without reading it all.
    """
    source = "<stdin>" if filename == "-" else filename
    try:
        if filename == "-":
            text = yamlload.read_text(sys.stdin.buffer, source)
        else:
            with open(filename, "rb") as f:
                text = yamlload.read_text(f, source)
        return manifest.load_yaml(text, source), source
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror or e}")
    except (yamlload.YamlError, ManifestError) as e:
        fail(str(e))


def _jsonable(docs: list[Any]) -> list[Any]:
    # Validated documents are plain JSON except in fields glia ignores (a
    # `status` may hold anything YAML can say); those are sent as text.
    result: list[Any] = json.loads(json.dumps(docs, default=str))
    return result


@contextmanager
def _agent_call() -> Iterator[None]:
    """Agent failures as one message; invalid input (HTTP 400) as the agent's problem list."""
    with agent_errors():
        try:
            yield
        except AgentError as e:
            if e.http_status in (400, 413):
                fail(e.msg + (f"\n{e.details}" if e.details else ""))
            raise


def _results(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    results = answer.get("results")
    if not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results):
        fail(f"the glia agent answered without a list of results: {output.to_json(answer)}")
    return results


# -- apply / delete ---------------------------------------------------------------


def apply(
    filename: FileOption,
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """Create or update the Services and CiliumNetworkPolicies of a file: all, or none.

    A Service without spec.clusterIP gets one from the cluster's service CIDR;
    an existing Service keeps its ClusterIP; a policy governs the endpoints of
    the agent's cluster. -o json|yaml prints one result per document: kind,
    namespace, name, action (created, configured, unchanged), cluster_ip.
    """
    docs, source = _load(filename)
    try:
        declared.parse(docs, source)
    except ManifestError as e:
        fail(str(e))
    client = client_for(node, socket, lab)
    with _agent_call():
        answer = client.config_apply(_jsonable(docs), source)
    results = _results(answer)
    if output.print_structured(results, out):
        return
    for r in results:
        typer.echo(f"{r.get('kind', 'service')}/{r.get('name')} {r.get('action')}")


def delete(
    filename: FileOption,
    ignore_not_found: Annotated[
        bool,
        typer.Option("--ignore-not-found", help="A Service that does not exist is no error."),
    ] = False,
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
    out: OutputOption = OutputFormat.table,
) -> None:
    """Delete the Services (releasing their ClusterIPs) and CiliumNetworkPolicies a file names.

    Exits with code 1 if one of them does not exist (unless --ignore-not-found),
    also with -o json|yaml, which prints one result per resource: kind,
    namespace, name, action (deleted, not found), cluster_ip.
    """
    docs, source = _load(filename)
    try:
        declared.parse_refs(docs, source)
    except ManifestError as e:
        fail(str(e))
    client = client_for(node, socket, lab)
    with _agent_call():
        answer = client.config_delete(_jsonable(docs), source)
    results = _results(answer)
    structured = output.print_structured(results, out)
    missing = 0
    for r in results:
        kind = r.get("kind", "service")
        if r.get("action") == "deleted":
            if not structured:
                typer.echo(f'{kind} "{r.get("name")}" deleted')
        elif not ignore_not_found:
            missing += 1
            typer.echo(
                f'{kind} "{r.get("name")}" not found in namespace "{r.get("namespace")}"',
                err=True,
            )
    if missing:
        raise typer.Exit(1)


# -- get --------------------------------------------------------------------------


def _ports(svc: Mapping[str, Any]) -> str:
    spec = svc.get("spec")
    ports = spec.get("ports") if isinstance(spec, Mapping) else None
    if not isinstance(ports, list):
        return "-"
    return ",".join(
        f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports if isinstance(p, Mapping)
    )


def _spec_field(key: str) -> Any:
    def get(svc: Mapping[str, Any]) -> Any:
        spec = svc.get("spec")
        return spec.get(key) if isinstance(spec, Mapping) else None

    return get


def _meta_field(key: str) -> Any:
    def get(svc: Mapping[str, Any]) -> Any:
        meta = svc.get("metadata")
        return meta.get(key) if isinstance(meta, Mapping) else None

    return get


COLUMNS: Sequence[Column] = (
    Column("NAME", _meta_field("name")),
    Column("TYPE", _spec_field("type")),
    Column("CLUSTER-IP", _spec_field("clusterIP")),
    Column("PORT(S)", _ports),
    Column("SELECTOR", _spec_field("selector")),
)


@get_app.command("services")
def get_services(
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="Only this Service.")] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="The Services' namespace.")
    ] = manifest.DEFAULT_NAMESPACE,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Services of every namespace.")
    ] = False,
    out: OutputOption = OutputFormat.table,
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
) -> None:
    """List declared Services, or show one, as Kubernetes v1 Service objects."""
    print_declared(
        "service",
        "Services",
        COLUMNS,
        lambda client, ns: client.config_services(namespace=ns, name=name),
        name,
        namespace,
        all_namespaces,
        out,
        lambda: client_for(node, socket, lab),
    )


def print_declared(
    kind: str,
    plural: str,
    columns: Sequence[Column],
    fetch: Callable[[AgentClient, str | None], list[dict[str, Any]]],
    name: str | None,
    namespace: str,
    all_namespaces: bool,
    out: OutputFormat,
    connect: Callable[[], AgentClient],
) -> None:
    """``glia get KIND``: one object (NAME) or a List, as a table or structured."""
    if name is not None and all_namespaces:
        raise typer.BadParameter("a NAME is looked up in one namespace: drop -A", param_hint="-A")
    client = connect()
    with _agent_call():
        items = fetch(client, None if all_namespaces else namespace)
    if name is not None:
        if not items:
            fail(f'{kind} "{name}" not found in namespace "{namespace}"')
        if output.print_structured(items[0], out):
            return
    elif output.print_structured({"apiVersion": "v1", "kind": "List", "items": items}, out):
        return
    if not items:
        where = "any namespace" if all_namespaces else f"the {namespace} namespace"
        typer.echo(f"No {plural} found in {where}.")
        return
    shown = list(columns)
    if all_namespaces:
        shown.insert(0, Column("NAMESPACE", _meta_field("namespace")))
    output.print_table(output.build_table(items, shown))


get_app.command("service", hidden=True)(get_services)
get_app.command("svc", hidden=True)(get_services)


# -- get policies -----------------------------------------------------------------


def _rules(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec, specs = policy.get("spec"), policy.get("specs")
    rules = [spec] if isinstance(spec, Mapping) else []
    rules += [r for r in specs if isinstance(r, Mapping)] if isinstance(specs, list) else []
    return rules


def _selector_text(sel: Any) -> str:
    if not isinstance(sel, Mapping):
        return "-"
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        if isinstance(e, Mapping):
            values = ",".join(str(v) for v in e.get("values") or [])
            parts.append(f"{e.get('key')} {e.get('operator')}" + (f" ({values})" if values else ""))
    return ",".join(parts) or "<all>"


def _directions(policy: Mapping[str, Any]) -> str:
    found = []
    for section in ("ingress", "ingressDeny", "egress", "egressDeny"):
        if any(r.get(section) for r in _rules(policy)):
            found.append(section)
    return ",".join(found) or "-"


POLICY_COLUMNS: Sequence[Column] = (
    Column("NAME", _meta_field("name")),
    Column("RULES", lambda p: len(_rules(p))),
    Column(
        "ENDPOINT-SELECTOR",
        lambda p: " | ".join(_selector_text(r.get("endpointSelector")) for r in _rules(p)),
    ),
    Column("SECTIONS", _directions),
)


@get_app.command("policies")
def get_policies(
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="Only this policy.")] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="The policies' namespace.")
    ] = policy_manifest.DEFAULT_NAMESPACE,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Policies of every namespace.")
    ] = False,
    out: OutputOption = OutputFormat.table,
    node: NodeOption = None,
    lab: LabOption = None,
    socket: SocketOption = None,
) -> None:
    """List declared CiliumNetworkPolicies, or show one, as cilium.io/v2 objects."""
    print_declared(
        "ciliumnetworkpolicy",
        "CiliumNetworkPolicies",
        POLICY_COLUMNS,
        lambda client, ns: client.config_policies(namespace=ns, name=name),
        name,
        namespace,
        all_namespaces,
        out,
        lambda: client_for(node, socket, lab),
    )


get_app.command("policy", hidden=True)(get_policies)
get_app.command("ciliumnetworkpolicies", hidden=True)(get_policies)
get_app.command("cnp", hidden=True)(get_policies)
