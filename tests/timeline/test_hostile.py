"""Hostile input files, each with its exact expected accounting: records = events + duplicates + quarantined."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.timeline import ingest, reader
from cloudir.timeline.ingest import ingest_paths

runner = CliRunner()


def record(number: int, **extra: Any) -> dict[str, Any]:
    """A CloudTrail record; every one has its own content."""
    return {
        "eventVersion": "1.08",
        "eventTime": f"2024-05-01T10:{number // 60:02d}:{number % 60:02d}Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "eventID": f"id-{number}",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::111122223333:user/u{number}"},
        "userAgent": f"agent {number}",
        **extra,
    }


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def files_table(db: Path) -> dict[str, tuple[int, int, int, int]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT file, records, events, duplicates, quarantined FROM ingest_files").fetchall()
    table = {Path(row[0]).name: tuple(row[1:]) for row in rows}
    for name, (records, events, duplicates, quarantined) in table.items():
        assert records == events + duplicates + quarantined, name
    return table


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_same_event_id_with_different_content_is_kept_and_flagged(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"Records": [{**record(n), "eventID": "1"} for n in range(16)]}))
    db = tmp_path / "t.duckdb"
    result = runner.invoke(app, ["timeline", "ingest", str(scenario), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "16 records = 16 ingested + 0 duplicate + 0 quarantined" in result.output
    assert "16 id collisions" in result.output
    assert files_table(db) == {"scenario.json": (16, 16, 0, 0)}
    assert query(db, "SELECT count(*), count(DISTINCT event_uid), bool_and(id_collision) FROM events") == [
        (16, 16, True)
    ]
    assert query(db, "SELECT event_uid FROM events WHERE source_position = 0") == [("aws:1",)]
    # identity is the SHA-256 of the canonical record text, as anyone can recompute it
    assert query(db, "SELECT count(*) FROM events WHERE lower(hex(content_hash)) = sha256(raw::VARCHAR)") == [(16,)]
    # the same file again: not read, nothing changes; a copy under another name: all exact duplicates
    before = query(db, "SELECT * FROM events ORDER BY event_uid")
    rerun = runner.invoke(app, ["timeline", "ingest", str(scenario), "--db", str(db)], env={"COLUMNS": "250"})
    assert rerun.exit_code == 0, rerun.output
    sha256 = hashlib.sha256(scenario.read_bytes()).hexdigest()
    assert re.search(rf"scenario\.json\s.*already ingested.*{sha256[:16]}", rerun.output), rerun.output
    assert "0 records = 0 ingested" in rerun.output
    assert "1 files already ingested" in rerun.output
    again = ingest_paths(db, [scenario])
    assert (again.ingested, again.duplicates, again.unchanged) == (0, 0, 1)
    copy = tmp_path / "copy.json"
    copy.write_bytes(scenario.read_bytes().replace(b'", "', b'","'))  # other whitespace, same records
    assert ingest_paths(db, [copy]).duplicates == 16
    assert query(db, "SELECT * FROM events ORDER BY event_uid") == before
    # a 17th record with the same id: kept, flagged, and the earlier events stay flagged
    extra = tmp_path / "extra.jsonl"
    extra.write_bytes(jsonl([{**record(99), "eventID": "1"}, {**record(100), "eventID": "2"}]))
    stats = ingest_paths(db, [extra])
    assert (stats.ingested, stats.id_collisions) == (2, 1)
    assert query(db, "SELECT count(*) FILTER (id_collision), count(*) FROM events") == [(17, 18)]


def test_duplicates_and_collisions_with_events_of_an_earlier_run(tmp_path: Path) -> None:
    """Events of earlier runs have no content hash until their id is met again: it is computed from raw then."""
    db = tmp_path / "t.duckdb"
    first = tmp_path / "first.jsonl"
    first.write_bytes(jsonl([record(n) for n in range(3)]))
    assert ingest_paths(db, [first]).ingested == 3
    assert query(db, "SELECT count(*) FROM events WHERE content_hash IS NULL") == [(3,)]
    copy = tmp_path / "copy.json"  # the same records in the other shape: exact duplicates
    copy.write_text(json.dumps({"Records": [record(1), record(2)]}))
    stats = ingest_paths(db, [copy])
    assert (stats.ingested, stats.duplicates, stats.id_collisions) == (0, 2, 0)
    other = tmp_path / "other.jsonl"  # id-0 again with other content, and a new id
    other.write_bytes(jsonl([{**record(5), "eventID": "id-0"}, record(6)]))
    stats = ingest_paths(db, [other])
    assert (stats.ingested, stats.duplicates, stats.id_collisions) == (2, 0, 1)
    assert files_table(db) == {"first.jsonl": (3, 3, 0, 0), "copy.json": (2, 0, 2, 0), "other.jsonl": (2, 2, 0, 0)}
    assert query(
        db,
        "SELECT source_file LIKE '%first.jsonl', id_collision, lower(hex(content_hash)) = sha256(raw::VARCHAR) "
        "FROM events WHERE event_id = 'id-0' ORDER BY 1",
    ) == [(False, True, True), (True, True, True)]
    assert query(db, "SELECT count(*) FROM events WHERE id_collision") == [(2,)]


def test_invalid_utf8_is_kept_with_replacement_and_original_bytes(tmp_path: Path) -> None:
    lines = jsonl([record(0), record(1), record(2)]).replace(b"agent 1", b"agent \xff\xfe1")
    path = tmp_path / "latin.jsonl"
    path.write_bytes(lines)
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, [path])
    assert files_table(db) == {"latin.jsonl": (3, 3, 0, 0)}
    assert stats.repaired == 1
    assert query(db, "SELECT user_agent, source_position FROM events WHERE event_id = 'id-1'") == [
        ("agent \ufffd\ufffd1", 1)
    ]
    (reason, raw_hex, repaired, position) = query(
        db, "SELECT reason, raw_hex, repaired, source_position FROM quarantine"
    )[0]
    assert reason.startswith("invalid UTF-8 at byte ")
    assert bytes.fromhex(raw_hex) == lines.splitlines()[1]
    assert (repaired, position) == (True, 1)


def test_invalid_utf8_inside_a_records_document(tmp_path: Path) -> None:
    document = json.dumps({"Records": [record(n) for n in range(4)]}).encode().replace(b"agent 2", b"agent \xc32")
    path = tmp_path / "doc.json"
    path.write_bytes(document)
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [path])
    assert files_table(db) == {"doc.json": (4, 4, 0, 0)}
    assert query(db, "SELECT source_position, user_agent FROM events WHERE event_id = 'id-2'") == [(2, "agent \ufffd2")]


def test_an_oversized_line_is_quarantined_and_its_neighbours_kept(tmp_path: Path) -> None:
    huge = record(1, requestParameters={"padding": "x" * (reader.MAX_RECORD_BYTES + 10)})
    path = tmp_path / "huge.jsonl"
    path.write_bytes(jsonl([record(0), huge, record(2)]))
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [path])
    assert files_table(db) == {"huge.jsonl": (3, 2, 0, 1)}
    start = len(jsonl([record(0)]))
    [(position, reason)] = query(db, "SELECT source_position, reason FROM quarantine")
    assert position == 1
    assert reason in (
        f"record of more than {reader.MAX_RECORD_BYTES} bytes at byte {start}",  # DuckDB refused the file
        f"record of more than {reader.MAX_RECORD_BYTES} bytes (cloudtrail)",  # DuckDB read it
    )
    assert query(db, "SELECT list(source_position ORDER BY 1) FROM events") == [([0, 2],)]


def _complete_lines(data: bytes) -> int:
    """Independent oracle: complete lines in what a truncated gzip still yields."""
    return zlib.decompressobj(wbits=31).decompress(data).count(b"\n")


def test_truncated_gzip_keeps_every_record_before_the_break(tmp_path: Path) -> None:
    compressed = gzip.compress(jsonl([record(n) for n in range(400)]), mtime=0)
    cut = compressed[: len(compressed) // 2]
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(cut)
    kept = _complete_lines(cut)
    assert 0 < kept < 400
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [path])
    assert files_table(db) == {"cut.jsonl.gz": (kept + 1, kept, 0, 1)}
    [(position, reason)] = query(db, "SELECT source_position, reason FROM quarantine")
    decompressed = len(zlib.decompressobj(wbits=31).decompress(cut))
    assert position == kept
    assert reason == f"truncated gzip at byte {decompressed} of the decompressed data ({len(cut)} bytes compressed)"


def test_truncated_gzip_records_document(tmp_path: Path) -> None:
    compressed = gzip.compress(json.dumps({"Records": [record(n) for n in range(300)]}).encode(), mtime=0)
    cut = compressed[: len(compressed) * 2 // 3]
    path = tmp_path / "cut.json.gz"
    path.write_bytes(cut)
    text = zlib.decompressobj(wbits=31).decompress(cut).decode()
    kept = len(re.findall(r'"userAgent": "agent \d+"}', text))  # the last key: records complete before the break
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [path])
    assert files_table(db) == {"cut.json.gz": (kept + 1, kept, 0, 1)}
    assert query(db, "SELECT source_position, starts_with(reason, 'truncated gzip at byte') FROM quarantine") == [
        (kept, True)
    ]


@pytest.mark.parametrize("first", [True, False], ids=["deep-first-line", "deep-middle-line"])
def test_over_deep_records_are_quarantined_with_position(tmp_path: Path, first: bool) -> None:
    deep = json.dumps(record(1, requestParameters="DEEP")).replace('"DEEP"', "[" * 1000 + "]" * 1000)
    lines = [json.dumps(record(0)), json.dumps(record(2))]
    lines.insert(0 if first else 1, deep)
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [path])
    assert files_table(db) == {"deep.jsonl": (3, 2, 0, 1)}
    assert query(db, "SELECT source_position, reason FROM quarantine") == [
        (0 if first else 1, f"nested deeper than {reader.MAX_DEPTH} levels (cloudtrail)")
    ]


def test_records_that_is_not_a_list_gets_a_quarantine_row(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"Records": "x"}')
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, [path])
    assert (stats.records, stats.quarantined) == (1, 1)
    assert files_table(db) == {"x.json": (1, 0, 0, 1)}
    assert query(db, "SELECT source_position, reason FROM quarantine") == [(0, "unrecognized record (keys: Records)")]


def test_file_names_are_never_patterns(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    names = ["a*.json", "a?.json", "a[1].json", "a1.json", "ab.json"]
    for number, name in enumerate(names):
        (logs / name).write_text(json.dumps({"Records": [record(number)]}))
    (logs / "b*.jsonl").write_bytes(jsonl([record(10), record(11)]))
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, [logs])
    assert (stats.ingested, stats.duplicates, stats.quarantined) == (7, 0, 0)
    assert files_table(db) == dict.fromkeys(names, (1, 1, 0, 0)) | {"b*.jsonl": (2, 2, 0, 0)}
    found = query(db, "SELECT source_file, source_position, event_id FROM events ORDER BY event_id")
    assert sorted((Path(f).name, p, e) for f, p, e in found) == sorted(
        [(name, 0, f"id-{n}") for n, name in enumerate(names)] + [("b*.jsonl", 0, "id-10"), ("b*.jsonl", 1, "id-11")]
    )


def test_a_file_that_is_not_a_timeline_is_refused_as_db(tmp_path: Path) -> None:
    logs = tmp_path / "log.jsonl"
    logs.write_bytes(jsonl([record(0)]))
    target = tmp_path / "existing.json"
    target.write_text(json.dumps({"Records": [record(1)]}))
    before = target.read_bytes()
    result = runner.invoke(app, ["timeline", "ingest", str(logs), "--db", str(target)])
    assert result.exit_code != 0
    assert "not a timeline database" in result.output
    assert target.read_bytes() == before
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE findings (x INTEGER)")
    result = runner.invoke(app, ["timeline", "ingest", str(logs), "--db", str(other)])
    assert result.exit_code != 0
    assert "without an events table" in result.output


def test_a_large_document_is_split_by_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "SPLIT_BYTES", 4096)  # the same path a 2 GB CloudTrail document takes
    monkeypatch.setattr(reader, "CHUNK_BYTES", 1000)  # records cross buffer refills
    records = [record(n) for n in range(60)]
    records[30]["userAgent"] = "é" * 700  # multi-byte characters across chunk boundaries
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"Records": records}, indent=2))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"Records": records}).replace('"eventID": "id-40"', '"eventID" "id-40"'))
    array = tmp_path / "array.json"
    array.write_text(json.dumps(records[:50]))
    db = tmp_path / "t.duckdb"
    result = runner.invoke(app, ["timeline", "ingest", str(path), str(broken), str(array), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert files_table(db) == {"big.json": (60, 60, 0, 0), "broken.json": (41, 0, 40, 1), "array.json": (50, 0, 50, 0)}
    assert query(db, "SELECT user_agent, source_position FROM events WHERE event_id = 'id-30'") == [("é" * 700, 30)]
    [(position, reason)] = query(db, "SELECT source_position, reason FROM quarantine")
    assert position == 40
    assert reason.startswith("not valid JSON: Expecting ':' delimiter at byte ")


def test_memory_limit_option(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(jsonl([record(0)]))
    db = tmp_path / "t.duckdb"
    result = runner.invoke(app, ["timeline", "ingest", str(path), "--db", str(db), "--memory-limit", "12KB"])
    assert result.exit_code != 0
    result = runner.invoke(app, ["timeline", "ingest", str(path), "--db", str(db), "--memory-limit", "600MB"])
    assert result.exit_code == 0, result.output


def _lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key.lower(): _lower_keys(item) for key, item in value.items()}
    return value


def test_lower_cased_key_exports_and_operation_names(tmp_path: Path) -> None:
    export = tmp_path / "athena-export.jsonl"
    lowered = _lower_keys(record(1, eventID="lc-1"))  # eventname, useridentity.arn, ... (Athena / Glue exports)
    spaced = record(2, eventName="  GetObject \t")
    export.write_bytes(jsonl([lowered, spaced, {"eventname": "x"}]))
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, [export])
    assert (stats.ingested, stats.quarantined) == (2, 1)
    assert files_table(db) == {"athena-export.jsonl": (3, 2, 0, 1)}
    assert query(
        db, "SELECT event_id, source_format, service, operation, operation_original, actor FROM events ORDER BY 1"
    ) == [
        ("id-2", "cloudtrail", "s3", "GetObject", "  GetObject \t", "arn:aws:iam::111122223333:user/u2"),
        ("lc-1", "cloudtrail", "s3", "GetObject", None, "arn:aws:iam::111122223333:user/u1"),
    ]
    assert query(db, "SELECT source_position, reason FROM quarantine") == [(2, "unrecognized record (keys: eventname)")]


def test_a_file_of_lower_cased_records_alone_keeps_every_field(tmp_path: Path) -> None:
    """Every record of the file lower-cased (nothing else beside them): each is mapped as when mixed with others."""
    export = tmp_path / "athena-only.jsonl"
    export.write_bytes(jsonl([_lower_keys(record(i, eventID=f"lc-{i}")) for i in (1, 2)]))
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, [export])
    assert (stats.ingested, stats.quarantined) == (2, 0)
    assert query(db, "SELECT event_id, operation, actor, time IS NOT NULL FROM events ORDER BY 1") == [
        ("lc-1", "GetObject", "arn:aws:iam::111122223333:user/u1", True),
        ("lc-2", "GetObject", "arn:aws:iam::111122223333:user/u2", True),
    ]


def test_a_timeline_of_an_earlier_version_is_migrated(tmp_path: Path) -> None:
    first = tmp_path / "first.jsonl"
    first.write_bytes(jsonl([record(1)]))
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [first])
    with duckdb.connect(str(db)) as con:  # as an earlier cloudir wrote it: a 64-bit hash, no operation_original
        con.execute("DROP INDEX events_actor")
        con.execute("ALTER TABLE events DROP COLUMN operation_original")
        con.execute("ALTER TABLE events ALTER content_hash SET DATA TYPE UBIGINT USING hash(raw::VARCHAR)")
        con.execute("CREATE INDEX events_actor ON events (actor)")
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(jsonl([record(1), record(2)]))
    stats = ingest_paths(db, [copy])
    assert (stats.ingested, stats.duplicates) == (1, 1)
    assert query(db, "SELECT event_id, content_hash FROM events ORDER BY 1") == [("id-1", None), ("id-2", None)]
    # an id collision with the migrated event: both hashed with SHA-256, both flagged
    collide = tmp_path / "collide.jsonl"
    collide.write_bytes(jsonl([{**record(3), "eventID": "id-1"}]))
    assert ingest_paths(db, [collide]).id_collisions == 1
    assert query(
        db, "SELECT count(*) FROM events WHERE id_collision AND lower(hex(content_hash)) = sha256(raw::VARCHAR)"
    ) == [(2,)]


def test_lookup_events_one_per_line(tmp_path: Path) -> None:
    lines = tmp_path / "lookup-events.jsonl"
    events = [
        {"EventId": f"id-{n}", "EventName": "GetObject", "CloudTrailEvent": json.dumps(record(n))} for n in range(2)
    ]
    events.append({"EventId": "id-9", "EventName": "GetObject", "CloudTrailEvent": "{not json"})
    lines.write_bytes(jsonl(events))
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [lines])
    assert files_table(db) == {"lookup-events.jsonl": (3, 2, 0, 1)}
    assert query(db, "SELECT event_id, source_position FROM events ORDER BY 1") == [("id-0", 0), ("id-1", 1)]
    assert query(db, "SELECT source_position, reason FROM quarantine") == [
        (2, "unrecognized record (keys: EventId, EventName, CloudTrailEvent)")
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["document", "streamed-document"])
def test_an_over_deep_record_in_a_records_document_keeps_its_neighbours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    if streamed:  # the path of documents too large to hold: split record by record by the careful reader
        monkeypatch.setattr(ingest, "SPLIT_BYTES", 100)
    deep = json.dumps(record(1, requestParameters="DEEP")).replace('"DEEP"', '[{"a": "]"}, ' + "[" * 1000 + "]" * 1001)
    path = tmp_path / "deep.json"
    path.write_text('{"Records": [' + ", ".join([json.dumps(record(0)), deep, json.dumps(record(2))]) + "]}")
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [path])
    assert files_table(db) == {"deep.json": (3, 2, 0, 1)}
    assert query(db, "SELECT source_position, reason LIKE 'nested deeper than 64 levels%' FROM quarantine") == [
        (1, True)
    ]
    assert query(db, "SELECT list(source_position ORDER BY 1) FROM events") == [([0, 2],)]


def test_records_files_and_lookup_event_pages_through_timeline_build(tmp_path: Path) -> None:
    """60 S3 delivery files and 2,000 LookupEvents pages (the collector's layout) in one case, as a responder builds it.

    The sizes that ran out of memory (60 files of 5,000 records) are the ingest benchmark's (1M events in files of
    5,000); here 100 records a file keep the suite fast. The same event in both shapes is one event.
    """
    from cloudir.case import Case

    case = Case.create(tmp_path / "case")
    with case.action("logs.pull"):
        for number in range(60):
            records = [record(n % 3_600, eventID=f"id-{n}") for n in range(number * 100, (number + 1) * 100)]
            document = json.dumps({"Records": records}).encode()
            case.write_bytes(f"logs/aws/s3/part-{number:02d}.json.gz", gzip.compress(document, mtime=0))
        for page in range(2_000):
            events = [
                {"EventId": f"lookup-{page}", "CloudTrailEvent": json.dumps(record(page, eventID=f"lookup-{page}"))},
                {"EventId": "id-7", "CloudTrailEvent": json.dumps(record(7))},  # also in part-00.json.gz
            ]
            case.write_json(f"logs/aws/lookup-events/page-{page:05d}.json", {"Events": events, "NextToken": "t"})
    result = runner.invoke(app, ["timeline", "build", str(case.root)])
    assert result.exit_code == 0, result.output
    assert "10000 records = 8000 ingested + 2000 duplicate + 0 quarantined" in result.output
    assert "0 id collisions" in result.output
    table = files_table(case.root / "timeline.duckdb")
    assert len(table) == 2_060
    # files are read in path order: the lookup-events pages first
    assert table.pop("part-00.json.gz") == (100, 99, 1, 0)
    assert {table[f"part-{n:02d}.json.gz"] for n in range(1, 60)} == {(100, 100, 0, 0)}
    assert table.pop("page-00000.json") == (2, 2, 0, 0)
    assert {table[f"page-{p:05d}.json"] for p in range(1, 2_000)} == {(2, 1, 1, 0)}
    assert query(case.root / "timeline.duckdb", "SELECT source_file FROM events WHERE event_id = 'id-7'") == [
        ("logs/aws/lookup-events/page-00000.json",)
    ]
