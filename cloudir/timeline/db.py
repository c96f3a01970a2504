"""DuckDB connections for the timeline: a bounded writer for ingest and a locked-down reader for queries."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import duckdb

from cloudir.errors import CloudirError
from cloudir.timeline.schema import EVENTS_DDL, EVENTS_OCSF_VIEW

MEMORY_LIMIT = "1GB"  # of a query connection
QUERY_TIMEOUT_SECONDS = 60.0
MIN_MEMORY_MIB = 512
MAX_MEMORY_MIB = 1536  # with Python and DuckDB's own overhead, ingest peaks below 2 GiB
DUCKDB_MAGIC = b"DUCK"  # at byte 8 of every DuckDB database file

# Helpers the format SQL uses; temporary, so nothing but the schema lands in the database file.
_MACROS = """
CREATE OR REPLACE TEMP MACRO utc_ts(s) AS try_cast(s AS TIMESTAMPTZ)::TIMESTAMP;
CREATE OR REPLACE TEMP MACRO is_read_operation(op) AS regexp_matches(op,
    '(^|[./])(get|list|describe|head|lookup|search|batchget|read|select|aggregatedlist|testiampermissions)[A-Za-z0-9]*$',
    'i');
CREATE OR REPLACE TEMP MACRO py_json(s) AS
    replace(replace(replace(replace(s, '''', '"'), ': None', ': null'), ': True', ': true'), ': False', ': false');
"""


def sql_literal(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (a column or struct member name, whoever chose it)."""
    return '"' + name.replace('"', '""') + '"'


def default_memory_limit() -> str:
    """DuckDB's memory limit for ingest: a quarter of the machine's (or the cgroup's) memory, 512 MiB-1.5 GiB."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cgroup = Path("/sys/fs/cgroup/memory.max")
    with contextlib.suppress(OSError, ValueError):
        total = min(total, int(cgroup.read_text().strip()))
    return f"{max(MIN_MEMORY_MIB, min(MAX_MEMORY_MIB, total // 4 >> 20))}MiB"


def _refuse_foreign(db_path: Path) -> None:
    """Refuse to write into a file that is not a DuckDB database (a log given to ``--db`` by mistake)."""
    if not db_path.exists():
        return
    if not db_path.is_file():
        raise CloudirError(f"{db_path}: not a file; give the timeline database file to --db")
    with db_path.open("rb") as handle:
        header = handle.read(12)
    if header[8:12] != DUCKDB_MAGIC:
        raise CloudirError(
            f"{db_path}: not a timeline database (not a DuckDB file); refusing to write into it",
            hint="--db names the database to create or extend, e.g. --db timeline.duckdb",
        )


def connect_for_ingest(db_path: Path, *, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) a timeline database for writing, with bounded memory and a spill folder."""
    _refuse_foreign(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(
            str(db_path),
            config={
                "memory_limit": memory_limit,
                "temp_directory": str(db_path.with_name(db_path.name + ".tmp")),
                "preserve_insertion_order": True,
            },
        )
    except duckdb.Error as exc:
        raise CloudirError(f"{db_path}: cannot open for ingest: {_first_line(exc)}") from None
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()
        }
        if not tables or "events" in tables:
            con.execute(EVENTS_DDL)
            _migrate(con)
            con.execute(EVENTS_OCSF_VIEW)
            con.execute(_MACROS)
            return con
    except duckdb.Error as exc:
        con.close()
        raise CloudirError(f"{db_path}: cannot prepare the timeline: {_first_line(exc)}") from None
    con.close()
    raise CloudirError(f"{db_path}: a DuckDB database without an events table, not a timeline; refusing it")


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a timeline written by an earlier cloudir to this schema (SHA-256 content hashes, operation_original)."""
    columns = dict(
        con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events'").fetchall()
    )
    for column, kind in (("id_collision", "BOOLEAN DEFAULT false"), ("operation_original", "VARCHAR")):
        if column not in columns:
            con.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")
    if columns.get("content_hash") == "BLOB":
        return
    con.execute("DROP INDEX IF EXISTS events_actor")  # DuckDB alters no column of an indexed table; rebuilt by ingest
    sha256 = "CASE WHEN id_collision THEN unhex(sha256(raw::VARCHAR)) END"  # as ingest sets it
    if "content_hash" in columns:  # a 64-bit hash before
        con.execute(f"ALTER TABLE events ALTER content_hash SET DATA TYPE BLOB USING {sha256}")
    else:
        con.execute("ALTER TABLE events ADD COLUMN content_hash BLOB")
        con.execute(f"UPDATE events SET content_hash = {sha256}")


def connect_read_only(db_path: Path, *, memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """A connection that can read the timeline and nothing else: no writes, files, attach or extensions."""
    if not db_path.is_file():
        raise CloudirError(f"{db_path}: no timeline database here", hint="run `cloudir timeline build` or `ingest`")
    try:
        con = duckdb.connect(
            str(db_path),
            read_only=True,
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "allow_community_extensions": False,
                "memory_limit": memory_limit,
            },
        )
    except duckdb.Error as exc:
        raise CloudirError(f"{db_path}: cannot open timeline database read-only: {_first_line(exc)}") from None
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(
    db_path: Path,
    sql: str,
    params: list[Any] | None = None,
    *,
    timeout: float = QUERY_TIMEOUT_SECONDS,
    memory_limit: str = MEMORY_LIMIT,
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run exactly one SQL statement on a read-only connection; return column names and rows.

    DuckDB's parser decides what one statement is. The statement is interrupted after ``timeout`` seconds
    (0: no limit) and may use at most ``memory_limit``.
    """
    con = connect_read_only(db_path, memory_limit=memory_limit)
    timer = threading.Timer(timeout, con.interrupt) if timeout > 0 else None
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1:
            raise CloudirError(f"query refused: expected exactly one SQL statement, got {len(statements)}")
        if timer is not None:
            timer.start()
        result = con.execute(sql, params or [])
        if result.description is None:
            return [], []
        columns = [column[0] for column in result.description]
        return columns, result.fetchall()
    except duckdb.InterruptException:
        raise CloudirError(
            f"query stopped after the {timeout:g} s time limit", hint="narrow it, or raise --timeout"
        ) from None
    except duckdb.OutOfMemoryException:
        raise CloudirError(
            f"query stopped: it needs more than the {memory_limit} memory limit",
            hint="narrow it, or raise --memory-limit",
        ) from None
    except duckdb.Error as exc:
        raise CloudirError(f"query refused or failed: {_first_line(exc)}") from None
    finally:
        if timer is not None:
            timer.cancel()
        con.close()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def export_parquet(db_path: Path, target: Path) -> None:
    """Write ``events`` as Parquet under ``target``, Hive-partitioned by cloud and date."""
    if not db_path.is_file():
        raise CloudirError(f"{db_path}: no timeline database here")
    target.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        con.execute(
            "COPY (SELECT *, strftime(time, '%Y-%m-%d') AS date FROM events) "
            f"TO '{str(target).replace(chr(39), chr(39) * 2)}' "
            "(FORMAT parquet, PARTITION_BY (cloud, date), OVERWRITE_OR_IGNORE true)"
        )
    except duckdb.Error as exc:
        raise CloudirError(f"export to {target} failed: {_first_line(exc)}") from None
    finally:
        con.close()
