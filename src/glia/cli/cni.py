"""``glia cni install``: make a host's container runtime use glia-cni.

Thin shell over :mod:`glia.cni.install` (what is written, conflicts, atomic
writes); prints what each file became, as a table or with ``-o json|yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from glia import native
from glia.cli.common import fail
from glia.cli.output import Column, OutputFormat, OutputOption, print_rows
from glia.cni import install as cni_install
from glia.cni.spec import DEFAULT_AGENT_SOCKET

cni_app = typer.Typer(help="The CNI plugin (glia-cni) on this host.", no_args_is_help=True)

COLUMNS = [Column("PATH", "path"), Column("KIND", "kind"), Column("ACTION", "action")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(cni_app, name="cni")


@cni_app.command("install")
def install(
    bin_dir: Annotated[
        Path, typer.Option("--bin-dir", help="Where the runtime looks for CNI plugins.")
    ] = Path("/opt/cni/bin"),
    conf_dir: Annotated[
        Path, typer.Option("--conf-dir", help="Where the runtime reads network configurations.")
    ] = Path("/etc/cni/net.d"),
    agent_socket: Annotated[
        str, typer.Option("--agent-socket", help="The node agent's API socket.")
    ] = DEFAULT_AGENT_SOCKET,
    name: Annotated[str, typer.Option("--name", help="The network's name.")] = "glia",
    mtu: Annotated[int, typer.Option("--mtu", help="MTU passed to the agent.")] = 1450,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files that differ.")
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Install glia-cni and the glia network configuration for a container runtime.

    Copies the compiled fast path to BIN_DIR/glia-cni, links BIN_DIR/glia-cni-python
    to this installation's Python plugin (which the fast path runs when the agent
    cannot take an invocation), and writes CONF_DIR/10-NAME.conflist. An existing
    file that differs is left alone, and nothing is written, unless --force.
    """
    try:
        text = cni_install.conflist_text(agent_socket, name, mtu)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        files = cni_install.wanted_files(
            bin_dir.absolute(),
            conf_dir.absolute(),
            native.cni_fastpath(),
            cni_install.python_plugin(),
            name,
            text,
        )
        steps = cni_install.plan(files, force)
        cni_install.apply(steps)
    except cni_install.InstallError as e:
        fail(f"glia cni install: {e}")
    print_rows([s.as_dict() for s in steps], COLUMNS, output, empty="nothing to install")
