"""``glia kvstore roles``: the etcd users and roles of one cluster, for a real deployment.

Pure output of :mod:`glia.kvstore.rbac` (the lab creates the same with
etcdctl itself): one user per writer — an agent per node, the operator, the
CLI path, the read-only user of other clusters. Each user authenticates by
the CN of its client certificate, which the deployment issues with its CA.
"""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from glia.cli.output import OutputFormat, OutputOption, print_structured
from glia.kvstore import rbac
from glia.model.cluster import validate_name

kvstore_app = typer.Typer(help="The kvstore (etcd) as glia lays it out.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(kvstore_app, name="kvstore")


@kvstore_app.command("roles")
def roles(
    cluster: Annotated[str, typer.Option("--cluster", help="The cluster's name.")],
    nodes: Annotated[
        list[str], typer.Option("--node", help="A node of the cluster (repeat for each).")
    ],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Print the etcdctl commands that create one etcd user per writer of a cluster.

    Run them as etcd's root user before `etcdctl auth enable`; then give each
    agent a client certificate with CN glia-agent-<node>, the operator
    glia-operator, the CLI path glia-config and other clusters glia-remote.
    See docs/kvstore.md.
    """
    try:
        validate_name("cluster", cluster)
        users = rbac.cluster_users(cluster, nodes)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    data = {
        user: {
            "role": spec.name,
            "grants": [{"key": g.key, "perm": g.perm, "prefix": g.prefix} for g in spec.grants],
        }
        for user, spec in users.items()
    }
    if print_structured(data, output):
        return
    for args in rbac.etcdctl_commands(users):
        typer.echo(shlex.join(["etcdctl", *args]))
