"""How CLI commands print what the agent returns: a rich table for people, JSON for scripts.

Called by :mod:`glia.cli.inspect` (and any command that lists things). JSON is
stable (sorted keys, indent 2) so it can be diffed and parsed; tables show
``-`` for missing values and never crop a cell.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

Row = Mapping[str, Any]


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"


def format_value(value: Any) -> str:
    """One cell: readable, never raises."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return str(value)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, and the row key (or a function of the row) it shows.

    Cells are plain text (brackets in labels are shown as is) unless ``markup``
    says ``fmt`` returns rich markup on purpose (colours).
    """

    header: str
    get: str | Callable[[Row], Any]
    fmt: Callable[[Any], str] = format_value
    justify: Literal["left", "right"] = "left"
    markup: bool = False

    def cell(self, row: Row) -> str:
        value = row.get(self.get) if isinstance(self.get, str) else self.get(row)
        text = self.fmt(value)
        return text if self.markup else escape(text)


def to_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2)


def build_table(rows: Sequence[Row], columns: Sequence[Column], title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", title_justify="left")
    for col in columns:
        table.add_column(col.header, justify=col.justify, overflow="fold")
    for row in rows:
        table.add_row(*(col.cell(row) for col in columns))
    return table


def console() -> Console:
    # Made per call, not at import: tests (and pipes) swap sys.stdout per command.
    c = Console(highlight=False, soft_wrap=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        # Piped output (logs, `make demo`): rich would assume 80 columns and
        # fold every label; a wide table reads better in a file.
        c = Console(highlight=False, soft_wrap=False, width=160)
    return c


def print_json(data: Any) -> None:
    # Plain echo, not rich: colour codes or wrapping would break `| jq`.
    typer.echo(to_json(data))


def print_rows(
    rows: Sequence[Row],
    columns: Sequence[Column],
    fmt: OutputFormat,
    *,
    empty: str,
    title: str | None = None,
) -> None:
    """A list of records as JSON, or as a table (``empty`` when there is none)."""
    if fmt is OutputFormat.json:
        print_json(list(rows))
    elif not rows:
        typer.echo(empty)
    else:
        console().print(build_table(rows, columns, title))
