"""The ``glia`` command: entry point wiring the sub-command modules together.

Each module under :mod:`glia.cli` registers its commands on the shared app;
this file only composes them.
"""

from __future__ import annotations

import typer

from glia.cli import config, daemons, inspect, lab, services

app = typer.Typer(
    name="glia",
    help="glia: container networking with an eBPF datapath and multi-cluster services.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

daemons.register(app)
inspect.register(app)
lab.register(app)
config.register(app)
services.register(app)


def main() -> None:
    app()
