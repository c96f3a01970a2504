"""Normalize control-plane logs into the timeline, in DuckDB SQL from file to ``events``, accounting for every record.

Per batch of files, one streaming statement per file (or per group of one-document files) reads documents
(``read_json`` of JSON values / ``read_csv``), unwraps containers into records, classifies each record by its
top-level keys and maps it with its format's SQL into ``staged``. Files DuckDB cannot read whole (invalid
UTF-8, truncated gzip, oversized lines, malformed JSON) and JSON documents too large to hold are first
rewritten record by record by :mod:`cloudir.timeline.reader`. One transaction per batch quarantines what
cannot be mapped, drops exact duplicates (same cloud, event id and content), flags id collisions, inserts
the rest and writes one ``ingest_files`` row per file.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cloudir.case import TIMELINE_DB
from cloudir.errors import CloudirError
from cloudir.progress import ProgressCallback
from cloudir.safepath import files_under
from cloudir.timeline import reader
from cloudir.timeline.db import connect_for_ingest, default_memory_limit, sql_identifier, sql_literal
from cloudir.timeline.flows import FlowStats, detect_flow_log, ingest_flows
from cloudir.timeline.formats import CONTAINERS, MAPPED_COLUMNS, RECORD_FORMATS, RecordFormat
from cloudir.timeline.schema import EVENTS_COLUMNS, EVENTS_INDEXES

if TYPE_CHECKING:
    from cloudir.case import Case

TARGET_TABLE = "events"
SNIFF_BYTES = 1 << 16
BATCH_BYTES = 192 << 20  # input per transaction: over a row group of records (written directly, not via the WAL)
# A JSON document file counts this many times its size in a batch: its records are unwrapped from whole
# documents held at once (34 files of 5,000 CloudTrail records ran out of 1.5 GiB in one 192 MiB batch).
DOCUMENT_WEIGHT = 3
SPLIT_BYTES = 32 << 20  # JSON documents larger than this are split record by record before DuckDB reads them
MAX_LINE_BYTES = reader.MAX_RECORD_BYTES
GZIP_RATIO = 10
FILES_PER_READ = 128  # JSON (or JSON Lines) files read by one parallel read_json
QUARANTINE_RAW_CHARS = 1 << 20
# DuckDB reads its path arguments as glob patterns: files whose names hold these are read through a copy.
GLOB_CHARS = re.compile(r"[*?\[\]{}]")
# A line of a CloudWatch Logs export to S3: the event's ingestion time, a space, the message.
CLOUDWATCH_EXPORT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z [{\[]")
# Evidence the log collectors keep next to the logs that holds no events: coverage reports, the request
# behind a page series, trail and bucket listings, digest validation, CloudTrail digests, their S3 metadata
# and the digest public keys, the flow-log configuration, Azure flow-log blob listings, the raw (XML)
# DescribeInstances pages beside flow logs and the Logs Insights answers that hit the row cap (their windows
# were queried again in halves).
# Skipped (and counted), not quarantined.
NOT_EVENT_FILES = (
    "coverage.json",
    "request.json",
    "trails.json",
    "s3-listing.json",
    "digest-validation.json",
    "flow-logs.json",
    "blob-listing.json",
)
NOT_EVENT_FOLDERS = ("CloudTrail-Digest", "s3-meta", "public-keys", "describe-instances-xml", "capped-windows")


@dataclass(frozen=True)
class FileAccount:
    """One file's accounting: ``records`` = ``events`` + ``duplicates`` + ``quarantined``."""

    file: str
    sha256: str
    format: str
    records: int
    events: int
    duplicates: int
    quarantined: int
    bytes: int
    repaired: int = 0  # records kept after repair (invalid UTF-8), counted in events or where they ended
    id_collisions: int = 0


@dataclass
class IngestStats:
    """What one ingest run did. Input records = ingested + duplicates + quarantined, per file and in total."""

    files: int = 0
    ingested: int = 0
    duplicates: int = 0
    quarantined: int = 0
    id_collisions: int = 0  # new events sharing their cloud and event id with an event of different content
    repaired: int = 0
    skipped: int = 0  # files that hold no events (empty, coverage reports, CloudTrail digests)
    already_ingested: list[tuple[str, str]] = field(default_factory=list)  # (file, SHA-256) not read again
    links_not_followed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): links out of a folder
    per_format: dict[str, int] = field(default_factory=dict)
    accounts: list[FileAccount] = field(default_factory=list)
    flows: FlowStats = field(default_factory=FlowStats)  # flow-log files go to the ``flows`` table

    @property
    def records(self) -> int:
        """Input records seen (unreadable files count as one each)."""
        return self.ingested + self.duplicates + self.quarantined

    @property
    def unchanged(self) -> int:
        """Files already ingested with the same name and SHA-256."""
        return len(self.already_ingested)

    def add(self, account: FileAccount) -> None:
        """Count one file's accounting into the totals."""
        self.accounts.append(account)
        self.ingested += account.events
        self.duplicates += account.duplicates
        self.quarantined += account.quarantined
        self.repaired += account.repaired
        self.id_collisions += account.id_collisions

    def as_dict(self) -> dict[str, object]:
        """Plain-dict form for custody details and JSON output."""
        return {
            "files": self.files,
            "records": self.records,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "id_collisions": self.id_collisions,
            "repaired": self.repaired,
            "skipped_files": self.skipped,
            "unchanged_files": self.unchanged,
            "links_not_followed": [{"path": path, "reason": reason} for path, reason in self.links_not_followed],
            "per_format": dict(sorted(self.per_format.items())),
            "flows": self.flows.as_dict(),
        }


@dataclass(frozen=True)
class _SourceFile:
    number: int
    path: Path  # the file as given
    name: str  # what goes into source_file
    reader: str | None  # json | jsonl | csv | csv_la (Log Analytics) | csv_raw (Splunk) | parquet | cwl_export
    compression: str
    size: int  # uncompressed bytes (estimated for multi-member gzip)
    read_path: Path  # what DuckDB reads: the file, or a copy / clean rewrite of it
    rewritten: bool = False  # read_path is a clean JSON Lines rewrite (placeholders for refused records)

    def largest(self) -> int:
        """A bound for one JSON value or line: JSON buffers are sized by it, so small files get small buffers."""
        cap = SPLIT_BYTES if self.reader == "json" else MAX_LINE_BYTES
        return min(cap, max(1 << 20, 2 * self.size))


def ingest_paths(
    db_path: Path,
    paths: Sequence[Path],
    *,
    responder_request_ids: Iterable[str] = (),
    source_root: Path | None = None,
    memory_limit: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> IngestStats:
    """Ingest log files and folders (recursively; plain or gzip) into the timeline at ``db_path``.

    Any number and size of files: they are read in batches of about ``BATCH_BYTES`` of input, one transaction
    each, and DuckDB spills to ``<db>.tmp/`` what does not fit ``memory_limit`` (default: from the machine).
    ``source_root``: record source files relative to this folder (a case root) instead of as given.
    ``on_progress`` hears the bytes of input ingested so far, of all, after each batch.
    """
    limit = memory_limit or default_memory_limit()
    con = connect_for_ingest(db_path, memory_limit=limit)
    try:
        with tempfile.TemporaryDirectory(prefix=db_path.name + ".ingest-", dir=db_path.parent) as work:
            links: list[tuple[str, str]] = []
            files, skipped = _discover(paths, source_root, Path(work), links, db_path)
            stats = IngestStats(files=len(files), skipped=skipped, links_not_followed=links)
            _prepare(con, responder_request_ids)
            total, done = sum(source.size for source in files), 0
            with ThreadPoolExecutor(max_workers=1) as hasher:
                for batch in _batches(files):
                    digests = {source.number: hasher.submit(_sha256, source.path) for source in batch}
                    try:
                        _ingest_batch(con, batch, digests, stats, Path(work))
                    except duckdb.OutOfMemoryException as exc:
                        raise CloudirError(
                            f"timeline ingest ran out of memory (memory_limit {limit}) on {batch[0].name} "
                            f"and {len(batch) - 1} more files: {str(exc).strip().splitlines()[0]}",
                            hint="raise --memory-limit",
                        ) from None
                    done += sum(source.size for source in batch)
                    if on_progress is not None:
                        on_progress(done, total)
        con.execute(
            "UPDATE events SET is_responder = true WHERE NOT is_responder "
            "AND request_id IN (SELECT request_id FROM responder_ids)"
        )
        ingest_flows(con, paths, source_root, stats.flows)
        con.execute(EVENTS_INDEXES)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return stats


def build_case_timeline(
    case: Case, *, memory_limit: str | None = None, on_progress: ProgressCallback | None = None
) -> IngestStats:
    """Build ``timeline.duckdb`` in the case from everything under ``logs/`` and register its hash."""
    logs = case.root / "logs"
    with case.action("timeline.build", target=TIMELINE_DB) as act:
        if not logs.is_dir():
            raise CloudirError(f"{logs}: the case holds no logs", hint="pull logs into the case first")
        stats = ingest_paths(
            case.root / TIMELINE_DB,
            [logs],
            responder_request_ids=case.responder_request_ids(),
            source_root=case.root,
            memory_limit=memory_limit,
            on_progress=on_progress,
        )
        act.details.update(stats.as_dict())
        case.record_existing(TIMELINE_DB)
        if (
            stats.ingested + stats.duplicates + stats.flows.ingested + stats.flows.duplicates == 0
            and not stats.unchanged
        ):
            raise CloudirError(f"none of the {stats.files} log files under {logs} held a readable event")
    return stats


# -- files ----------------------------------------------------------------------------------------------


def _discover(
    paths: Sequence[Path], source_root: Path | None, work: Path, links: list[tuple[str, str]], db_path: Path
) -> tuple[list[_SourceFile], int]:
    """The files to read, and how many were skipped as holding no events; links not followed go to ``links``.

    The timeline's own files (the database, its WAL, spill and work folders) inside a folder given are not input.
    """
    found: list[Path] = []
    own_db = db_path.resolve()
    for path in paths:
        if path.is_dir():
            kept, refused = files_under(path)
            found.extend(file for file in kept if not _is_timeline_file(file, own_db))
            links.extend(refused)
        elif path.is_file():
            found.append(path)
        else:
            raise CloudirError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(found))
    files: list[_SourceFile] = []
    for path in unique:
        if path.name in NOT_EVENT_FILES or set(path.parts) & set(NOT_EVENT_FOLDERS) or detect_flow_log(path):
            continue
        kind, compression = _sniff(path)
        if kind == "empty":
            continue
        name = path.resolve().relative_to(source_root.resolve()).as_posix() if source_root else str(path)
        number = len(files)
        read_path = path
        if GLOB_CHARS.search(str(path.resolve())):
            read_path = work / f"copy-{number}"
            shutil.copyfile(path, read_path)
        size = _uncompressed_size(path, compression)
        files.append(_SourceFile(number, path, name, kind, compression, size, read_path))
    return files, len(unique) - len(files)


def _is_timeline_file(path: Path, db: Path) -> bool:
    """Whether ``path`` is the timeline database ``db`` (resolved), its WAL, or in its spill (``.tmp``) or work
    (``.ingest-``) folder."""
    resolved = path.resolve()
    if not resolved.is_relative_to(db.parent):
        return False
    first = resolved.relative_to(db.parent).parts[0]
    return first in (db.name, f"{db.name}.wal", f"{db.name}.tmp") or first.startswith(f"{db.name}.ingest-")


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
    """Pick a reader from the first bytes: json (one document), jsonl, csv, parquet, empty, or None (unknown)."""
    with path.open("rb") as handle:
        compression = "gzip" if handle.read(2) == b"\x1f\x8b" else "none"
    try:
        with gzip.open(path, "rb") if compression == "gzip" else path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        head = _readable_head(path) if compression == "gzip" else b""
        if not head:
            return None, compression
    if head.startswith(b"PAR1"):  # Parquet (Amazon Security Lake, a timeline export): its magic number
        return "parquet", compression
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if not text:
        return "empty", compression
    first_line, newline, _ = text.partition("\n")
    if text.startswith(("{", "[")):
        if not newline:
            return "json", compression
        try:
            json.loads(first_line)
        except RecursionError:
            return "jsonl", compression
        except ValueError:
            return "json", compression
        return "jsonl", compression
    header = first_line.lower()
    if "," in header and "event name" in header.replace("_", " ") and "event id" in header.replace("_", " "):
        return "csv", compression
    if "," in header and "timegenerated" in header:
        return "csv_la", compression
    if "_raw" in {name.strip().strip('"') for name in header.split(",")}:  # Splunk CSV export: the record is _raw
        return "csv_raw", compression
    if CLOUDWATCH_EXPORT_LINE.match(first_line):
        return "cwl_export", compression
    return None, compression


def _readable_head(path: Path) -> bytes:
    """The first bytes of a gzip file that breaks early (a truncated one still starts with records)."""
    inflater = zlib.decompressobj(wbits=31)
    with path.open("rb") as handle:
        try:
            return inflater.decompress(handle.read(SNIFF_BYTES), SNIFF_BYTES)
        except zlib.error:
            return b""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _batches(files: list[_SourceFile]) -> Iterator[list[_SourceFile]]:
    batch: list[_SourceFile] = []
    weight = 0
    for source in files:
        batch.append(source)
        weight += source.size * (DOCUMENT_WEIGHT if source.reader == "json" else 1)
        if weight >= BATCH_BYTES:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


# -- SQL --------------------------------------------------------------------------------------------------


def _prepare(con: duckdb.DuckDBPyConnection, responder_request_ids: Iterable[str]) -> None:
    # the columns of ``staged``, planned once (planning the mapping takes about half a second)
    empty = "SELECT NULL::INTEGER AS file_no, NULL::JSON AS doc, NULL::VARCHAR AS bad, false AS placeholder"
    con.execute(f"CREATE OR REPLACE TEMP TABLE staged_columns AS {_staged_select(empty)} LIMIT 0")
    con.execute(f"CREATE OR REPLACE TEMP TABLE seen AS SELECT {_KEY} AS key FROM {TARGET_TABLE}")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE responder_ids AS SELECT DISTINCT unnest($ids::VARCHAR[]) AS request_id",
        {"ids": sorted(set(responder_request_ids))},
    )


def _read_file_sql(source: _SourceFile) -> str:
    """SELECT file_no, doc (JSON or NULL), bad (text of an invalid record), placeholder for one file, in order.

    A record's position is its row number in the file: with ``preserve_insertion_order`` a file's records
    land in ``staged`` in file order, so it is its row id minus the file's first. Blank lines are not records.
    """
    path, compression = sql_literal(str(source.read_path)), sql_literal(source.compression)
    if source.reader in ("csv", "csv_la", "csv_raw"):
        normalize = str(source.reader == "csv").lower()  # CloudTrail CSV names are normalized (event_name)
        return (
            f"SELECT {source.number} AS file_no, to_json(t) AS doc, NULL::VARCHAR AS bad, false AS placeholder "
            f"FROM read_csv({path}, header=true, all_varchar=true, normalize_names={normalize}, "
            f"compression={compression}) t"
        )
    if source.reader == "parquet":  # each row as a JSON object, nested columns (structs, lists, maps) as JSON
        return (
            f"SELECT {source.number} AS file_no, to_json(t) AS doc, NULL::VARCHAR AS bad, false AS placeholder "
            f"FROM read_parquet({path}) t"
        )
    if source.reader == "cwl_export":  # "<ISO time> <message>" lines of a CloudWatch Logs export to S3
        return (
            f"SELECT {source.number} AS file_no, json(try(substr(line, strpos(line, ' ') + 1)::JSON)) AS doc, "
            "CASE WHEN try(substr(line, strpos(line, ' ') + 1)::JSON) IS NULL THEN line END AS bad, "
            "false AS placeholder "
            f"FROM read_csv({path}, columns={{'line': 'VARCHAR'}}, delim=chr(31), quote='', escape='', "
            f"header=false, auto_detect=false, compression={compression}, max_line_size={MAX_LINE_BYTES}, "
            f"buffer_size={MAX_LINE_BYTES * 2}) WHERE trim(line) <> ''"
        )
    if source.rewritten:
        return (  # a placeholder line (null) reads as NULL
            f"SELECT {source.number} AS file_no, json AS doc, NULL::VARCHAR AS bad, json IS NULL AS placeholder "
            f"FROM {_read_json(path, 'newline_delimited', 'none', 2 * MAX_LINE_BYTES)}"
        )
    layout = "unstructured" if source.reader == "json" else "newline_delimited"
    return (
        f"SELECT {source.number} AS file_no, json AS doc, NULL::VARCHAR AS bad, false AS placeholder "
        f"FROM {_read_json(path, layout, source.compression, source.largest())}"
    )


def _read_json(paths: str, layout: str, compression: str, largest: int, *, filename: bool = False) -> str:
    """Each JSON value of ``paths`` (a SQL literal) as canonical (minified) JSON text, parsed once by the reader."""
    return (
        f"read_json({paths}, format='{layout}', records=false, columns={{'json': 'JSON'}}, "
        f"compression={sql_literal(compression)}, maximum_object_size={largest}{', filename=true' if filename else ''})"
    )


def _read_many_sql(sources: list[_SourceFile], compression: str) -> str:
    """Like :func:`_read_file_sql` for many JSON (or many JSON Lines) files at once: one parallel ``read_json``."""
    paths = "[" + ", ".join(sql_literal(str(source.read_path)) for source in sources) + "]"
    numbers = ", ".join(f"({source.number}, {sql_literal(str(source.read_path))})" for source in sources)
    layout = "unstructured" if sources[0].reader == "json" else "newline_delimited"
    return (
        "SELECT n.file_no, d.json AS doc, NULL::VARCHAR AS bad, false AS placeholder "
        f"FROM {_read_json(paths, layout, compression, max(s.largest() for s in sources), filename=True)} d "
        f"JOIN (VALUES {numbers}) n(file_no, path) ON n.path = d.filename"
    )


# A record can only nest deeper than the limit if it holds that many brackets: those few are checked exactly.
_DEEP_SUSPECT = f"strlen(rec::VARCHAR) - strlen(replace(replace(rec::VARCHAR, '[', ''), '{{', '')) > {reader.MAX_DEPTH}"


def _per_format(expressions: dict[str, str], column: str) -> str:
    branches = " ".join(f"WHEN '{name}' THEN {expression}" for name, expression in expressions.items())
    return f"CASE fmt {branches} END AS {column}"


def _lower_keys(fields: object) -> object:
    """A ``json_transform`` structure with every key in lower case (for exports that lower-case keys)."""
    if isinstance(fields, dict):
        return {key.lower(): _lower_keys(value) for key, value in fields.items()}
    if isinstance(fields, list):
        return [_lower_keys(value) for value in fields]
    return fields


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _snake(key: str) -> str:
    """A camelCase key as the Azure SDK's ``as_dict()`` names its attribute (``eventDataId``: ``event_data_id``)."""
    return _CAMEL_HUMP.sub("_", key).lower()


def _snake_keys(fields: dict[str, object], keep: tuple[str, ...]) -> dict[str, object]:
    """A ``json_transform`` structure with its keys in snake case, except inside ``keep`` (dictionaries the SDK
    copies with their keys as received, like ``claims``)."""
    return {
        _snake(key): value if key in keep or not isinstance(value, dict) else _snake_keys(value, keep)
        for key, value in fields.items()
    }


def _unsnake_sql(fields: dict[str, object], keep: tuple[str, ...], source: str) -> str:
    """The struct ``source`` (transformed by :func:`_snake_keys`) rebuilt with the format's own key names."""
    members = []
    for key, value in fields.items():
        member = f"{source}.{sql_identifier(_snake(key))}"
        if isinstance(value, dict) and key not in keep:
            member = _unsnake_sql(value, keep, member)
        members.append(f"{sql_identifier(key)} := {member}")
    return f"struct_pack({', '.join(members)})"


_KEY_TEST = re.compile(r"list_contains\(keys, '([^']*)'\)")


def _lower_detect(detect: str) -> str:
    """A format's detection over the record's keys in lower case."""
    return _KEY_TEST.sub(lambda m: f"list_contains(list_transform(keys, lambda k: lower(k)), '{m[1].lower()}')", detect)


def _snake_detect(detect: str) -> str:
    """A format's detection over the record's keys in snake case."""
    return _KEY_TEST.sub(lambda m: f"list_contains(keys, '{_snake(m[1])}')", detect)


# Operation names: runs of blanks as one space, trimmed; Azure resource-provider operations (case-insensitive,
# ``Microsoft.Compute/virtualMachines/write`` from the Activity Log API, ``MICROSOFT.COMPUTE/...`` from
# diagnostic settings and Log Analytics) in lower case. AWS and GCP names keep the one case their APIs use.
_OPERATION = "CASE WHEN cloud = 'azure' AND strpos(op, '/') > 0 THEN lower(op) ELSE op END"
_BLANKS = "trim(regexp_replace(op_raw, '\\s+', ' ', 'g'))"


# The columns a record format maps, with their types in ``events`` (the operation as spelled: ``op_raw``).
_MAPPED_TYPES = {
    "cloud": "VARCHAR",
    **{
        "op_raw" if column == "operation" else column: {
            "time": "TIMESTAMP",
            "resources": "VARCHAR[]",
            "read_only": "BOOLEAN",
        }.get(column, "VARCHAR")
        for column in MAPPED_COLUMNS
    },
}


def _mapping(fmt: RecordFormat) -> str:
    """One struct of the mapped columns from a record of this format, its ``json_transform`` struct bound to ``p``
    (with the format's keys as documented, all in lower case, or, for the formats that have it, in snake case).

    A single struct per record (``list_transform`` binds the transformed record once) instead of one wide struct
    column per format: only the matching format's branch is evaluated and carried.
    """
    expressions = {"cloud": fmt.cloud_sql or f"'{fmt.cloud}'", "op_raw": fmt.columns["operation"]} | {
        column: fmt.columns[column] for column in MAPPED_COLUMNS if column != "operation"
    }
    expressions["event_id"] = f"coalesce(nullif({expressions['event_id']}, ''), md5(rec::VARCHAR))"
    fields = ", ".join(
        f"{sql_literal(column)}: CAST({expressions[column]} AS {kind})" for column, kind in _MAPPED_TYPES.items()
    )
    exact = f"list_transform([json_transform(rec, {sql_literal(fmt.transform_spec)})], lambda p: {{{fields}}})[1]"
    # each branch maps its own transform (field access is case-insensitive): a CASE choosing between the two
    # transforms, whose struct field names differ in case only, loses every field in DuckDB when all the rows of a
    # chunk take the lower-case branch (a file of lower-cased records alone read no event time)
    branches = []
    lower = json.dumps(_lower_keys(fmt.fields), separators=(",", ":"))
    if lower != fmt.transform_spec:
        branches.append(
            f"WHEN 'lower' THEN list_transform([json_transform(rec, {sql_literal(lower)})], lambda p: {{{fields}}})[1]"
        )
    if fmt.snake_case_keep is not None:
        snake = json.dumps(_snake_keys(fmt.fields, fmt.snake_case_keep), separators=(",", ":"))
        unsnake = _unsnake_sql(fmt.fields, fmt.snake_case_keep, "s")
        branches.append(
            f"WHEN 'snake' THEN list_transform(list_transform([json_transform(rec, {sql_literal(snake)})], "
            f"lambda s: {unsnake}), lambda p: {{{fields}}})[1]"
        )
    return f"CASE key_style {' '.join(branches)} ELSE {exact} END" if branches else exact


def _staged_select(source: str) -> str:
    """Unwrap, classify and map the documents of ``source`` (file_no, doc, bad, placeholder) in one projection.

    A container document becomes its records (``unnest``, in order); any other document is one record, in
    canonical (minified) form. ``fmt`` is the record format, ``unknown``, ``placeholder`` (a record the
    careful reader refused) or NULL (not JSON); a record matching a format only with its keys in lower case
    (or, for the formats that have it, in snake case) is read with ``key_style`` ``lower`` (``snake``).
    """
    container = " ".join(f"WHEN {c.detect} THEN '{c.name}'" for c in CONTAINERS)
    elements = " ".join(f"WHEN '{c.name}' THEN {c.records}" for c in CONTAINERS)
    format_case = " ".join(f"WHEN {f.detect} THEN '{f.name}'" for f in RECORD_FORMATS)
    lower_case = " ".join(
        f"WHEN {_lower_detect(f.detect)} THEN '{f.name}:lower'"
        for f in RECORD_FORMATS
        if _lower_detect(f.detect) != f.detect
    )
    snake_case = " ".join(
        f"WHEN {_snake_detect(f.detect)} THEN '{f.name}:snake'" for f in RECORD_FORMATS if f.snake_case_keep is not None
    )
    mapping = " ".join(f"WHEN '{f.name}' THEN {_mapping(f)}" for f in RECORD_FORMATS)
    mapped = ", ".join(f"m.{column} AS {column}" for column in _MAPPED_TYPES)
    return f"""
    SELECT * EXCLUDE (op_raw), CASE WHEN cloud IS NULL THEN NULL WHEN time IS NULL THEN 'no parsable event time'
             WHEN nullif(operation, '') IS NULL THEN 'no operation name'
             WHEN strlen(rec::VARCHAR) > {MAX_LINE_BYTES} THEN 'record of more than {MAX_LINE_BYTES} bytes'
             END AS problem
    FROM (
    SELECT *, CASE WHEN operation IS DISTINCT FROM op_raw THEN op_raw END AS operation_original
    FROM (
    SELECT * EXCLUDE (op), {_OPERATION} AS operation
    FROM (
    SELECT *, {_BLANKS} AS op
    FROM (
        SELECT file_no, rec, bad, fmt, container,
            deep_suspect, {mapped}
        FROM (
            SELECT file_no, rec, bad, fmt, container,
                CASE WHEN fmt NOT IN ('placeholder', 'unknown') THEN {_DEEP_SUSPECT} END AS deep_suspect,
                CASE fmt {mapping} END AS m
            FROM (
                SELECT file_no, rec, bad, container, split_part(found, ':', 1) AS fmt,
                    split_part(found, ':', 2) AS key_style
                FROM (
                SELECT file_no, rec, bad, container,
                    CASE WHEN placeholder THEN 'placeholder' WHEN rec IS NULL THEN NULL {format_case} {lower_case}
                         {snake_case}
                         ELSE 'unknown' END AS found
                FROM (
                    SELECT file_no, rec, bad, placeholder, container,
                        CASE WHEN container IS NULL THEN doc_keys ELSE json_keys(rec) END AS keys
                    FROM (
                        SELECT file_no, bad, placeholder, container, keys AS doc_keys,
                            unnest(CASE WHEN doc IS NULL THEN [NULL::JSON] WHEN container IS NULL THEN [doc]
                                   ELSE CASE container {elements} END END) AS rec
                        FROM (
                            SELECT *, CASE {container} END AS container
                            FROM (SELECT file_no, doc, bad, placeholder, json_keys(doc) AS keys FROM ({source}))
                        )
                    )
                )
                )
            )
        )
    ))))
    """


def _stage_file(con: duckdb.DuckDBPyConnection, source: _SourceFile, work: Path) -> list[reader.Problem]:
    """Read one file into ``staged``; if DuckDB cannot read it whole, through the careful reader."""
    if source.reader is None:
        return [
            reader.Problem(
                -1,
                "unrecognized file format (not JSON, JSON Lines, Parquet, CloudTrail, Log Analytics or Splunk CSV, "
                "CloudWatch Logs export)",
                "",
            )
        ]
    if not (source.reader == "json" and source.size > SPLIT_BYTES):
        problem = _try_stage(con, _read_file_sql(source))
        if problem is None:
            return []
        if source.reader not in ("json", "jsonl"):
            return [reader.Problem(-1, f"unreadable file: {problem}", "")]
    clean = work / f"clean-{source.number}.jsonl"
    result = reader.rewrite(source.path, source.compression, source.reader, clean)
    problem = _try_stage(con, _read_file_sql(replace(source, read_path=clean, rewritten=True)))
    clean.unlink()
    if problem:
        return [reader.Problem(-1, f"unreadable file: {problem}", "")]
    return result.problems


def _try_stage(con: duckdb.DuckDBPyConnection, read_sql: str) -> str | None:
    """Map and insert what ``read_sql`` reads into ``staged``; the error's first line if DuckDB cannot read it."""
    try:
        con.execute(f"INSERT INTO staged {_staged_select(read_sql)}")
    except duckdb.OutOfMemoryException:
        raise
    except duckdb.Error as exc:
        return str(exc).strip().splitlines()[0][:300]
    return None


def _stage(con: duckdb.DuckDBPyConnection, batch: list[_SourceFile], work: Path) -> None:
    """Fill ``staged`` (one row per record, mapped) and ``file_problems`` for a batch of files."""
    con.execute("CREATE OR REPLACE TEMP TABLE staged AS FROM staged_columns")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE file_problems (file_no INTEGER, position BIGINT, reason VARCHAR, "
        "raw VARCHAR, raw_hex VARCHAR, repaired BOOLEAN)"
    )
    together = [s for s in batch if s.reader == "jsonl" or (s.reader == "json" and s.size <= SPLIT_BYTES)]
    single = [source for source in batch if source not in together]
    for reader_name, compression in itertools.product(("json", "jsonl"), ("none", "gzip")):
        alike = [s for s in together if s.reader == reader_name and s.compression == compression]
        for start in range(0, len(alike), FILES_PER_READ):
            chunk = alike[start : start + FILES_PER_READ]
            if len(chunk) == 1 or _try_stage(con, _read_many_sql(chunk, compression)):
                single.extend(chunk)  # one of them is not readable: read each on its own
    problems: list[tuple[object, ...]] = []
    for source in sorted(single, key=lambda s: s.number):
        problems.extend(
            (source.number, None if p.position < 0 else p.position, p.reason, p.raw, p.raw_hex, p.repaired)
            for p in _stage_file(con, source, work)
        )
    if problems:
        _insert_rows(con, "file_problems", problems)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE files AS SELECT f.*, r.first_row FROM files f LEFT JOIN ("
        "SELECT file_no, min(rowid) AS first_row FROM staged GROUP BY file_no) r USING (file_no)"
    )
    _refuse_deep(con)


def _refuse_deep(con: duckdb.DuckDBPyConnection) -> None:
    """Quarantine records nested deeper than ``reader.MAX_DEPTH`` (checked exactly for the few suspects)."""
    suspects = con.execute("SELECT rowid, rec::VARCHAR FROM staged WHERE deep_suspect").fetchall()
    deep = [row_id for row_id, text in suspects if reader.depth_of(text) > reader.MAX_DEPTH]
    if deep:
        con.execute(
            f"UPDATE staged SET problem = 'nested deeper than {reader.MAX_DEPTH} levels' WHERE rowid IN "
            "(SELECT unnest($rows::BIGINT[]))",
            {"rows": deep},
        )


# A record's position: its row id minus its file's first (see _read_file_sql).
_POSITION = "s.row_id - f.first_row"
_VALID = "s.cloud IS NOT NULL AND s.problem IS NULL"

# Why a record no format read is quarantined, if a format knows its log family (a GCP log entry not an audit log).
_NOT_READ = ", ".join(f.not_read for f in RECORD_FORMATS if f.not_read is not None)

_QUARANTINE_SQL = f"""
CREATE OR REPLACE TEMP TABLE new_quarantine AS
SELECT s.file_no, f.name AS source_file, s.position AS source_position, s.reason,
    left(s.raw, {QUARANTINE_RAW_CHARS}) AS raw, s.raw_hex, s.repaired, s.from_reader
FROM (
    SELECT s.file_no, {_POSITION} AS position, CASE
            WHEN s.fmt IS NULL THEN 'not valid JSON'
            WHEN s.fmt = 'unknown' THEN coalesce({_NOT_READ},
                'unrecognized record (keys: ' || array_to_string(json_keys(s.rec)[1:8], ', ') || ')')
            ELSE s.problem || ' (' || s.fmt || ')' END AS reason,
        coalesce(s.bad, s.rec::VARCHAR) AS raw, NULL AS raw_hex, false AS repaired, false AS from_reader
    FROM (SELECT *, rowid AS row_id FROM staged) s JOIN files f USING (file_no)
    WHERE s.fmt IS NULL OR s.fmt = 'unknown' OR s.problem IS NOT NULL
    UNION ALL
    SELECT file_no, position, reason, raw, raw_hex, repaired, true FROM file_problems
) s JOIN files f USING (file_no);
INSERT INTO quarantine (source_file, source_position, reason, raw, raw_hex, repaired, target_table)
SELECT source_file, source_position, reason, raw, raw_hex, repaired, '{TARGET_TABLE}' FROM new_quarantine n
WHERE NOT EXISTS (
    SELECT 1 FROM quarantine q
    WHERE q.source_file = n.source_file AND q.source_position IS NOT DISTINCT FROM n.source_position
      AND q.reason = n.reason
);
"""

# Identity: an exact duplicate has the same cloud, event id and content (SHA-256 of the canonical record text)
# as a kept event (earlier in this batch by file number, i.e. the order given, then position; or already in the
# timeline). Only records whose cloud and event id another record has ("shared": twice in the batch, or in
# ``prior``, the timeline's events with a key of the batch) are hashed and decided in ``decided``; every
# other record is inserted as it is. ``prior`` is read from ``events`` only when a key of the batch is in
# ``seen`` (64-bit hashes of the keys of the timeline's events): a batch reads 8 bytes per event of the timeline
# (0.6 s at 10M events), not the events. The same id with other content is a separate event; all events of such
# an id are flagged id_collision, and all but the first get the content hash in event_uid.
_KEY = "hash(cloud, event_id)"
_BATCH_KEYS_SQL = f"""
CREATE OR REPLACE TEMP TABLE batch_keys AS SELECT DISTINCT cloud, event_id FROM staged s WHERE {_VALID}
    AND {_KEY} IN (SELECT key FROM seen)
"""
# The timeline's events with a key of the batch: their cheap columns first, ``raw`` only for those without
# a stored content hash (a full scan of ``raw``, needed the first time such an event is met again).
_PRIOR_SQL = """
CREATE OR REPLACE TEMP TABLE prior AS
SELECT e.rowid AS row_id, e.cloud, e.event_id, e.content_hash, e.id_collision FROM events e
SEMI JOIN batch_keys c USING (cloud, event_id)
"""
_PRIOR_HASH_SQL = """
UPDATE prior p SET content_hash = unhex(sha256(e.raw::VARCHAR)) FROM events e
WHERE p.content_hash IS NULL AND e.rowid = p.row_id
"""
_DECIDE_SQL = f"""
CREATE OR REPLACE TEMP TABLE shared AS
SELECT cloud, event_id FROM staged s WHERE {_VALID} GROUP BY ALL HAVING count(*) > 1
UNION SELECT cloud, event_id FROM prior;
CREATE OR REPLACE TEMP TABLE candidates AS
SELECT s.rowid AS row_id, s.file_no, s.cloud, s.event_id, s.fmt, unhex(sha256(s.rec::VARCHAR)) AS content_hash
FROM staged s SEMI JOIN shared h USING (cloud, event_id) WHERE {_VALID};
CREATE OR REPLACE TEMP TABLE keep AS
SELECT k.*, count(*) OVER ids + coalesce(p.n, 0) > 1 AS id_collision,
    CASE WHEN p.n IS NULL AND row_number() OVER (ids ORDER BY k.file_no, k.keep_rowid) = 1
         THEN k.cloud || ':' || k.event_id
         ELSE k.cloud || ':' || k.event_id || '~' || lower(hex(k.content_hash)) END AS event_uid
FROM (
    SELECT arg_min(row_id, (file_no, row_id)) AS keep_rowid, cloud, event_id, content_hash, min(file_no) AS file_no
    FROM candidates c ANTI JOIN prior p USING (cloud, event_id, content_hash)
    GROUP BY cloud, event_id, content_hash
) k LEFT JOIN (SELECT cloud, event_id, count(*) AS n FROM prior GROUP BY ALL) p USING (cloud, event_id)
WINDOW ids AS (PARTITION BY k.cloud, k.event_id);
CREATE OR REPLACE TEMP TABLE decided AS
SELECT c.row_id, k.keep_rowid IS NULL AS dropped, k.event_uid, k.id_collision, c.content_hash
FROM candidates c LEFT JOIN keep k ON k.keep_rowid = c.row_id;
"""
_NOT_DROPPED = f"{_VALID} AND d.dropped IS NOT TRUE"
_INSERT_SQL = f"""
INSERT INTO events ({", ".join(EVENTS_COLUMNS)})
-- is_responder is set after the load, by the request ids the case's custody log recorded
SELECT {
    ", ".join(
        {
            "event_uid": "coalesce(d.event_uid, s.cloud || ':' || s.event_id)",
            "source_format": "s.fmt",
            "source_file": "f.name",
            "source_position": _POSITION,
            "is_responder": "false",
            "raw": "s.rec",
            "id_collision": "coalesce(d.id_collision, false)",
            "content_hash": "d.content_hash",
        }.get(column, f"s.{column}")
        for column in EVENTS_COLUMNS
    )
}
FROM (SELECT *, rowid AS row_id FROM staged) s JOIN files f ON f.file_no = s.file_no
    LEFT JOIN decided d ON d.row_id = s.row_id
WHERE {_NOT_DROPPED};
INSERT INTO seen SELECT {_KEY} FROM staged s WHERE {_VALID};
"""

# Events of the timeline that a new event of other content makes an id collision, not yet flagged: found in
# ``prior`` (their row ids and content hashes), so flagging them reads no other row of ``events``.
_UNFLAGGED_PRIOR = """
FROM prior p SEMI JOIN (SELECT cloud, event_id FROM keep WHERE id_collision) k USING (cloud, event_id)
WHERE p.id_collision IS NOT TRUE
"""
_FLAG_PRIOR_COLLISIONS = f"""
UPDATE events SET id_collision = true, content_hash = u.content_hash
FROM (SELECT p.row_id, p.content_hash {_UNFLAGGED_PRIOR}) u WHERE events.rowid = u.row_id
"""

_ACCOUNT_SQL = f"""
SELECT f.file_no, coalesce(r.records, 0) + coalesce(q.outside, 0), coalesce(r.valid, 0), coalesce(r.events, 0),
    coalesce(q.quarantined, 0), coalesce(q.repaired, 0), coalesce(r.collisions, 0),
    coalesce(r.kept_formats, r.formats, '')
FROM files f
LEFT JOIN (
    SELECT s.file_no, count(*) FILTER (fmt IS DISTINCT FROM 'placeholder') AS records,
        count(*) FILTER ({_VALID}) AS valid, count(*) FILTER ({_NOT_DROPPED}) AS events,
        count(*) FILTER (d.id_collision) AS collisions,
        string_agg(DISTINCT fmt, ',' ORDER BY fmt) FILTER (fmt IS NOT NULL AND fmt NOT IN ('placeholder', 'unknown'))
            AS formats,
        string_agg(DISTINCT fmt, ',' ORDER BY fmt) FILTER ({_NOT_DROPPED}) AS kept_formats
    FROM staged s LEFT JOIN decided d ON d.row_id = s.rowid GROUP BY s.file_no
) r USING (file_no)
LEFT JOIN (
    SELECT q.file_no, count(*) FILTER (NOT repaired) AS quarantined, count(*) FILTER (repaired) AS repaired,
        count(*) FILTER (NOT repaired AND from_reader) AS outside
    FROM new_quarantine q GROUP BY q.file_no
) q USING (file_no)
ORDER BY f.file_no
"""
_PER_FORMAT_SQL = (
    f"SELECT fmt, count(*) FROM staged s LEFT JOIN decided d ON d.row_id = s.rowid WHERE {_NOT_DROPPED} GROUP BY 1"
)


def _ingest_batch(
    con: duckdb.DuckDBPyConnection,
    batch: list[_SourceFile],
    digests: dict[int, Future[str]],
    stats: IngestStats,
    work: Path,
) -> None:
    for source, sha256 in _unchanged(con, batch, digests):
        stats.already_ingested.append((source.name, sha256))
        batch.remove(source)
    if not batch:
        return
    con.execute("CREATE OR REPLACE TEMP TABLE files (file_no INTEGER, name VARCHAR)")
    _insert_rows(con, "files", [(source.number, source.name) for source in batch])
    _stage(con, batch, work)
    hashes = {source.number: digests[source.number].result() for source in batch}
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_QUARANTINE_SQL)
        con.execute(_BATCH_KEYS_SQL)
        # the timeline's events are read only when a key of the batch may be among them
        con.execute(_PRIOR_SQL + ("" if _scalar(con, "SELECT count(*) FROM batch_keys") else " LIMIT 0"))
        if _scalar(con, "SELECT count(*) FROM prior WHERE content_hash IS NULL"):
            con.execute(_PRIOR_HASH_SQL)
        con.execute(_DECIDE_SQL)
        con.execute(_INSERT_SQL)
        if _scalar(con, f"SELECT count(*) {_UNFLAGGED_PRIOR}"):
            con.execute(_FLAG_PRIOR_COLLISIONS)
        accounts = _accounts(con, {s.number: s for s in batch}, hashes)
        if accounts:
            _insert_rows(
                con,
                "ingest_files",
                [
                    (
                        a.file,
                        a.sha256,
                        TARGET_TABLE,
                        a.format,
                        a.records,
                        a.events,
                        a.duplicates,
                        a.quarantined,
                        a.repaired,
                        a.id_collisions,
                        a.bytes,
                        reader_name,
                    )
                    for a, reader_name in accounts
                ],
                ", now()",
            )
        rows = con.execute(_PER_FORMAT_SQL).fetchall()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute(
        "DROP TABLE staged; DROP TABLE batch_keys; DROP TABLE prior; DROP TABLE shared; DROP TABLE candidates; "
        "DROP TABLE keep; DROP TABLE decided"
    )
    for name, count in rows:
        stats.per_format[name] = stats.per_format.get(name, 0) + int(count)
    for account, _ in accounts:
        stats.add(account)


def _unchanged(
    con: duckdb.DuckDBPyConnection, batch: list[_SourceFile], digests: dict[int, Future[str]]
) -> list[tuple[_SourceFile, str]]:
    """Files of the batch already ingested under the same name with the same SHA-256 (not read again).

    Only files whose name is in ``ingest_files`` wait for their hash here; the others are hashed while staged.
    """
    done = set(
        con.execute(
            "SELECT file, sha256 FROM ingest_files WHERE target_table = ? AND file IN (SELECT unnest(?::VARCHAR[]))",
            [TARGET_TABLE, [source.name for source in batch]],
        ).fetchall()
    )
    names = {name for name, _ in done}
    return [
        (source, digests[source.number].result())
        for source in batch
        if source.name in names and (source.name, digests[source.number].result()) in done
    ]


def _accounts(
    con: duckdb.DuckDBPyConnection, sources: dict[int, _SourceFile], hashes: dict[int, str]
) -> list[tuple[FileAccount, str]]:
    accounts = []
    for number, records, valid, events, quarantined, repaired, collisions, formats in con.execute(
        _ACCOUNT_SQL
    ).fetchall():
        source = sources[number]
        account = FileAccount(
            file=source.name,
            sha256=hashes[number],
            format=formats,
            records=int(records),
            events=int(events),
            duplicates=int(valid) - int(events),
            quarantined=int(quarantined),
            bytes=source.path.stat().st_size,
            repaired=int(repaired),
            id_collisions=int(collisions),
        )
        accounts.append((account, source.reader or "unknown"))
    return accounts


def _insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[tuple[object, ...]], more: str = ""
) -> None:
    """Insert ``rows`` (then the ``more`` SQL values) with one statement: ``executemany`` runs one per row."""
    if not rows:
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    values = ", ".join(f"unnest(${number})" for number in range(1, len(columns) + 1))
    con.execute(f"INSERT INTO {table} SELECT {values}{more}", columns)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row else 0
