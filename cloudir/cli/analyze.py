"""``cloudir analyze``: run the analyzers over a timeline database and print ranked findings."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudir.cli.apps import app
from cloudir.cli.common import console, err_console
from cloudir.cli.rows import FormatOpt, RowFormat, json_value, print_rows
from cloudir.textsafe import esc

if TYPE_CHECKING:
    from cloudir.analyze import AnalysisSummary

INCIDENTS_ORDER = ("incidents", "score DESC, first_time")
FINDINGS_ORDER = ("findings", "score DESC, first_time")
INCIDENTS_SQL = f"SELECT * FROM {INCIDENTS_ORDER[0]} ORDER BY {INCIDENTS_ORDER[1]}"
FINDINGS_SQL = f"SELECT * FROM {FINDINGS_ORDER[0]} ORDER BY {FINDINGS_ORDER[1]}"
ROW_BATCH = 1000
_TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S"]


def _rows(db_path: Path, sql: str, params: list[Any] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of ``sql`` as dicts, fetched a batch at a time: a million findings are never held at once."""
    import duckdb

    with duckdb.connect(str(db_path), read_only=True) as con:
        cursor = con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        while batch := cursor.fetchmany(ROW_BATCH):
            yield from (dict(zip(names, row, strict=True)) for row in batch)


def _print_json(summary: AnalysisSummary, db_path: Path) -> None:
    """The summary, the incidents and the findings as one JSON document, written row by row (a row a line)."""
    head = {
        "baseline_until": summary.window.baseline_until,
        "incident_since": summary.window.incident_since,
        "window_basis": summary.window.basis,
        "window_reason": summary.window.reason,
        "history": summary.window.history,
        "history_reason": summary.window.history_reason,
        "events": summary.events,
        "findings": summary.findings,
        "incidents": summary.incidents,
        "findings_by_analyzer": summary.findings_by_analyzer,
        "sigma_rules_converted": summary.sigma_rules_converted,
        "sigma_rules_failed": [{"rule": rule, "reason": reason} for rule, reason in summary.sigma_rules_failed],
        "seconds": summary.seconds,
    }
    out = sys.stdout
    out.write('{\n  "summary": ' + _indented(head, "  ").lstrip() + ",\n")
    for key, (table, order) in (("incidents", INCIDENTS_ORDER), ("findings", FINDINGS_ORDER)):
        out.write(f'  "{key}": [')
        empty = True
        for line in _json_lines(db_path, table, order):
            out.write(("\n    " if empty else ",\n    ") + line)
            empty = False
        out.write(("]" if empty else "\n  ]") + ("," if key == "incidents" else "") + "\n")
    out.write("}\n")
    out.flush()


def _json_lines(db_path: Path, table: str, order: str) -> Iterator[str]:
    """Each row of ``table`` (a fixed name) as one compact JSON object, written by DuckDB's encoder (a Python
    encoding of every row was most of the command's time with a hundred thousand findings): times ISO-8601 UTC as
    :func:`cloudir.cli.rows.utc_iso` writes them, a JSON column as its text; control characters are escaped, so
    every line break is layout. Fetched a batch at a time: a million findings are never held at once."""
    import duckdb

    from cloudir.timeline.db import sql_literal

    with duckdb.connect(str(db_path), read_only=True) as con:
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
        fields = ", ".join(f"{sql_literal(name)}: {_json_field(name, kind)}" for name, kind in columns)
        cursor = con.execute(f"SELECT CAST(to_json({{{fields}}}) AS VARCHAR) FROM {table} ORDER BY {order}")
        while batch := cursor.fetchmany(ROW_BATCH):
            yield from (row[0] for row in batch)


def _json_field(name: str, kind: str) -> str:
    """The SQL value of column ``name`` (of DuckDB type ``kind``) in a row's JSON."""
    from cloudir.timeline.db import sql_identifier

    column = sql_identifier(name)
    if kind == "TIMESTAMP":
        return (
            f"CASE WHEN microsecond({column}) % 1000000 = 0 THEN strftime({column}, '%Y-%m-%dT%H:%M:%SZ') "
            f"ELSE strftime({column}, '%Y-%m-%dT%H:%M:%S.%fZ') END"
        )
    return f"CAST({column} AS VARCHAR)" if kind == "JSON" else column


def _indented(value: Any, prefix: str) -> str:
    """``value`` as indented JSON (control characters in strings are escaped, so every line break is layout)."""
    return textwrap.indent(json.dumps(json_value(value), indent=2, ensure_ascii=False), prefix)


def _print_tables(summary: AnalysisSummary, incidents: list[dict[str, Any]], findings: list[dict[str, Any]]) -> None:
    print_rows(
        ["score", "severity", "identity", "first", "last", "findings", "analyzers", "title"],
        [
            [
                i["score"],
                i["severity"],
                i["identity"],
                i["first_time"],
                i["last_time"],
                i["finding_count"],
                ", ".join(i["analyzers"]),
                i["title"],
            ]
            for i in incidents
        ],
        title=f"Incidents ({summary.incidents})",
    )
    print_rows(
        ["score", "severity", "analyzer", "first", "title", "why", "events"],
        [
            [
                f["score"],
                f["severity"],
                f["analyzer"],
                f["first_time"],
                f["title"],
                f["explanation"],
                f["event_count"],
            ]
            for f in findings
        ],
        title=f"Findings ({summary.findings}, top {len(findings)})",
    )
    console.print(f"{summary.events} events; {esc(summary.window.describe())}; {summary.seconds} s")
    if summary.sigma_rules_converted or summary.sigma_rules_failed:
        err_console.print(
            f"sigma: {summary.sigma_rules_converted} rules converted, {len(summary.sigma_rules_failed)} not:"
        )
        for rule, reason in summary.sigma_rules_failed:
            err_console.print(f"  [yellow]skipped[/] {esc(rule)}: {esc(reason)}", soft_wrap=True)


@app.command()
def analyze(  # noqa: PLR0917 - typer options are parameters
    db_path: Annotated[Path, typer.Argument(help="Timeline database (DuckDB) with an events table.")],
    sigma_rules: Annotated[
        Path | None, typer.Option(help="Folder of SigmaHQ-format rules converted to SQL at run time.")
    ] = None,
    baseline_until: Annotated[
        datetime | None,
        typer.Option(
            formats=_TIME_FORMATS,
            help="End of the learning window (UTC). Default: --incident-since, else chosen from the case or data.",
        ),
    ] = None,
    incident_since: Annotated[
        datetime | None,
        typer.Option(
            formats=_TIME_FORMATS,
            help=(
                "Start of the scored window (UTC). Default: --baseline-until, else 24 h before the case's trigger, "
                "its log-pull window, a change point in the data, else the last week (printed, and stored in "
                "analysis_window)."
            ),
        ),
    ] = None,
    min_score: Annotated[int, typer.Option(min=0, max=100, help="Keep findings scoring at least this.")] = 50,
    output: Annotated[
        RowFormat,
        typer.Option(
            "--format",
            help="table (fits the terminal; tab-separated when piped), json (summary, incidents and findings), "
            "or jsonl, csv, md (the findings).",
        ),
    ] = RowFormat.table,
    limit: Annotated[int, typer.Option(help="Rows shown per table.")] = 30,
) -> None:
    """Score the timeline: write findings and incidents tables into DB_PATH and print them ranked.

    A database inside a case is re-registered in its custody log with its new hash.
    """
    from cloudir.ops.investigate import AnalyzeRequest, analyze

    request = AnalyzeRequest(db_path, sigma_rules, baseline_until, incident_since, min_score)
    summary = analyze(request)
    if output is RowFormat.json:
        _print_json(summary, db_path)
    elif output is RowFormat.table:
        incidents = list(_rows(db_path, INCIDENTS_SQL + " LIMIT ?", [limit]))
        _print_tables(summary, incidents, list(_rows(db_path, FINDINGS_SQL + " LIMIT ?", [limit])))
    else:
        findings = list(_rows(db_path, FINDINGS_SQL))
        columns = list(findings[0]) if findings else ["score", "title"]
        print_rows(columns, [list(finding.values()) for finding in findings], output)


@app.command("analyzers")
def list_analyzers(output: FormatOpt = RowFormat.table) -> None:
    """List the analyzers with their description, MITRE techniques and default weight."""
    from cloudir.analyze import ANALYZERS

    rows = [[meta.name, meta.default_weight, ", ".join(meta.mitre) or "-", meta.description] for meta in ANALYZERS]
    print_rows(["name", "weight", "MITRE", "description"], rows, output, title="Analyzers")
