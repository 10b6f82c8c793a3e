"""How CLI commands print: a table for people, JSON or YAML for scripts.

Called by every command module that prints (:mod:`glia.cli.inspect`,
:mod:`glia.cli.services`, :mod:`glia.cli.config`) and meant for any other:

- :data:`OutputOption` is the one ``-o/--output table|json|yaml`` option (any
  case; another value is a usage error naming the choices, exit code 2);
- :func:`print_structured` prints data as JSON or YAML and says whether it did,
  so a command with its own table adopts ``-o`` with
  ``if print_structured(data, out): return``;
- :func:`print_table` prints a rich ``Table``: on a terminal as rich draws it
  (colours, cells folded to the width, never cut); to a pipe or a file as plain
  text, one line per row, columns apart by two spaces, no padding at line
  ends, no colour, nothing cut or wrapped, so ``grep``/``awk`` see whole rows.

JSON is stable (sorted keys, indent 2) so it can be diffed and parsed; YAML
keeps the data's key order (Kubernetes objects read apiVersion, kind,
metadata, spec). Neither ever carries colour codes. Tables show ``-`` for
missing values.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import typer
import yaml
from rich import box
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

Row = Mapping[str, Any]

PLAIN_SEPARATOR = "  "  # between the columns of a table printed to a pipe
PLAIN_LINE_BREAK = ", "  # what a line break inside a cell becomes in a pipe


class OutputFormat(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def parse_format(value: str | OutputFormat) -> OutputFormat:
    """``-o``'s value in any case; a usage error naming the choices otherwise."""
    if isinstance(value, OutputFormat):
        return value
    try:
        return OutputFormat(value.strip().lower())
    except ValueError:
        choices = ", ".join(f.value for f in OutputFormat)
        raise typer.BadParameter(f"{value!r} is not one of {choices}") from None


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        metavar="|".join(f.value for f in OutputFormat),
        help="Output format: table, json or yaml (any case).",
        parser=parse_format,
    ),
]


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


# -- JSON and YAML ------------------------------------------------------------------


def to_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2)


def to_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False).rstrip("\n")


def print_json(data: Any) -> None:
    # Plain echo, not rich: colour codes or wrapping would break `| jq`.
    typer.echo(to_json(data))


def print_yaml(data: Any) -> None:
    typer.echo(to_yaml(data))


def print_structured(data: Any, fmt: OutputFormat) -> bool:
    """Print ``data`` as JSON or YAML when ``fmt`` asks for it; False for a table (yours)."""
    if fmt is OutputFormat.json:
        print_json(data)
    elif fmt is OutputFormat.yaml:
        print_yaml(data)
    else:
        return False
    return True


# -- tables -------------------------------------------------------------------------


def console(*, stderr: bool = False) -> Console:
    # Made per call, not at import: tests (and pipes) swap sys.stdout per command.
    return Console(highlight=False, soft_wrap=False, stderr=stderr)


def build_table(rows: Sequence[Row], columns: Sequence[Column], title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", title_justify="left")
    for col in columns:
        table.add_column(col.header, justify=col.justify, overflow="fold")
    for row in rows:
        table.add_row(*(col.cell(row) for col in columns))
    return table


def _plain(cell: RenderableType) -> str:
    """A cell's text without styles, on one line."""
    if isinstance(cell, str):
        text = Text.from_markup(cell).plain
    elif isinstance(cell, Text):
        text = cell.plain
    else:
        # Anything else rich can draw (a nested table...): draw it wide, uncoloured.
        c = Console(width=10_000, color_system=None, highlight=False)
        with c.capture() as cap:
            c.print(cell)
        text = cap.get()
    lines = [line.strip() for line in text.splitlines()]
    return PLAIN_LINE_BREAK.join(line for line in lines if line)


def plain_lines(table: Table) -> list[str]:
    """The table as plain text lines: a header (if shown) and one line per row.

    Columns are as wide as their widest cell and apart by two spaces; nothing
    is cut, nothing trails the last cell, line breaks inside a cell become ", ".
    """
    columns = table.columns
    grid: list[list[str]] = []
    if table.show_header:
        grid.append([_plain(c.header) for c in columns])
    cells = [[_plain(cell) for cell in c.cells] for c in columns]
    grid.extend([col[i] for col in cells] for i in range(table.row_count))
    widths = [max((cell_len(row[i]) for row in grid), default=0) for i in range(len(columns))]
    lines = []
    if table.title:
        lines.append(_plain(table.title))
    for row in grid:
        parts = []
        for i, (text, col) in enumerate(zip(row, columns, strict=True)):
            pad = " " * (widths[i] - cell_len(text))
            last = i == len(columns) - 1
            parts.append(pad + text if col.justify == "right" else text + ("" if last else pad))
        lines.append(PLAIN_SEPARATOR.join(parts).rstrip())
    return lines


def print_table(table: Table, out: Console | None = None) -> None:
    """Draw ``table`` on a terminal; as :func:`plain_lines` to a pipe or a file."""
    c = out or console()
    if c.is_terminal:
        c.print(table)
    else:
        _write_lines(c, plain_lines(table))


def _write_lines(c: Console, lines: Iterable[str]) -> None:
    c.file.write("".join(line + "\n" for line in lines))
    c.file.flush()


def print_rows(
    rows: Sequence[Row],
    columns: Sequence[Column],
    fmt: OutputFormat,
    *,
    empty: str,
    title: str | None = None,
) -> None:
    """A list of records as JSON or YAML, or as a table (``empty`` when there is none)."""
    if print_structured(list(rows), fmt):
        return
    if not rows:
        typer.echo(empty)
    else:
        print_table(build_table(rows, columns, title))
