"""``cloudir timeline``: normalize logs into DuckDB, query it read-only, show and export it."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cloudir.case import Case, case_root_of
from cloudir.cli.apps import app, sub_app
from cloudir.cli.common import console, err_console, held
from cloudir.errors import CloudirError
from cloudir.textsafe import csv_cell, esc, markdown_cell

if TYPE_CHECKING:
    from cloudir.timeline.ingest import IngestStats

timeline_app = sub_app("The DuckDB timeline: normalize control-plane logs, then query them.")
app.add_typer(timeline_app, name="timeline")


class OutputFormat(StrEnum):
    """How ``timeline query`` prints rows."""

    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


SHOWN_FILES = 40  # per-file rows printed; all of them are in the ingest_files table

_MEMORY_LIMIT = Annotated[
    str | None,
    typer.Option(
        "--memory-limit",
        help="DuckDB memory limit for the ingest, e.g. 4GB (default: a quarter of the machine's memory, "
        "512MiB-1.5GiB); what does not fit spills to disk.",
    ),
]


def _report(stats: IngestStats, target: Path) -> None:
    """Print the accounting: one row per file (problem files first), then the totals."""
    table = Table("file", "format", "records", "events", "duplicates", "quarantined", "id collisions", "sha256")
    accounts = sorted(stats.accounts, key=lambda a: (not (a.quarantined or a.id_collisions or a.repaired), a.file))
    for account in accounts[:SHOWN_FILES]:
        table.add_row(
            esc(account.file),
            esc(account.format or "-"),
            str(account.records),
            str(account.events),
            str(account.duplicates),
            str(account.quarantined) + (f" (+{account.repaired} repaired)" if account.repaired else ""),
            str(account.id_collisions),
            account.sha256[:16],
        )
    if accounts:
        console.print(table)
    if len(accounts) > SHOWN_FILES:
        console.print(f"... and {len(accounts) - SHOWN_FILES} more files: SELECT * FROM ingest_files")
    formats = ", ".join(f"{name} {count}" for name, count in sorted(stats.per_format.items())) or "none"
    console.print(
        f"{esc(target)}: {stats.records} records = {stats.ingested} ingested + {stats.duplicates} duplicate + "
        f"{stats.quarantined} quarantined, from {stats.files} files ({formats}); "
        f"{stats.id_collisions} id collisions"
        + (f"; {stats.skipped} files skipped (no events)" if stats.skipped else "")
        + (f"; {stats.unchanged} files already ingested (same SHA-256), not read again" if stats.unchanged else ""),
        soft_wrap=True,
    )
    flows = stats.flows
    if flows.files:
        console.print(
            f"{esc(target)}: {flows.ingested} flow records, {flows.duplicates} duplicate, "
            f"{flows.quarantined} quarantined from {flows.files} flow-log files (table flows)",
            soft_wrap=True,
        )
    if stats.quarantined or stats.repaired or flows.quarantined:
        err_console.print(
            f"[yellow]note:[/] {stats.quarantined + flows.quarantined} records quarantined, {stats.repaired} repaired; "
            "see `SELECT * FROM quarantine`"
        )
    if stats.ingested + stats.duplicates + flows.ingested + flows.duplicates == 0 and not stats.unchanged:
        raise CloudirError("nothing readable was ingested")


@timeline_app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Log files or folders (plain or gzip; read recursively).")],
    db: Annotated[Path, typer.Option("--db", help="Timeline database to create or extend.")],
    memory_limit: _MEMORY_LIMIT = None,
) -> None:
    """Normalize CloudTrail, GCP audit, Azure Activity, Entra and Kubernetes audit logs into a timeline database."""
    from cloudir.timeline.ingest import ingest_paths

    root = case_root_of(db)
    if root is not None:
        raise CloudirError(
            f"{db} is inside case {root}: ingesting outside files would change its evidence without a record",
            hint=f"pull the logs into the case and run: cloudir timeline build {root}",
        )
    _report(ingest_paths(db, paths, memory_limit=memory_limit), db)


@timeline_app.command()
def build(
    case_dir: Annotated[Path, typer.Argument(help="Case folder; reads everything under logs/.")],
    memory_limit: _MEMORY_LIMIT = None,
) -> None:
    """Build timeline.duckdb in a case from its logs, recorded in the custody log."""
    from cloudir.timeline.ingest import build_case_timeline

    case = held(Case.open(case_dir))
    _report(build_case_timeline(case, memory_limit=memory_limit), case_dir / "timeline.duckdb")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]], output: OutputFormat, title: str | None) -> None:
    if output is OutputFormat.json:
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        typer.echo(json.dumps(records, default=str, indent=2))
    elif output is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(map(csv_cell, columns))
        writer.writerows([csv_cell(value) if isinstance(value, str) else _cell(value) for value in row] for row in rows)
        typer.echo(buffer.getvalue(), nl=False)
    elif output is OutputFormat.markdown:
        lines = ["| " + " | ".join(map(markdown_cell, columns)) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(markdown_cell(_cell(v)) for v in row) + " |" for row in rows]
        typer.echo("\n".join(lines))
    else:
        table = Table(title=title, show_lines=False)
        for column in columns:
            table.add_column(esc(column), overflow="fold")
        for row in rows:
            table.add_row(*(esc(_cell(value)) for value in row))
        console.print(table)


@timeline_app.command()
def query(
    db: Annotated[Path, typer.Argument(help="Timeline database (opened read-only).")],
    sql: Annotated[str, typer.Argument(help="One SQL statement over events, events_ocsf, quarantine.")],
    output: Annotated[OutputFormat, typer.Option("--format", help="Output format.")] = OutputFormat.table,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Stop the query after this many seconds (default 60; 0: no limit).")
    ] = None,
    memory_limit: Annotated[
        str | None, typer.Option(help="DuckDB memory limit for the query (default 1GB), e.g. 4GB.")
    ] = None,
) -> None:
    """Run one SQL statement on a read-only connection that cannot write, attach, install or read other files."""
    from cloudir.timeline.db import run_query

    limits: dict[str, Any] = {"timeout": timeout, "memory_limit": memory_limit}
    columns, rows = run_query(db, sql, **{key: value for key, value in limits.items() if value is not None})
    _print_rows(columns, rows, output, title=None)


@timeline_app.command()
def show(
    db: Annotated[Path, typer.Argument(help="Timeline database (opened read-only).")],
    *,
    actor: Annotated[str | None, typer.Option(help="Actor contains this text (ARN, e-mail, UPN).")] = None,
    operation: Annotated[str | None, typer.Option(help="Operation contains this text.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this UTC time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until this UTC time (exclusive).")] = None,
    cloud: Annotated[str | None, typer.Option(help="aws, azure or gcp.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events.")] = 200,
) -> None:
    """Show events in time order as a table, filtered by actor, operation, time and cloud."""
    from cloudir.timeline.db import run_query

    filters: list[tuple[str, object]] = []
    if actor:
        filters.append(("contains(lower(actor), lower(?))", actor))
    if operation:
        filters.append(("contains(lower(operation), lower(?))", operation))
    if since:
        filters.append(("time >= ?", since))
    if until:
        filters.append(("time < ?", until))
    if cloud:
        filters.append(("cloud = ?", cloud.lower()))
    where = " AND ".join(clause for clause, _ in filters) or "true"
    sql = (
        "SELECT time, cloud, account, region, operation, actor, source_ip, status, error_code, "
        "CASE WHEN is_responder THEN 'cloudir' WHEN contains(coalesce(user_agent, ''), 'cloudir/') "
        "THEN 'claims cloudir (no recorded request id)' ELSE '' END AS responder "
        f"FROM events WHERE {where} ORDER BY time, event_uid LIMIT {int(limit)}"
    )
    columns, rows = run_query(db, sql, [value for _, value in filters])
    _print_rows(columns, rows, OutputFormat.table, title=f"{len(rows)} events")


@timeline_app.command()
def export(
    db: Annotated[Path, typer.Argument(help="Timeline database.")],
    parquet: Annotated[Path, typer.Option("--parquet", help="Folder for Hive-partitioned Parquet.")],
) -> None:
    """Export events as Parquet partitioned by cloud and date (cloud=aws/date=2024-01-31/...)."""
    from cloudir.timeline.db import export_parquet

    export_parquet(db, parquet)
    console.print(f"exported events to {esc(parquet)} (partitioned by cloud, date)", soft_wrap=True)
