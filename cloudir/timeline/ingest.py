"""Normalize control-plane logs into the timeline, in DuckDB SQL from file to ``events``.

Per batch of files: read documents (``read_json_objects`` / line-wise ``read_csv`` / ``read_csv``),
unwrap containers into records, classify each record by its top-level keys, map it with its format's
SQL, quarantine what cannot be mapped, drop duplicates (same cloud and event id), insert the rest.
Python only sniffs each file's first bytes to pick a reader.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cloudir.errors import CloudirError
from cloudir.timeline.db import connect_for_ingest
from cloudir.timeline.formats import CONTAINERS, MAPPED_COLUMNS, RECORD_FORMATS
from cloudir.timeline.schema import EVENTS_COLUMNS, EVENTS_INDEXES

if TYPE_CHECKING:
    from cloudir.case import Case

TIMELINE_FILE = "timeline.duckdb"
RESPONDER_AGENT = "cloudir/"
SNIFF_BYTES = 1 << 16
BATCH_BYTES = 64 << 20  # uncompressed-equivalent input per transaction: stays within the memory limit
MAX_OBJECT_BYTES = 256 << 20  # largest JSON document (one file of records)
MAX_LINE_BYTES = 16 << 20  # largest JSON Lines line
GZIP_RATIO = 10
QUARANTINE_RAW_CHARS = 1 << 20
# Evidence the log collectors keep next to the logs that holds no events: coverage reports, the request
# behind a page series, trail and bucket listings, digest validation, CloudTrail digests, their S3 metadata
# and the digest public keys. Skipped (and counted), not quarantined.
NOT_EVENT_FILES = ("coverage.json", "request.json", "trails.json", "s3-listing.json", "digest-validation.json")
NOT_EVENT_FOLDERS = ("CloudTrail-Digest", "s3-meta", "public-keys")


@dataclass
class IngestStats:
    """What one ingest run did. Input records = ingested + duplicates + quarantined."""

    files: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0  # files that hold no events (empty, coverage reports, CloudTrail digests)
    per_format: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Input records seen (unreadable files count as one each)."""
        return self.ingested + self.duplicates + self.quarantined

    def as_dict(self) -> dict[str, object]:
        """Plain-dict form for custody details and JSON output."""
        return {
            "files": self.files,
            "records": self.records,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "skipped_files": self.skipped,
            "per_format": dict(sorted(self.per_format.items())),
        }


@dataclass(frozen=True)
class _SourceFile:
    number: int
    path: Path
    name: str  # what goes into source_file
    reader: str | None  # json | jsonl | csv | None (unrecognized)
    compression: str
    weight: int


def ingest_paths(
    db_path: Path,
    paths: Sequence[Path],
    *,
    responder_request_ids: Iterable[str] = (),
    source_root: Path | None = None,
) -> IngestStats:
    """Ingest log files and folders (recursively; plain or gzip) into the timeline at ``db_path``.

    ``source_root``: record source files relative to this folder (a case root) instead of as given.
    """
    files, skipped = _discover(paths, source_root)
    stats = IngestStats(files=len(files), skipped=skipped)
    con = connect_for_ingest(db_path)
    try:
        _prepare(con, responder_request_ids)
        for batch in _batches(files):
            _ingest_batch(con, batch, stats)
        con.execute(
            "UPDATE events SET is_responder = true WHERE NOT is_responder "
            "AND request_id IN (SELECT request_id FROM responder_ids)"
        )
        con.execute(EVENTS_INDEXES)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return stats


def build_case_timeline(case: Case) -> IngestStats:
    """Build ``timeline.duckdb`` in the case from everything under ``logs/`` and register its hash."""
    from cloudir.custody import CUSTODY_FILE, read_records

    logs = case.root / "logs"
    with case.action("timeline.build", target=TIMELINE_FILE) as act:
        if not logs.is_dir():
            raise CloudirError(f"{logs}: the case holds no logs", hint="pull logs into the case first")
        custody = case.root / CUSTODY_FILE
        request_ids = {
            call["request_id"]
            for record in (read_records(custody) if custody.is_file() else [])
            for call in record.get("api_calls", [])
            if call.get("request_id")
        }
        stats = ingest_paths(
            case.root / TIMELINE_FILE, [logs], responder_request_ids=request_ids, source_root=case.root
        )
        act.details.update(stats.as_dict())
        case.record_existing(TIMELINE_FILE)
        if stats.ingested + stats.duplicates == 0:
            raise CloudirError(f"none of the {stats.files} log files under {logs} held a readable event")
    return stats


# -- files ----------------------------------------------------------------------------------------------


def _discover(paths: Sequence[Path], source_root: Path | None) -> tuple[list[_SourceFile], int]:
    """The files to read, and how many were skipped as holding no events."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise CloudirError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(found))
    files: list[_SourceFile] = []
    for path in unique:
        if path.name in NOT_EVENT_FILES or set(path.parts) & set(NOT_EVENT_FOLDERS):
            continue
        reader, compression = _sniff(path)
        if reader == "empty":
            continue
        name = path.resolve().relative_to(source_root.resolve()).as_posix() if source_root else str(path)
        weight = path.stat().st_size * (GZIP_RATIO if compression == "gzip" else 1)
        files.append(_SourceFile(len(files), path, name, reader, compression, weight))
    return files, len(unique) - len(files)


def _sniff(path: Path) -> tuple[str | None, str]:
    """Pick a reader from the first bytes: json (one document), jsonl, csv, empty, or None (unknown)."""
    with path.open("rb") as handle:
        compression = "gzip" if handle.read(2) == b"\x1f\x8b" else "none"
    try:
        with gzip.open(path, "rb") if compression == "gzip" else path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return None, compression
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if not text:
        return "empty", compression
    first_line, newline, _ = text.partition("\n")
    if text.startswith(("{", "[")):
        if not newline:
            return "json", compression
        try:
            json.loads(first_line)
        except ValueError:
            return "json", compression
        return "jsonl", compression
    header = first_line.lower()
    if "," in header and "event name" in header.replace("_", " ") and "event id" in header.replace("_", " "):
        return "csv", compression
    return None, compression


def _batches(files: list[_SourceFile]) -> Iterator[list[_SourceFile]]:
    batch: list[_SourceFile] = []
    weight = 0
    for source in files:
        batch.append(source)
        weight += source.weight
        if weight >= BATCH_BYTES:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


# -- SQL --------------------------------------------------------------------------------------------------


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _prepare(con: duckdb.DuckDBPyConnection, responder_request_ids: Iterable[str]) -> None:
    con.execute(
        "CREATE OR REPLACE TEMP TABLE responder_ids AS SELECT DISTINCT unnest($ids::VARCHAR[]) AS request_id",
        {"ids": sorted(set(responder_request_ids))},
    )


def _read_file_sql(source: _SourceFile, *, line_by_line: bool = False) -> str:
    """SELECT doc_no, doc (JSON or NULL), keys, bad (text of an invalid record) for one file, in file order.

    JSON Lines are read with ``read_json_objects``; a file with a malformed line is re-read line by line
    so the bad lines can be quarantined. Blank lines are not records.
    """
    path, compression = _literal(str(source.path)), _literal(source.compression)
    if source.reader == "csv":
        return (
            "SELECT doc_no, doc, json_keys(doc) AS keys, NULL AS bad FROM ("
            "SELECT row_number() OVER () - 1 AS doc_no, to_json(t) AS doc "
            f"FROM read_csv({path}, header=true, all_varchar=true, normalize_names=true, compression={compression}) t)"
        )
    if line_by_line:
        return (
            "SELECT doc_no, doc, json_keys(doc) AS keys, CASE WHEN doc IS NULL THEN line END AS bad FROM ("
            "SELECT row_number() OVER () - 1 AS doc_no, line, CASE WHEN json_valid(line) THEN line::JSON END AS doc "
            f"FROM read_csv({path}, columns={{'line': 'VARCHAR'}}, delim=chr(31), quote='', escape='', "
            f"header=false, auto_detect=false, compression={compression}, max_line_size={MAX_LINE_BYTES}, "
            f"buffer_size={MAX_LINE_BYTES * 2}) WHERE trim(line) <> '')"
        )
    layout = "unstructured" if source.reader == "json" else "newline_delimited"
    return (
        "SELECT row_number() OVER () - 1 AS doc_no, json AS doc, json_keys(json) AS keys, NULL AS bad "
        f"FROM read_json_objects({path}, format='{layout}', compression={compression}, "
        f"maximum_object_size={MAX_OBJECT_BYTES})"
    )


def _stage_documents(con: duckdb.DuckDBPyConnection, batch: list[_SourceFile]) -> None:
    con.execute(
        "CREATE OR REPLACE TEMP TABLE docs (file_no INTEGER, doc_no BIGINT, doc JSON, keys VARCHAR[], bad VARCHAR)"
    )
    con.execute("CREATE OR REPLACE TEMP TABLE file_problems (file_no INTEGER, reason VARCHAR)")
    for source in batch:
        if source.reader is None:
            con.execute(
                "INSERT INTO file_problems VALUES (?, ?)",
                [source.number, "unrecognized file format (not JSON, JSON Lines or CloudTrail CSV)"],
            )
            continue
        attempts = [False, True] if source.reader == "jsonl" else [False]
        for line_by_line in attempts:
            read_sql = _read_file_sql(source, line_by_line=line_by_line)
            try:
                con.execute(f"INSERT INTO docs SELECT {source.number}, * FROM ({read_sql})")
                break
            except duckdb.Error as exc:
                if line_by_line or source.reader != "jsonl":
                    message = str(exc).strip().splitlines()[0][:300]
                    con.execute(
                        "INSERT INTO file_problems VALUES (?, ?)", [source.number, f"unreadable file: {message}"]
                    )


def _records_sql() -> str:
    """Unwrap containers into ``recs`` (file_no, position, rec, bad, fmt)."""
    container_case = " ".join(f"WHEN {c.detect} THEN '{c.name}'" for c in CONTAINERS)
    elements_case = " ".join(f"WHEN '{c.name}' THEN {c.records}" for c in CONTAINERS)
    format_case = " ".join(f"WHEN {f.detect} THEN '{f.name}'" for f in RECORD_FORMATS)
    return f"""
    CREATE OR REPLACE TEMP TABLE docs_kind AS
    SELECT file_no, doc_no,
        CASE WHEN doc IS NULL THEN 'invalid' {container_case} ELSE 'record' END AS container
    FROM docs;
    CREATE OR REPLACE TEMP TABLE container_files AS
    SELECT DISTINCT file_no FROM docs_kind WHERE container NOT IN ('record', 'invalid');
    CREATE OR REPLACE TEMP TABLE recs AS
    SELECT file_no, position, rec, bad,
        CASE WHEN rec IS NULL THEN NULL {format_case} ELSE 'unknown' END AS fmt
    FROM (
        SELECT d.file_no, d.doc_no AS position, d.doc AS rec, d.keys, d.bad
        FROM docs d ANTI JOIN container_files c ON c.file_no = d.file_no
        UNION ALL
        SELECT file_no, first_position + i - 1, rec, json_keys(rec), CASE WHEN i = 1 THEN bad END
        FROM (
            SELECT file_no, first_position, bad, unnest(elems) AS rec, generate_subscripts(elems, 1) AS i
            FROM (
                SELECT file_no, bad, elems,
                    sum(len(elems)) OVER (PARTITION BY file_no ORDER BY doc_no) - len(elems) AS first_position
                FROM (
                    SELECT d.file_no, d.doc_no, d.bad,
                        CASE k.container WHEN 'record' THEN [d.doc] WHEN 'invalid' THEN [NULL::JSON]
                            {elements_case} END AS elems
                    FROM docs d JOIN docs_kind k USING (file_no, doc_no) SEMI JOIN container_files c USING (file_no)
                )
            )
        )
    ) r(file_no, position, rec, keys, bad);
    """


def _staged_sql() -> str:
    selects = []
    for fmt in RECORD_FORMATS:
        mapped = ", ".join(f"{fmt.columns[column]} AS {column}" for column in MAPPED_COLUMNS if column != "event_id")
        selects.append(
            f"SELECT rec_row, file_no, position, '{fmt.cloud}' AS cloud, '{fmt.name}' AS source_format, {mapped}, "
            f"coalesce(nullif({fmt.columns['event_id']}, ''), md5(rec::VARCHAR)) AS event_id "
            f"FROM (SELECT rowid AS rec_row, file_no, position, rec, "
            f"json_transform(rec, {_literal(fmt.transform_spec)}) AS p FROM recs WHERE fmt = '{fmt.name}')"
        )
    union = "\nUNION ALL\n".join(selects)
    return f"""
    CREATE OR REPLACE TEMP TABLE staged AS
    SELECT m.*, m.cloud || ':' || m.event_id AS event_uid,
        CASE WHEN m.time IS NULL THEN 'no parsable event time'
             WHEN nullif(m.operation, '') IS NULL THEN 'no operation name' END AS problem
    FROM ({union}) m
    """


_QUARANTINE_SQL = f"""
CREATE OR REPLACE TEMP TABLE new_quarantine AS
SELECT f.name AS source_file, q.position AS source_position, q.reason, left(q.raw, {QUARANTINE_RAW_CHARS}) AS raw
FROM (
    SELECT file_no, position, 'not valid JSON' AS reason, bad AS raw FROM recs WHERE fmt IS NULL
    UNION ALL
    SELECT file_no, position,
        'unrecognized record (keys: ' || array_to_string(json_keys(rec)[1:8], ', ') || ')', rec::VARCHAR
    FROM recs WHERE fmt = 'unknown'
    UNION ALL
    SELECT s.file_no, s.position, s.problem || ' (' || s.source_format || ')', r.rec::VARCHAR
    FROM staged s JOIN recs r ON r.rowid = s.rec_row WHERE s.problem IS NOT NULL
    UNION ALL
    SELECT file_no, NULL, reason, NULL FROM file_problems
) q JOIN files f ON f.file_no = q.file_no;
INSERT INTO quarantine
SELECT * FROM new_quarantine n
WHERE NOT EXISTS (
    SELECT 1 FROM quarantine q
    WHERE q.source_file = n.source_file AND q.source_position IS NOT DISTINCT FROM n.source_position
      AND q.reason = n.reason
);
"""

_EVENT_SELECT = {
    "source_file": "f.name",
    "source_position": "s.position",
    "is_responder": f"coalesce(contains(s.user_agent, '{RESPONDER_AGENT}'), false)",
    "raw": "r.rec",
}

_INSERT_SQL = f"""
CREATE OR REPLACE TEMP TABLE keep AS
SELECT arg_min(s.rowid, (s.file_no, s.position)) AS keep_rowid
FROM staged s ANTI JOIN events e ON e.event_uid = s.event_uid
WHERE s.problem IS NULL
GROUP BY s.event_uid;
INSERT INTO events ({", ".join(EVENTS_COLUMNS)})
SELECT {", ".join(_EVENT_SELECT.get(column, f"s.{column}") for column in EVENTS_COLUMNS)}
FROM staged s JOIN files f ON f.file_no = s.file_no JOIN recs r ON r.rowid = s.rec_row
WHERE s.rowid IN (SELECT keep_rowid FROM keep);
"""


def _ingest_batch(con: duckdb.DuckDBPyConnection, batch: list[_SourceFile], stats: IngestStats) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE files (file_no INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO files VALUES (?, ?)", [[source.number, source.name] for source in batch])
    _stage_documents(con, batch)
    con.execute(_records_sql())
    con.execute(_staged_sql())
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_QUARANTINE_SQL)
        con.execute(_INSERT_SQL)
        quarantined = _scalar(con, "SELECT count(*) FROM new_quarantine")
        valid = _scalar(con, "SELECT count(*) FROM staged WHERE problem IS NULL")
        rows = con.execute(
            "SELECT source_format, count(*) FROM staged WHERE rowid IN (SELECT keep_rowid FROM keep) GROUP BY 1"
        ).fetchall()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    inserted = 0
    for name, count in rows:
        stats.per_format[name] = stats.per_format.get(name, 0) + int(count)
        inserted += int(count)
    stats.ingested += inserted
    stats.duplicates += valid - inserted
    stats.quarantined += quarantined


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0
