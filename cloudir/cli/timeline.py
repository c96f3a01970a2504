"""``cloudir timeline``: normalize logs into DuckDB, query it read-only, show and export it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudir.case import TIMELINE_DB, Case
from cloudir.cli.apps import app, sub_app
from cloudir.cli.common import console, err_console, held, progress_bar
from cloudir.cli.rows import FormatOpt, RowFormat, print_rows
from cloudir.errors import CloudirError
from cloudir.textsafe import esc

if TYPE_CHECKING:
    from cloudir.timeline.ingest import IngestStats

timeline_app = sub_app("The DuckDB timeline: normalize control-plane logs, then query them.")
app.add_typer(timeline_app, name="timeline")


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
    accounts = sorted(stats.accounts, key=lambda a: (not (a.quarantined or a.id_collisions or a.repaired), a.file))
    already: list[list[object]] = [
        [name, "already ingested", "-", "-", "-", "-", "-", sha256[:16]]
        for name, sha256 in stats.already_ingested[: max(0, SHOWN_FILES - len(accounts))]
    ]
    if accounts or already:
        print_rows(
            ["file", "format", "records", "events", "duplicates", "quarantined", "id collisions", "sha256"],
            [
                [
                    a.file,
                    a.format or "-",
                    a.records,
                    a.events,
                    a.duplicates,
                    f"{a.quarantined}" + (f" (+{a.repaired} repaired)" if a.repaired else ""),
                    a.id_collisions,
                    a.sha256[:16],
                ]
                for a in accounts[:SHOWN_FILES]
            ]
            + already,
        )
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
    for path, reason in stats.links_not_followed:
        err_console.print(f"[yellow]skipped:[/] {esc(path)}: {esc(reason)}", soft_wrap=True)
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
    from cloudir.ops.investigate import IngestRequest
    from cloudir.ops.investigate import ingest as ingest_logs

    with progress_bar("timeline: ingesting") as on_progress:
        stats = ingest_logs(IngestRequest(db, paths, memory_limit), on_progress)
    _report(stats, db)


@timeline_app.command()
def build(
    case_dir: Annotated[Path, typer.Argument(help="Case folder; reads everything under logs/.")],
    memory_limit: _MEMORY_LIMIT = None,
) -> None:
    """Build timeline.duckdb in a case from its logs, recorded in the custody log."""
    from cloudir.ops.investigate import build_timeline

    case = held(Case.open(case_dir))
    with progress_bar("timeline: ingesting") as on_progress:
        stats = build_timeline(case, memory_limit=memory_limit, on_progress=on_progress)
    _report(stats, case_dir / TIMELINE_DB)


@timeline_app.command()
def query(
    db: Annotated[Path, typer.Argument(help="Timeline database (opened read-only).")],
    sql: Annotated[str, typer.Argument(help="One SQL statement over events, events_ocsf, quarantine.")],
    output: FormatOpt = RowFormat.table,
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
    print_rows(columns, rows, output)


@timeline_app.command()
def show(
    db: Annotated[Path, typer.Argument(help="Timeline database (opened read-only).")],
    *,
    actor: Annotated[str | None, typer.Option(help="Actor contains this text (ARN, e-mail, UPN).")] = None,
    operation: Annotated[str | None, typer.Option(help="Operation contains this text.")] = None,
    since: Annotated[datetime | None, typer.Option(help="From this UTC time.")] = None,
    until: Annotated[datetime | None, typer.Option(help="Until this UTC time (exclusive).")] = None,
    cloud: Annotated[str | None, typer.Option(help="aws, azure or gcp.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Events per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Page to show (1: the newest events).")] = 1,
    oldest_first: Annotated[bool, typer.Option(help="Page from the oldest event instead.")] = False,
    output: FormatOpt = RowFormat.table,
) -> None:
    """Show events newest first, a page at a time, filtered by actor, operation, time and cloud.

    Says how many events matched. Example: cloudir timeline show case/timeline.duckdb --actor web-app-role --page 2
    """
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
    params = [value for _, value in filters]
    order = "ASC" if oldest_first else "DESC"
    sql = (
        "SELECT time, cloud, account, region, operation, actor, source_ip, status, error_code, "
        "CASE WHEN is_responder THEN 'cloudir' WHEN contains(coalesce(user_agent, ''), 'cloudir/') "
        "THEN 'claims cloudir (no recorded request id)' ELSE '' END AS responder, count(*) OVER () AS matched "
        f"FROM events WHERE {where} ORDER BY time {order}, event_uid {order} "
        f"LIMIT {int(limit)} OFFSET {(int(page) - 1) * int(limit)}"
    )
    columns, rows = run_query(db, sql, params)
    total = (
        int(rows[0][-1]) if rows else int(run_query(db, f"SELECT count(*) FROM events WHERE {where}", params)[1][0][0])
    )
    first = (page - 1) * limit + 1
    shown = f"{first}-{first + len(rows) - 1}" if rows else "none"
    more = f"; next: --page {page + 1}" if first + len(rows) - 1 < total else ""
    title = f"{total} events match; showing {shown}, {'oldest' if oldest_first else 'newest'} first{more}"
    print_rows(columns[:-1], [row[:-1] for row in rows], output, title=title)
    if output is not RowFormat.table:
        err_console.print(title, soft_wrap=True)


@timeline_app.command()
def export(
    db: Annotated[Path, typer.Argument(help="Timeline database.")],
    parquet: Annotated[Path, typer.Option("--parquet", help="Folder for Hive-partitioned Parquet.")],
) -> None:
    """Export events as Parquet partitioned by cloud and date (cloud=aws/date=2024-01-31/...)."""
    from cloudir.timeline.db import export_parquet

    export_parquet(db, parquet)
    console.print(f"exported events to {esc(parquet)} (partitioned by cloud, date)", soft_wrap=True)
