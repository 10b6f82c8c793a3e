"""Commands for operators installing glia on hosts (docs/config.md, README "Deployment").

Registered on the top-level app by :mod:`glia.cli.main` through :func:`register`:

- ``glia config reference [--format md|json] [--out FILE]``: the configuration
  reference generated from the config schemas (:mod:`glia.deploy.configref`);
- ``glia config agent|operator ... [--set KEY=VALUE] [--out FILE]``: a host's
  config file from the facts an operator knows (:mod:`glia.deploy.configgen`);
- ``glia etcd bootstrap --cluster C --nodes n1,n2 --out DIR [--endpoint URL]``:
  a cluster's CA and client certificates, offline; with ``--endpoint`` also
  its etcd users and roles (:mod:`glia.deploy.etcdboot`);
- ``glia systemd units [--out DIR] [--glia-bin PATH]``: the agent's and the
  operator's units (:mod:`glia.deploy.systemd`).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from glia.cli.common import fail
from glia.cli.output import OutputFormat, OutputOption, print_structured
from glia.deploy import configgen, configref, etcdboot, systemd

config_app = typer.Typer(help="glia's configuration files.", no_args_is_help=True)
etcd_app = typer.Typer(help="Setting up a cluster's etcd for glia.", no_args_is_help=True)
systemd_app = typer.Typer(help="systemd units of the agent and operator.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(config_app, name="config")
    app.add_typer(etcd_app, name="etcd")
    app.add_typer(systemd_app, name="systemd")


class RefFormat(enum.StrEnum):
    md = "md"
    json = "json"


@config_app.command("reference")
def reference(
    fmt: Annotated[
        RefFormat, typer.Option("--format", help="md (docs/config.md) or json.")
    ] = RefFormat.md,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the configuration reference: every key of every config file, type, default, meaning.

    Generated from the config schemas; docs/config.md is this command's output.
    """
    text = configref.markdown() if fmt is RefFormat.md else configref.as_json()
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as e:
        fail(f"glia config reference: cannot write {out}: {e.strerror or e}")


EtcdOption = Annotated[
    list[str],
    typer.Option("--etcd", help="An etcd client URL, https:// (repeat for each member)."),
]
PkiOption = Annotated[
    Path,
    typer.Option(
        "--pki", help="Where `glia etcd bootstrap` put ca.crt and the users' certificates."
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Any other key of docs/config.md; VALUE is YAML, a dotted KEY goes into a "
        "mapping (runtime_env.CONTAINERS_CONF=/etc/x.conf). Repeat.",
    ),
]
ConfigOutOption = Annotated[
    Path | None, typer.Option("--out", help="Write the file here instead of printing it.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace an existing --out file that differs.")
]


def _emit(text: str, out: Path | None, force: bool, command: str) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        if out.exists() and out.read_text() != text and not force:
            fail(
                f"glia config {command}: {out} exists and differs; nothing written "
                "(--force replaces it)"
            )
        configgen.write_file(out, text)
    except OSError as e:
        fail(f"glia config {command}: cannot write {out}: {e.strerror or e}")
    typer.echo(str(out))


@config_app.command("agent")
def config_agent(
    cluster: Annotated[str, typer.Option("--cluster", help="The cluster's name.")],
    cluster_id: Annotated[int, typer.Option("--cluster-id", help="The cluster's id, 1..255.")],
    node: Annotated[str, typer.Option("--node", help="This node's name.")],
    node_ip: Annotated[
        str, typer.Option("--node-ip", help="This node's underlay address (VXLAN, DNS).")
    ],
    etcd: EtcdOption,
    pod_pool: Annotated[str, typer.Option("--pod-pool", help="The cluster's pod pool.")],
    service_cidr: Annotated[
        str, typer.Option("--service-cidr", help="The cluster's ClusterIP range.")
    ],
    pki: PkiOption = Path("/etc/glia/pki"),
    node_network: Annotated[
        list[str] | None,
        typer.Option("--node-network", help="A network of the cluster's nodes (repeat)."),
    ] = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply/--no-apply",
            help="Serve `glia apply` through this agent (config_etcd, user glia-config).",
        ),
    ] = True,
    set_: SetOption = None,
    out: ConfigOutOption = None,
    force: ForceOption = False,
) -> None:
    """Write an agent's config file (/etc/glia/agent.yaml) for one node.

    The etcd certificates are the ones `glia etcd bootstrap --out PKI` writes
    (glia-agent-NODE, and glia-config for `glia apply`). The file is checked with
    the agent's own loader before it is written.
    """
    try:
        text = configgen.agent(
            cluster=cluster,
            cluster_id=cluster_id,
            node=node,
            node_ip=node_ip,
            etcd=etcd,
            pki=pki,
            pod_pool=pod_pool,
            service_cidr=service_cidr,
            node_networks=node_network or [],
            apply=apply,
            overrides=configgen.overrides_of(set_ or []),
            path=str(out) if out is not None else "/etc/glia/agent.yaml",
        )
    except configgen.ConfigGenError as e:
        fail(f"glia config agent: {e}")
    _emit(text, out, force, "agent")


@config_app.command("operator")
def config_operator(
    cluster: Annotated[str, typer.Option("--cluster", help="The cluster's name.")],
    cluster_id: Annotated[int, typer.Option("--cluster-id", help="The cluster's id, 1..255.")],
    etcd: EtcdOption,
    pod_pool: Annotated[str, typer.Option("--pod-pool", help="The cluster's pod pool.")],
    service_cidr: Annotated[
        str, typer.Option("--service-cidr", help="The cluster's ClusterIP range.")
    ],
    pki: PkiOption = Path("/etc/glia/pki"),
    node_mask_size: Annotated[
        int, typer.Option("--node-mask-size", help="Prefix length of each node's pod CIDR.")
    ] = 24,
    set_: SetOption = None,
    out: ConfigOutOption = None,
    force: ForceOption = False,
) -> None:
    """Write the operator's config file (/etc/glia/operator.yaml) for a cluster.

    Its etcd certificate is glia-operator's from `glia etcd bootstrap --out PKI`.
    The file is checked with the operator's own loader before it is written.
    """
    try:
        text = configgen.operator(
            cluster=cluster,
            cluster_id=cluster_id,
            etcd=etcd,
            pki=pki,
            pod_pool=pod_pool,
            service_cidr=service_cidr,
            node_mask_size=node_mask_size,
            overrides=configgen.overrides_of(set_ or []),
            path=str(out) if out is not None else "/etc/glia/operator.yaml",
        )
    except configgen.ConfigGenError as e:
        fail(f"glia config operator: {e}")
    _emit(text, out, force, "operator")


def _split_nodes(nodes: str) -> list[str]:
    return [n.strip() for n in nodes.split(",") if n.strip()]


@etcd_app.command("bootstrap")
def bootstrap(
    cluster: Annotated[str, typer.Option("--cluster", help="The cluster's name.")],
    nodes: Annotated[
        str, typer.Option("--nodes", help="The cluster's nodes, comma-separated (n1,n2).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the CA, certificates and keys.")
    ],
    endpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--endpoint",
            help="An etcd client URL (repeat for each member): also create the users and "
            "roles there and enable auth. Without it, only the files are written (offline).",
        ),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", help="CA certificate the etcd server chains to [DIR/ca.crt]."),
    ] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="etcd root user's certificate [DIR/root.crt].")
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="etcd root user's key [DIR/root.key].")
    ] = None,
    server_ip: Annotated[
        list[str] | None,
        typer.Option("--server-ip", help="Also issue etcd-server.crt with this IP SAN (repeat)."),
    ] = None,
    server_dns: Annotated[
        list[str] | None,
        typer.Option("--server-dns", help="Also issue etcd-server.crt with this DNS SAN (repeat)."),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Create a cluster's etcd CA, client certificates, users and roles (run again: no change).

    Writes DIR/ca.crt and ca.key (an existing pair there is used: put your etcd's
    CA there to sign with it) and DIR/USER.crt, USER.key for each etcd user, CN =
    user: glia-agent-NODE per node, glia-operator, glia-config (the CLI path),
    glia-remote (other clusters, read-only), glia (administration), root. With
    --endpoint, connects as root and creates the users and roles glia expects
    (`glia kvstore roles` lists them), then enables auth.
    """
    try:
        users = etcdboot.users_of(cluster, _split_nodes(nodes))
        paths = etcdboot.issue_certs(
            out, users, server_ips=server_ip or [], server_dns=server_dns or []
        )
    except (ValueError, OSError) as e:
        fail(f"glia etcd bootstrap: {e}")
    steps: list[str] = []
    if endpoint:
        root = etcdboot.Credentials(
            ca or paths[etcdboot.CA_NAME].cert,
            cert or paths[etcdboot.ROOT_USER].cert,
            key or paths[etcdboot.ROOT_USER].key,
        )
        try:
            steps = etcdboot.apply_auth(endpoint, root, users)
        except etcdboot.BootstrapError as e:
            fail(f"glia etcd bootstrap: {e}")
    data = {
        "cluster": cluster,
        "files": {name: {"cert": str(p.cert), "key": str(p.key)} for name, p in paths.items()},
        "users": {user: spec.name for user, spec in users.items()},
        "etcd": {"endpoints": endpoint or [], "steps": steps},
    }
    if print_structured(data, output):
        return
    for name, p in paths.items():
        typer.echo(f"{name}: {p.cert} {p.key}")
    if endpoint:
        typer.echo(f"etcd {','.join(endpoint)}: {len(users)} users and their roles, auth enabled")
    else:
        typer.echo("etcd not contacted (no --endpoint): certificates only")


@systemd_app.command("units")
def units(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the unit files here (e.g. /etc/systemd/system)."),
    ] = None,
    glia_bin: Annotated[
        str | None,
        typer.Option("--glia-bin", help="The glia executable for ExecStart [this installation's]."),
    ] = None,
    agent_config: Annotated[
        str | None,
        typer.Option("--agent-config", help="The agent's config file [/etc/glia/agent.yaml]."),
    ] = None,
    operator_config: Annotated[
        str | None,
        typer.Option(
            "--operator-config", help="The operator's config file [/etc/glia/operator.yaml]."
        ),
    ] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Print (or write) the systemd units of the agent and the operator.

    ExecStart runs the glia console script of this installation; the configs are
    /etc/glia/agent.yaml and /etc/glia/operator.yaml. The agent's unit says in
    its comments what the host must provide (bpffs, capabilities).
    """
    binary = glia_bin or systemd.installed_glia()
    try:
        configs = {
            name: path
            for name, path in zip(systemd.UNITS, (agent_config, operator_config), strict=True)
            if path is not None
        }
        texts = {name: systemd.render(name, binary, configs.get(name)) for name in systemd.UNITS}
        written = systemd.write(out, binary, configs) if out is not None else []
    except (ValueError, OSError) as e:
        fail(f"glia systemd units: {e}")
    if print_structured({"units": texts, "written": [str(p) for p in written]}, output):
        return
    if out is not None:
        for p in written:
            typer.echo(str(p))
        return
    for name, text in texts.items():
        typer.echo(f"# --- {name}\n{text}")
