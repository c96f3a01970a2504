"""Rows for people and for programs: one printer behind every command that prints rows.

``table`` fits the terminal (a vertical record view when a table would wrap) and is plain tab-separated
text when the output is not a terminal; ``json`` / ``jsonl`` / ``csv`` / ``md`` are for programs and
documents. Column names are made unique and times are ISO-8601 UTC everywhere.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from cloudir.cli.consoles import console
from cloudir.textsafe import csv_cell, esc, markdown_cell, visible


class RowFormat(StrEnum):
    """How a command prints rows."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    md = "md"
    markdown = "markdown"  # the older spelling of md


FormatOpt = Annotated[
    RowFormat,
    typer.Option(
        "--format",
        help="table (fits the terminal; tab-separated text when piped), json, jsonl, csv or md.",
    ),
]


def unique_columns(columns: Sequence[str]) -> list[str]:
    """Column names with repeats renamed ``name_2``, ``name_3``… so that every record keeps every value."""
    names: list[str] = []
    for column in columns:
        name, count = column, 1
        while name in names:
            count += 1
            name = f"{column}_{count}"
        names.append(name)
    return names


def utc_iso(value: datetime) -> str:
    """A time as ISO-8601 UTC with a ``Z`` (naive times are the timeline's UTC)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def json_value(value: Any) -> Any:
    """A value as JSON data: times as ISO-8601 UTC, decimals as numbers, nested values converted too."""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def cell_text(value: Any) -> str:
    """A value as the text of one cell."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, list | dict | tuple):
        return json.dumps(json_value(value))
    return str(value)


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts under unique column names."""
    names = unique_columns(columns)
    return [{name: json_value(value) for name, value in zip(names, row, strict=True)} for row in rows]


def print_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: RowFormat = RowFormat.table,
    *,
    title: str | None = None,
    out: Console | None = None,
) -> None:
    """Print ``rows`` in ``fmt``; ``title`` (tool text, escaped here) heads the table views."""
    out = out or console
    names = unique_columns(columns)
    if fmt is RowFormat.json:
        typer.echo(json.dumps(records(names, rows), indent=2, ensure_ascii=False))
    elif fmt is RowFormat.jsonl:
        for record in records(names, rows):
            typer.echo(json.dumps(record, ensure_ascii=False))
    elif fmt is RowFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(map(csv_cell, names))
        writer.writerows([csv_cell(v) if isinstance(v, str) else cell_text(v) for v in row] for row in rows)
        typer.echo(buffer.getvalue(), nl=False)
    elif fmt in {RowFormat.md, RowFormat.markdown}:
        lines = ["| " + " | ".join(map(markdown_cell, names)) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(markdown_cell(cell_text(v)) for v in row) + " |" for row in rows]
        typer.echo("\n".join(lines))
    elif not out.is_terminal:
        _print_plain(names, rows, title, out)
    else:
        _print_fitted(names, rows, title, out)


def _print_plain(names: list[str], rows: Sequence[Sequence[Any]], title: str | None, out: Console) -> None:
    """Tab-separated text for pipes: one line per row, never wrapped, control characters visible."""
    lines = [f"# {visible(title)}"] if title else []
    lines.append("\t".join(visible(name) for name in names))
    lines += ["\t".join(visible(cell_text(value)) for value in row) for row in rows]
    out.file.write("".join(f"{line}\n" for line in lines))
    out.file.flush()


def _print_fitted(names: list[str], rows: Sequence[Sequence[Any]], title: str | None, out: Console) -> None:
    """A table when it fits the terminal unwrapped, else one block of ``column: value`` lines per row."""
    table = Table(title=esc(title) if title else None)
    for name in names:
        table.add_column(esc(name), no_wrap=True)
    for row in rows:
        table.add_row(*(esc(cell_text(value)) for value in row))
    if Measurement.get(out, out.options.update_width(1 << 16), table).maximum <= out.width:
        out.print(table)
        return
    if title:
        out.print(f"[bold]{esc(title)}[/]")
    key_width = max((len(name) for name in names), default=0)
    for index, row in enumerate(rows, start=1):
        out.print(f"[dim]-- {index} of {len(rows)} --[/]")
        for name, value in zip(names, row, strict=True):
            out.print(f"[bold]{esc(name.rjust(key_width))}[/] {esc(cell_text(value))}", soft_wrap=False)
