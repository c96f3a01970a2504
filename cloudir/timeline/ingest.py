"""Normalize control-plane logs into the timeline, in DuckDB SQL from file to ``events``.

Per batch of files, one streaming statement per file (or per group of one-document files) reads records
(``read_json_objects`` / line-wise ``read_csv`` / ``read_csv``), classifies each by its top-level keys and
maps it with its format's SQL into ``staged``; containers are then unwrapped and mapped the same way. One
transaction quarantines what cannot be mapped, drops duplicates (same cloud and event id) and inserts the
rest. Python only sniffs each file's first bytes to pick a reader.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cloudir.errors import CloudirError
from cloudir.timeline.db import MEMORY_LIMIT, connect_for_ingest
from cloudir.timeline.formats import CONTAINERS, MAPPED_COLUMNS, RECORD_FORMATS
from cloudir.timeline.schema import EVENTS_COLUMNS, EVENTS_INDEXES

if TYPE_CHECKING:
    from cloudir.case import Case

TIMELINE_FILE = "timeline.duckdb"
RESPONDER_AGENT = "cloudir/"
SNIFF_BYTES = 1 << 16
BATCH_BYTES = 192 << 20  # input per transaction: over a row group of records (written directly, not via the WAL)
MAX_OBJECT_BYTES = 256 << 20  # largest JSON document (one file of records)
MAX_LINE_BYTES = 16 << 20  # largest JSON Lines line
GZIP_RATIO = 10
FILES_PER_READ = 256  # JSON document files read by one parallel read_json_objects
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
    size: int  # uncompressed bytes (estimated for multi-member gzip)

    def largest(self, cap: int) -> int:
        """A bound for one JSON value or line: JSON buffers are sized by it, so small files get small buffers."""
        return min(cap, max(1 << 20, 2 * self.size))


def ingest_paths(
    db_path: Path,
    paths: Sequence[Path],
    *,
    responder_request_ids: Iterable[str] = (),
    source_root: Path | None = None,
    memory_limit: str = MEMORY_LIMIT,
) -> IngestStats:
    """Ingest log files and folders (recursively; plain or gzip) into the timeline at ``db_path``.

    Any number and size of files: they are read in batches of about ``BATCH_BYTES`` of input, one transaction
    each, and DuckDB spills to ``<db>.tmp/`` what does not fit ``memory_limit``.
    ``source_root``: record source files relative to this folder (a case root) instead of as given.
    """
    files, skipped = _discover(paths, source_root)
    stats = IngestStats(files=len(files), skipped=skipped)
    con = connect_for_ingest(db_path, memory_limit=memory_limit)
    try:
        _prepare(con, responder_request_ids)
        for batch in _batches(files):
            try:
                _ingest_batch(con, batch, stats)
            except duckdb.OutOfMemoryException as exc:
                raise CloudirError(
                    f"timeline ingest ran out of memory (memory_limit {memory_limit}) on {batch[0].name} "
                    f"and {len(batch) - 1} more files: {str(exc).strip().splitlines()[0]}"
                ) from None
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
            call[key]
            for record in (read_records(custody) if custody.is_file() else [])
            for call in record.get("api_calls", [])
            for key in ("request_id", "client_request_id")
            if call.get(key)
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
        files.append(_SourceFile(len(files), path, name, reader, compression, _uncompressed_size(path, compression)))
    return files, len(unique) - len(files)


def _uncompressed_size(path: Path, compression: str) -> int:
    """The file's size, for gzip the size its trailer records (else an estimate)."""
    size = path.stat().st_size
    if compression != "gzip":
        return size
    with path.open("rb") as handle:
        handle.seek(max(size - 4, 0))
        recorded = int.from_bytes(handle.read(4), "little")  # of the last gzip member, modulo 4 GiB
    return recorded if recorded >= size else size * GZIP_RATIO


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
        weight += source.size
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


def _read_file_sql(source: _SourceFile, *, line_by_line: bool = False, unbounded: bool = False) -> str:
    """SELECT file_no, position, rec (JSON or NULL), bad (text of an invalid record) for one file, in file order.

    ``position`` is NULL: inserted in file order (``preserve_insertion_order``), a record's position is its
    row id in ``staged`` minus the file's first. JSON Lines are read with ``read_json_objects``; a file with a
    malformed line is re-read line by line so the bad lines can be quarantined. Blank lines are not records.
    """
    path, compression = _literal(str(source.path)), _literal(source.compression)
    if source.reader == "csv":
        return (
            f"SELECT {source.number} AS file_no, NULL::BIGINT AS position, to_json(t) AS rec, NULL::VARCHAR AS bad "
            f"FROM read_csv({path}, header=true, all_varchar=true, normalize_names=true, compression={compression}) t"
        )
    if line_by_line:
        return (
            f"SELECT {source.number} AS file_no, NULL::BIGINT AS position, "
            "CASE WHEN json_valid(line) THEN line::JSON END AS rec, "
            "CASE WHEN NOT json_valid(line) THEN line END AS bad "
            f"FROM read_csv({path}, columns={{'line': 'VARCHAR'}}, delim=chr(31), quote='', escape='', "
            f"header=false, auto_detect=false, compression={compression}, max_line_size={MAX_LINE_BYTES}, "
            f"buffer_size={MAX_LINE_BYTES * 2}) WHERE trim(line) <> ''"
        )
    layout, cap = (
        ("unstructured", MAX_OBJECT_BYTES) if source.reader == "json" else ("newline_delimited", MAX_LINE_BYTES)
    )
    largest = cap if unbounded else source.largest(cap)
    return (
        f"SELECT {source.number} AS file_no, NULL::BIGINT AS position, json AS rec, NULL::VARCHAR AS bad "
        f"FROM read_json_objects({path}, format='{layout}', compression={compression}, maximum_object_size={largest})"
    )


def _read_documents_sql(sources: list[_SourceFile], compression: str) -> str:
    """Like :func:`_read_file_sql` for many JSON document files at once (one parallel ``read_json_objects``)."""
    paths = "[" + ", ".join(_literal(str(source.path)) for source in sources) + "]"
    numbers = ", ".join(f"({source.number}, {_literal(str(source.path))})" for source in sources)
    return (
        "SELECT n.file_no, NULL::BIGINT AS position, d.json AS rec, NULL::VARCHAR AS bad "
        f"FROM read_json_objects({paths}, format='unstructured', compression='{compression}', "
        f"maximum_object_size={max(source.largest(MAX_OBJECT_BYTES) for source in sources)}, filename=true) d "
        f"JOIN (VALUES {numbers}) n(file_no, path) ON n.path = d.filename"
    )


_STRUCT_REF = re.compile(r"(?<![\w.\"])p\.")


def _per_format(expressions: dict[str, str], column: str) -> str:
    branches = " ".join(f"WHEN '{name}' THEN {expression}" for name, expression in expressions.items())
    return f"CASE fmt {branches} END AS {column}"


def _staged_select(source: str, *, containers: bool) -> str:
    """Classify and map the records of ``source`` (file_no, position, rec, bad) in one streaming projection.

    ``fmt`` is the container name (``containers``), the record format, ``unknown``, or NULL (not JSON). Each
    record is parsed by ``json_keys`` (classification) and once more by its own format's ``json_transform``.
    """
    container_case = " ".join(f"WHEN {c.detect} THEN '{c.name}'" for c in CONTAINERS) if containers else ""
    format_case = " ".join(f"WHEN {f.detect} THEN '{f.name}'" for f in RECORD_FORMATS)
    structs = ", ".join(
        f"CASE WHEN fmt = '{f.name}' THEN json_transform(rec, {_literal(f.transform_spec)}) END AS p_{f.name}"
        for f in RECORD_FORMATS
    )
    columns = {"cloud": {f.name: f"'{f.cloud}'" for f in RECORD_FORMATS}}
    for column in MAPPED_COLUMNS:
        columns[column] = {f.name: _STRUCT_REF.sub(f"p_{f.name}.", f.columns[column]) for f in RECORD_FORMATS}
    columns["event_id"] = {
        name: f"coalesce(nullif({expression}, ''), md5(rec::VARCHAR))"
        for name, expression in columns["event_id"].items()
    }
    mapped = ", ".join(_per_format(expressions, column) for column, expressions in columns.items())
    return f"""
    SELECT *, cloud || ':' || event_id AS event_uid,
        CASE WHEN cloud IS NULL THEN NULL WHEN time IS NULL THEN 'no parsable event time'
             WHEN nullif(operation, '') IS NULL THEN 'no operation name' END AS problem
    FROM (
        SELECT file_no, position, rec, bad, fmt, {mapped}
        FROM (
            SELECT file_no, position, rec, bad, fmt, {structs}
            FROM (
                SELECT file_no, position, rec, bad,
                    CASE WHEN rec IS NULL THEN NULL {container_case} {format_case} ELSE 'unknown' END AS fmt
                FROM (SELECT file_no, position, rec, rec AS doc, bad, json_keys(rec) AS keys FROM ({source}))
            )
        )
    )
    """


def _unwrap_sql(last_document_row: int) -> str:
    """Replace the documents of files with containers in ``staged`` by their records, numbered in file order.

    Only files with several documents (JSON Lines of pages) need the running count of records per document; it
    is computed from list lengths alone so no window holds the records.
    """
    elements_case = " ".join(f"WHEN '{c.name}' THEN {c.records}" for c in CONTAINERS)
    documents = f"""
        SELECT file_no, rowid AS doc_row, bad,
            CASE WHEN fmt IS NULL THEN [NULL::JSON] ELSE CASE fmt {elements_case} ELSE [doc] END END AS elems
        FROM (SELECT *, rowid, rec AS doc FROM staged WHERE rowid <= {last_document_row})
        SEMI JOIN container_files USING (file_no)"""
    records = f"""
        SELECT file_no, coalesce(o.first_position, 0) + i - 1 AS position, rec, CASE WHEN i = 1 THEN bad END AS bad
        FROM (SELECT file_no, doc_row, bad, unnest(elems) AS rec, generate_subscripts(elems, 1) AS i FROM ({documents}))
        LEFT JOIN offsets o USING (doc_row)"""
    return f"""
    CREATE OR REPLACE TEMP TABLE offsets AS
    SELECT doc_row, sum(n) OVER (PARTITION BY file_no ORDER BY doc_row) - n AS first_position
    FROM (SELECT file_no, doc_row, len(elems) AS n FROM ({documents}))
    WHERE file_no IN (
        SELECT file_no FROM staged SEMI JOIN container_files USING (file_no) GROUP BY 1 HAVING count(*) > 1
    );
    INSERT INTO staged {_staged_select(records, containers=False)};
    DELETE FROM staged WHERE rowid <= {last_document_row} AND file_no IN (SELECT file_no FROM container_files);
    DROP TABLE offsets;
    """


def _stage_file(con: duckdb.DuckDBPyConnection, source: _SourceFile) -> None:
    """Read one file into ``staged``: small buffers first, then the largest, then JSON Lines line by line."""
    if source.reader is None:
        con.execute(
            "INSERT INTO file_problems VALUES (?, ?)",
            [source.number, "unrecognized file format (not JSON, JSON Lines or CloudTrail CSV)"],
        )
        return
    problem = _try_stage(con, _read_file_sql(source))
    if problem and "maximum_object_size" in problem:
        problem = _try_stage(con, _read_file_sql(source, unbounded=True))
    if problem and source.reader == "jsonl":
        problem = _try_stage(con, _read_file_sql(source, line_by_line=True))
    if problem:
        con.execute("INSERT INTO file_problems VALUES (?, ?)", [source.number, f"unreadable file: {problem}"])


def _try_stage(con: duckdb.DuckDBPyConnection, read_sql: str) -> str | None:
    """Map and insert what ``read_sql`` reads into ``staged``; the error's first line if DuckDB cannot read it."""
    try:
        con.execute(f"INSERT INTO staged {_staged_select(read_sql, containers=True)}")
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        return str(exc).strip().splitlines()[0][:300]
    return None


def _stage(con: duckdb.DuckDBPyConnection, batch: list[_SourceFile]) -> None:
    """Fill ``staged`` (one row per record, mapped) and ``file_problems`` for a batch of files."""
    empty = "SELECT NULL::INTEGER AS file_no, NULL::BIGINT AS position, NULL::JSON AS rec, NULL::VARCHAR AS bad"
    con.execute(f"CREATE OR REPLACE TEMP TABLE staged AS {_staged_select(empty, containers=True)} LIMIT 0")
    con.execute("CREATE OR REPLACE TEMP TABLE file_problems (file_no INTEGER, reason VARCHAR)")
    single = [source for source in batch if source.reader != "json"]
    for compression in ("none", "gzip"):
        documents = [source for source in batch if source.reader == "json" and source.compression == compression]
        for start in range(0, len(documents), FILES_PER_READ):
            chunk = documents[start : start + FILES_PER_READ]
            if len(chunk) == 1 or _try_stage(con, _read_documents_sql(chunk, compression)):
                single.extend(chunk)  # one of them is not readable: read each on its own
    for source in sorted(single, key=lambda s: s.number):
        _stage_file(con, source)
    container_names = ", ".join(f"'{c.name}'" for c in CONTAINERS)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE container_files AS "
        f"SELECT DISTINCT file_no FROM staged WHERE fmt IN ({container_names})"
    )
    if _scalar(con, "SELECT count(*) FROM container_files"):
        con.execute(_unwrap_sql(_scalar(con, "SELECT max(rowid) FROM staged")))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE files AS SELECT f.*, r.first_row FROM files f LEFT JOIN ("
        "SELECT file_no, min(rowid) AS first_row FROM staged WHERE position IS NULL GROUP BY file_no) r USING (file_no)"
    )


# A record's position: set when unwrapped from a container, else its row id minus its file's first.
_POSITION = "coalesce(s.position, s.row_id - f.first_row)"

_QUARANTINE_SQL = f"""
CREATE OR REPLACE TEMP TABLE new_quarantine AS
SELECT f.name AS source_file, {_POSITION} AS source_position, s.reason, left(s.raw, {QUARANTINE_RAW_CHARS}) AS raw
FROM (
    SELECT file_no, position, rowid AS row_id, 'not valid JSON' AS reason, bad AS raw FROM staged WHERE fmt IS NULL
    UNION ALL
    SELECT file_no, position, rowid,
        'unrecognized record (keys: ' || array_to_string(json_keys(rec)[1:8], ', ') || ')', rec::VARCHAR
    FROM staged WHERE fmt = 'unknown'
    UNION ALL
    SELECT file_no, position, rowid, problem || ' (' || fmt || ')', rec::VARCHAR FROM staged WHERE problem IS NOT NULL
    UNION ALL
    SELECT file_no, NULL, NULL, reason, NULL FROM file_problems
) s JOIN files f ON f.file_no = s.file_no;
INSERT INTO quarantine
SELECT * FROM new_quarantine n
WHERE NOT EXISTS (
    SELECT 1 FROM quarantine q
    WHERE q.source_file = n.source_file AND q.source_position IS NOT DISTINCT FROM n.source_position
      AND q.reason = n.reason
);
"""

_EVENT_SELECT = {
    "source_format": "s.fmt",
    "source_file": "f.name",
    "source_position": _POSITION,
    "is_responder": f"coalesce(contains(s.user_agent, '{RESPONDER_AGENT}'), false)",
    "raw": "s.rec",
}

# The first record (by file, then position or row id: the same order) of each new event id.
_INSERT_SQL = f"""
CREATE OR REPLACE TEMP TABLE keep AS
SELECT arg_min(s.rowid, (s.file_no, coalesce(s.position, s.rowid))) AS keep_rowid,
    arg_min(s.fmt, (s.file_no, coalesce(s.position, s.rowid))) AS fmt
FROM staged s ANTI JOIN events e ON e.event_uid = s.event_uid
WHERE s.cloud IS NOT NULL AND s.problem IS NULL
GROUP BY s.event_uid;
INSERT INTO events ({", ".join(EVENTS_COLUMNS)})
SELECT {", ".join(_EVENT_SELECT.get(column, f"s.{column}") for column in EVENTS_COLUMNS)}
FROM (SELECT *, rowid AS row_id FROM staged) s JOIN files f ON f.file_no = s.file_no
WHERE s.row_id IN (SELECT keep_rowid FROM keep);
"""


def _ingest_batch(con: duckdb.DuckDBPyConnection, batch: list[_SourceFile], stats: IngestStats) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE files (file_no INTEGER, name VARCHAR)")
    con.executemany("INSERT INTO files VALUES (?, ?)", [[source.number, source.name] for source in batch])
    _stage(con, batch)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_QUARANTINE_SQL)
        con.execute(_INSERT_SQL)
        quarantined = _scalar(con, "SELECT count(*) FROM new_quarantine")
        valid = _scalar(con, "SELECT count(*) FROM staged WHERE cloud IS NOT NULL AND problem IS NULL")
        rows = con.execute("SELECT fmt, count(*) FROM keep GROUP BY 1").fetchall()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("DROP TABLE staged; DROP TABLE keep")
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
