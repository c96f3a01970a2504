"""Read flow-log files in batches, map each format's records, quarantine the bad ones, drop exact duplicates."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cloudir.safepath import files_under
from cloudir.timeline.db import sql_identifier, sql_literal
from cloudir.timeline.flows import aws, azure, gcp, inventory
from cloudir.timeline.flows.schema import FLOWS_COLUMNS, FLOWS_DDL

SNIFF_BYTES = 1 << 16
BATCH_BYTES = 192 << 20
FILES_PER_READ = 256
MAX_OBJECT_BYTES = 256 << 20
GZIP_RATIO = 10
SERIES_REQUEST = "request.json"
"""Written by the collector beside CloudWatch Logs pages: its ``logFormat`` names the message fields."""
_CLOUDWATCH_PAGE = re.compile(r'"logStreamName"\s*:.*"message"\s*:\s*"(?!\{)', re.DOTALL)
_INVENTORY = re.compile(r'\{\s*"(azure|gcp)Inventory"\s*:')
"""The collectors' inventory files: their marker is the first key (keys are written sorted)."""
_DEFAULT_RECORD = re.compile(r"^\d+ (\d{12}|-|unknown) (eni-[0-9a-f]+|-) ")


@dataclass
class FlowStats:
    """What one flow ingest did. Input records = ingested + duplicates + quarantined."""

    files: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    per_format: dict[str, int] = field(default_factory=dict)
    instances: int = 0  # inventory rows (instances owning the interfaces), not flow records

    def as_dict(self) -> dict[str, object]:
        """Plain-dict form for custody details and JSON output."""
        return {
            "files": self.files,
            "records": self.ingested + self.duplicates + self.quarantined,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "per_format": dict(sorted(self.per_format.items())),
            "instances": self.instances,
        }


@dataclass(frozen=True)
class _FlowFile:
    number: int
    path: Path
    name: str
    kind: str  # aws_text | aws_cloudwatch | aws_insights | aws_parquet | azure | gcp | {aws,azure,gcp}_instances
    compression: str
    fields: tuple[str, ...]  # AWS: the record's field names
    header: bool  # AWS text: the first line names the fields
    size: int  # input bytes (gzip: an estimate of the uncompressed size)

    def largest(self) -> int:
        """A bound for one JSON document: read buffers are sized by it, so small files get small buffers."""
        return min(MAX_OBJECT_BYTES, max(1 << 20, 2 * self.size))


def _head(path: Path) -> tuple[bytes, str]:
    with path.open("rb") as handle:
        magic = handle.read(4)
    compression = "gzip" if magic[:2] == b"\x1f\x8b" else "none"
    if magic == b"PAR1":
        return magic, "parquet"
    try:
        with gzip.open(path, "rb") if compression == "gzip" else path.open("rb") as handle:
            return handle.read(SNIFF_BYTES), compression
    except (OSError, EOFError, zlib.error):
        return b"", compression


def _parquet_flow_columns(path: Path) -> bool:
    """A Parquet file is a VPC Flow Logs delivery when it has the address fields (or cannot be read: reported
    there); other Parquet (Amazon Security Lake's OCSF, a timeline export) holds events."""
    try:
        with duckdb.connect() as con:
            rows = con.execute(f"SELECT name FROM parquet_schema({sql_literal(str(path))})").fetchall()
    except duckdb.Error:
        return True
    return {name.replace("_", "").lower() for (name,) in rows} >= aws.HEADER_FIELDS


def detect_flow_log(path: Path) -> str | None:
    """The flow-log kind of a file from its first bytes, or None when it is not a flow log."""
    if path.name == SERIES_REQUEST:
        return None
    head, compression = _head(path)
    if compression == "parquet":
        return "aws_parquet" if _parquet_flow_columns(path) else None
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if text.startswith(("{", "[")):
        collected = _INVENTORY.match(text)  # first: a tag or label value may spell a flow-log marker
        if collected:
            return f"{collected.group(1)}_instances"
        if any(marker in text for marker in azure.DETECT_MARKERS):
            return "azure"
        if any(marker in text for marker in gcp.DETECT_MARKERS):
            return "gcp"
        if inventory.DETECT_MARKER in text:
            return "aws_instances"
        if '"@message"' in text and '"results"' in text and (path.parent / SERIES_REQUEST).is_file():
            return "aws_insights"  # a Logs Insights GetQueryResults body beside its request
        if _CLOUDWATCH_PAGE.search(text) and (
            (path.parent / SERIES_REQUEST).is_file() or _DEFAULT_RECORD.search(_first_message(text))
        ):
            return "aws_cloudwatch"
        return None
    first_line = text.partition("\n")[0].strip()
    if aws.is_header(first_line) or _DEFAULT_RECORD.match(first_line):
        return "aws_text"
    return None


def _first_message(text: str) -> str:
    match = re.search(r'"message"\s*:\s*"([^"]*)"', text)
    return match.group(1) if match else ""


def _fields(path: Path, kind: str, head: str) -> tuple[tuple[str, ...], bool]:
    """The AWS field names of a file and whether its first line is a header."""
    first_line = head.partition("\n")[0].strip()
    if kind == "aws_text" and aws.is_header(first_line):
        return tuple(aws.parse_format(first_line)), True
    request = path.parent / SERIES_REQUEST
    if request.is_file():
        try:
            log_format = json.loads(request.read_text(encoding="utf-8")).get("logFormat")
        except (ValueError, AttributeError):
            log_format = None
        if isinstance(log_format, str) and log_format.strip():
            return tuple(aws.parse_format(log_format)), False
    return aws.DEFAULT_FORMAT, False


def discover(paths: Sequence[Path], source_root: Path | None) -> list[_FlowFile]:
    """The flow-log files among ``paths`` (files and folders, recursively; hidden names skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(files_under(path)[0])  # the links it does not follow are reported by the events ingest
        elif path.is_file():
            found.append(path)
    files: list[_FlowFile] = []
    for path in dict.fromkeys(found):
        kind = detect_flow_log(path)
        if kind is None:
            continue
        head, compression = _head(path)
        fields, header = _fields(path, kind, head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip())
        name = path.resolve().relative_to(source_root.resolve()).as_posix() if source_root else str(path)
        size = path.stat().st_size * (GZIP_RATIO if compression == "gzip" else 1)
        files.append(_FlowFile(len(files), path, name, kind, compression, fields, header, size))
    return files


def ingest_flows(
    con: duckdb.DuckDBPyConnection, paths: Sequence[Path], source_root: Path | None, stats: FlowStats
) -> None:
    """Ingest every flow-log file among ``paths`` into ``flows`` (created if missing), batch by batch."""
    con.execute(FLOWS_DDL)
    con.execute(inventory.INSTANCES_DDL)
    files = discover(paths, source_root)
    stats.files += len(files)
    for batch in _batches(files):
        _ingest_batch(con, batch, stats)


def _batches(files: list[_FlowFile]) -> Iterator[list[_FlowFile]]:
    batch: list[_FlowFile] = []
    weight = 0
    for source in files:
        batch.append(source)
        weight += source.size
        if weight >= BATCH_BYTES:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


def _paths(files: Sequence[_FlowFile]) -> str:
    return "[" + ", ".join(sql_literal(str(f.path)) for f in files) + "]"


def _numbers(files: Sequence[_FlowFile]) -> str:
    return "(VALUES " + ", ".join(f"({f.number}, {sql_literal(str(f.path))})" for f in files) + ") n(file_no, path)"


def _chunks(files: list[_FlowFile]) -> Iterator[list[_FlowFile]]:
    for start in range(0, len(files), FILES_PER_READ):
        yield files[start : start + FILES_PER_READ]


_STAGED = ", ".join(["file_no", "position", *FLOWS_COLUMNS, "raw", "problem", "flow_uid"])


def _insert(con: duckdb.DuckDBPyConnection, mapped: dict[str, str], source: str, problem: str) -> None:
    """Insert the mapped rows of ``source`` into ``flow_staged``; ``problem`` names a structural defect."""
    select = ", ".join(f"{mapped[column]} AS {column}" for column in FLOWS_COLUMNS)
    con.execute(
        f"INSERT INTO flow_staged ({_STAGED}) SELECT *, {_UID} AS flow_uid FROM (SELECT * EXCLUDE (problem), "
        f"{_PROBLEM} AS problem FROM (SELECT file_no, position, {select}, raw, {problem} AS problem FROM ({source})))"
    )


def _stage_lines(con: duckdb.DuckDBPyConnection, files: list[_FlowFile]) -> None:
    """AWS text files, CloudWatch Logs pages and Logs Insights results: one row per line or message, split on
    spaces (an Insights row's ``@message`` is the record, as FilterLogEvents' ``message`` is)."""
    con.execute("CREATE OR REPLACE TEMP TABLE flow_lines (file_no INTEGER, line VARCHAR)")
    for source in files:  # one statement per file keeps rowid in file order
        if source.kind == "aws_text":
            read = (
                f"SELECT {source.number}, line FROM read_csv({sql_literal(str(source.path))}, "
                "columns={'line': 'VARCHAR'}, delim=chr(31), quote='', escape='', header=false, "
                f"auto_detect=false, compression='{source.compression}', max_line_size={1 << 20}) "
                "WHERE trim(line) <> ''"
            )
        elif source.kind == "aws_insights":
            read = (
                f"SELECT {source.number}, list_filter(r, lambda f: f.field = '@message')[1].value "
                'FROM (SELECT unnest(from_json(json -> \'results\', \'[[{"field":"VARCHAR","value":"VARCHAR"}]]\')) '
                f"AS r FROM read_json_objects({sql_literal(str(source.path))}, format='auto', "
                f"compression='{source.compression}', maximum_object_size={source.largest()}))"
            )
        else:
            read = (
                f"SELECT {source.number}, unnest(json_extract_string(json, '$.events[*].message')) "
                f"FROM read_json_objects({sql_literal(str(source.path))}, format='auto', "
                f"compression='{source.compression}', maximum_object_size={source.largest()})"
            )
        if _try(con, f"INSERT INTO flow_lines {read}", source):
            continue
        offset = 1 if source.header else 0
        con.execute(
            f"DELETE FROM flow_lines WHERE file_no = {source.number} AND rowid = "
            f"(SELECT min(rowid) FROM flow_lines WHERE file_no = {source.number}) AND {offset} = 1"
        )
    by_fields: dict[tuple[str, ...], list[int]] = {}
    for source in files:
        by_fields.setdefault(source.fields, []).append(source.number)
    for fields, numbers in by_fields.items():
        mapped = aws.columns({name: f"parts[{i + 1}]" for i, name in enumerate(fields)})
        source_sql = (
            "SELECT file_no, rowid - min(rowid) OVER (PARTITION BY file_no) AS position, line AS raw, "
            f"string_split(trim(line), ' ') AS parts FROM flow_lines WHERE file_no IN ({', '.join(map(str, numbers))})"
        )
        problem = (
            f"CASE WHEN len(parts) <> {len(fields)} THEN 'expected {len(fields)} fields, found ' || len(parts) END"
        )
        _insert(con, mapped, source_sql, problem)
    con.execute("DROP TABLE flow_lines")


def _stage_parquet(con: duckdb.DuckDBPyConnection, source: _FlowFile) -> None:
    path = sql_literal(str(source.path))
    try:
        names = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet({path})").fetchall()]
    except duckdb.Error as exc:
        _file_problem(con, source, exc)
        return
    present = {name.replace("_", "-"): name for name in names}
    mapped = aws.columns({name: f"CAST({sql_identifier(column)} AS VARCHAR)" for name, column in present.items()})
    quoted = ", ".join(f"CAST({sql_identifier(name)} AS VARCHAR)" for name in names if name != "file_row_number")
    source_sql = (
        f"SELECT {source.number} AS file_no, file_row_number AS position, concat_ws(' ', {quoted}) AS raw, * "
        f"FROM read_parquet({path}, file_row_number=true)"
    )
    try:
        _insert(con, mapped, source_sql, "NULL")
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        _file_problem(con, source, exc)


def _stage_documents(con: duckdb.DuckDBPyConnection, files: list[_FlowFile]) -> None:
    """Azure and GCP JSON files: documents first (in file order), then their tuples or entries."""
    con.execute("CREATE OR REPLACE TEMP TABLE flow_docs (file_no INTEGER, doc JSON)")
    for compression in ("none", "gzip"):
        group = [f for f in files if f.compression == compression]
        for chunk in _chunks(group):
            read = (
                f"SELECT n.file_no, d.json FROM read_json_objects({_paths(chunk)}, format='auto', "
                f"compression='{compression}', maximum_object_size={max(f.largest() for f in chunk)}, filename=true) d "
                f"JOIN {_numbers(chunk)} ON n.path = d.filename ORDER BY n.file_no"
            )
            try:
                con.execute(f"INSERT INTO flow_docs {read}")
            except duckdb.OutOfMemoryException:
                raise
            except duckdb.Error:
                for source in chunk:  # find the unreadable one(s)
                    one = read.replace(_paths(chunk), _paths([source])).replace(_numbers(chunk), _numbers([source]))
                    _try(con, f"INSERT INTO flow_docs {one}", source)
    documents = "SELECT file_no, rowid AS doc_row, doc FROM flow_docs"
    with_tuples = azure.tuples_sql(documents)
    _insert(
        con,
        azure.columns(),
        f"SELECT file_no, position, fmt, network, interface, tuple AS raw, t FROM ({with_tuples}) "
        f"WHERE file_no IN (SELECT file_no FROM flow_kinds WHERE kind = 'azure')",
        azure.problem(),
    )
    _insert(
        con,
        gcp.columns(),
        f"SELECT * FROM ({gcp.entries_sql(documents)}) "
        f"WHERE file_no IN (SELECT file_no FROM flow_kinds WHERE kind = 'gcp')",
        gcp.problem(),
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE flow_instances AS SELECT * FROM ("
        + inventory.load_sql(
            "SELECT file_no, doc FROM flow_docs WHERE file_no IN (SELECT file_no FROM flow_kinds "
            "WHERE kind = 'aws_instances')"
        )
        + ") UNION ALL BY NAME SELECT * FROM ("
        + inventory.load_azure_sql(
            "SELECT file_no, doc FROM flow_docs WHERE file_no IN (SELECT file_no FROM flow_kinds "
            "WHERE kind = 'azure_instances')"
        )
        + ") UNION ALL BY NAME SELECT * FROM ("
        + inventory.load_gcp_sql(
            "SELECT file_no, doc FROM flow_docs WHERE file_no IN (SELECT file_no FROM flow_kinds "
            "WHERE kind = 'gcp_instances')"
        )
        + ")"
    )
    con.execute("DROP TABLE flow_docs")


def _file_problem(con: duckdb.DuckDBPyConnection, source: _FlowFile, exc: Exception) -> None:
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    con.execute("INSERT INTO flow_file_problems VALUES (?, ?)", [source.number, f"unreadable flow-log file: {reason}"])


def _try(con: duckdb.DuckDBPyConnection, sql: str, source: _FlowFile) -> bool:
    """Run ``sql``; on a DuckDB error record the file as unreadable and return True."""
    try:
        con.execute(sql)
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        _file_problem(con, source, exc)
        return True
    return False


_PROBLEM = (
    "coalesce(problem, CASE WHEN time IS NULL THEN 'no parsable start time' "
    "WHEN coalesce(log_status, 'OK') = 'OK' AND (src_addr IS NULL OR dst_addr IS NULL) "
    "THEN 'no source or destination address' END)"
)
_UID = "md5_number(concat_ws('|', source_format, interface, network, raw))"
"""Exact duplicates: the same record (line, tuple of the same interface, log entry) of the same format."""

_FINISH_SQL = f"""
CREATE OR REPLACE TEMP TABLE flow_new_quarantine AS
SELECT f.name AS source_file, s.position AS source_position, s.problem || ' (' || coalesce(s.source_format, '?')
       || ')' AS reason, s.raw
FROM flow_staged s JOIN flow_kinds f USING (file_no) WHERE s.problem IS NOT NULL
UNION ALL
SELECT f.name, NULL, p.reason, NULL FROM flow_file_problems p JOIN flow_kinds f USING (file_no);
INSERT INTO quarantine (source_file, source_position, reason, raw, target_table)
SELECT n.*, 'flows' FROM flow_new_quarantine n
WHERE NOT EXISTS (
    SELECT 1 FROM quarantine q
    WHERE q.source_file = n.source_file AND q.source_position IS NOT DISTINCT FROM n.source_position
      AND q.reason = n.reason
);
CREATE OR REPLACE TEMP TABLE flow_keep AS
SELECT s.*, f.name AS source_file FROM flow_staged s JOIN flow_kinds f USING (file_no)
WHERE s.problem IS NULL AND s.flow_uid NOT IN (SELECT flow_uid FROM flows)
QUALIFY row_number() OVER (PARTITION BY s.flow_uid ORDER BY s.file_no, s.position) = 1;
INSERT INTO flows SELECT flow_uid, {", ".join(FLOWS_COLUMNS)}, source_file, position, raw FROM flow_keep;
DELETE FROM instances WHERE (cloud, instance) IN (SELECT (cloud, instance) FROM flow_instances);
INSERT INTO instances BY NAME
SELECT i.* EXCLUDE (file_no), k.name AS source_file FROM flow_instances i JOIN flow_kinds k USING (file_no);
"""


def _ingest_batch(con: duckdb.DuckDBPyConnection, batch: list[_FlowFile], stats: FlowStats) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE flow_kinds (file_no INTEGER, name VARCHAR, kind VARCHAR)")
    con.executemany("INSERT INTO flow_kinds VALUES (?, ?, ?)", [[f.number, f.name, f.kind] for f in batch])
    con.execute("CREATE OR REPLACE TEMP TABLE flow_file_problems (file_no INTEGER, reason VARCHAR)")
    columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in _staged_types(con))
    con.execute(f"CREATE OR REPLACE TEMP TABLE flow_staged AS SELECT {columns} LIMIT 0")
    lines = [f for f in batch if f.kind in {"aws_text", "aws_cloudwatch", "aws_insights"}]
    if lines:
        _stage_lines(con, lines)
    for source in batch:
        if source.kind == "aws_parquet":
            _stage_parquet(con, source)
    documents = [f for f in batch if f.kind in {"azure", "gcp", "aws_instances", "azure_instances", "gcp_instances"}]
    if documents:
        _stage_documents(con, documents)
    con.execute(
        "CREATE TEMP TABLE IF NOT EXISTS flow_instances AS "
        "SELECT * EXCLUDE (source_file), 0 AS file_no FROM instances LIMIT 0"
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_FINISH_SQL)
        stats.instances += _scalar(con, "SELECT count(*) FROM flow_instances")
        quarantined = _scalar(con, "SELECT count(*) FROM flow_new_quarantine")
        valid = _scalar(con, "SELECT count(*) FROM flow_staged WHERE problem IS NULL")
        rows = con.execute("SELECT source_format, count(*) FROM flow_keep GROUP BY 1").fetchall()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute(
        "DROP TABLE flow_staged; DROP TABLE flow_keep; DROP TABLE flow_new_quarantine; DROP TABLE flow_instances"
    )
    inserted = 0
    for name, count in rows:
        stats.per_format[name] = stats.per_format.get(name, 0) + int(count)
        inserted += int(count)
    stats.ingested += inserted
    stats.duplicates += valid - inserted
    stats.quarantined += quarantined


def _staged_types(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """Column names and types of ``flow_staged``: the flows columns plus file, position, raw and problem."""
    types = dict(
        con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'flows'").fetchall()
    )
    return [
        ("file_no", "INTEGER"),
        ("position", "BIGINT"),
        *((column, types[column]) for column in FLOWS_COLUMNS),
        ("raw", "VARCHAR"),
        ("problem", "VARCHAR"),
        ("flow_uid", "UHUGEINT"),
    ]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0
