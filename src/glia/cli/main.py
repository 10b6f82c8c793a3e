"""The ``glia`` command: entry point wiring the sub-command modules together.

Each module under :mod:`glia.cli` registers its commands on the shared app;
this file composes them, adds ``--version``, and makes help and usage errors
plain text (:class:`GliaGroup`), so they read whole at any width and in a pipe.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from importlib import metadata
from typing import Annotated, Any

import typer
import typer.core

import glia
from glia.cli import (
    bpfpolicy,
    clustermesh,
    cni,
    config,
    daemons,
    deploy,
    inspect,
    kvstore,
    lab,
    metrics,
    monitor,
    policy,
    services,
)

DIST_NAME = "glia"
PIPE_HELP_WIDTH = 100_000  # help printed to a pipe: paragraphs and option lines unwrapped


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return glia.__version__


def _walk(cmd: Any) -> Iterator[Any]:
    # Typed loosely: typer's command classes derive from its private copy of click.
    yield cmd
    for sub in getattr(cmd, "commands", {}).values():
        yield from _walk(sub)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.strip().splitlines() if line.strip()), "")


class GliaGroup(typer.core.TyperGroup):
    """The root group; on creation it makes the help of every command below it plain and whole.

    Typer's rich help cuts option help with "…" when a column gets narrow and
    draws boxes into pipes; click's own formatter wraps words and cuts nothing.
    Click shortens a command's one-line summary in group listings to fit the
    width ("..."), unless ``short_help`` is set: so it is set to the whole
    first line of the command's help. Errors follow the root's markup mode,
    so usage errors are plain click messages too. In a pipe, help is not
    wrapped at all (one line per paragraph), like tables.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for cmd in _walk(self):
            if isinstance(cmd, typer.core.TyperCommand | typer.core.TyperGroup):
                cmd.rich_markup_mode = None
            if cmd.help and not cmd.short_help:
                cmd.short_help = _first_line(cmd.help)

    def make_context(self, *args: Any, **extra: Any) -> Any:
        # Sub-commands' contexts inherit the width from this one.
        if extra.get("terminal_width") is None and not sys.stdout.isatty():
            extra["terminal_width"] = PIPE_HELP_WIDTH
        return super().make_context(*args, **extra)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"glia {version()}")
        raise typer.Exit()


app = typer.Typer(
    name="glia",
    cls=GliaGroup,
    help="glia: container networking with an eBPF datapath and multi-cluster services.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print glia's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """glia: container networking with an eBPF datapath and multi-cluster services."""


daemons.register(app)
inspect.register(app)
lab.register(app)
config.register(app)
services.register(app)
kvstore.register(app)
clustermesh.register(app)
bpfpolicy.register(app)
deploy.register(app)
monitor.register(app)
metrics.register(app)
policy.register(app)
cni.register(app)


def main() -> None:
    app()
