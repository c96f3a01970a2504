"""Everything a report shows, read from a case folder: custody, verification, timeline, findings, coverage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from cloudir.case import CASE_FILE, TIMELINE_DB
from cloudir.custody import CUSTODY_FILE, VerifyResult, calls_in, read_records, verify_case
from cloudir.errors import CloudirError
from cloudir.report.story import Story, build_story

MAX_ACTORS = 15
BUCKETS = 60


@dataclass
class ActivityChart:
    """Event counts per actor and time bucket, and findings placed on the same grid."""

    start: float  # epoch seconds
    end: float
    bucket_seconds: float
    actors: list[str]
    cells: list[tuple[str, float, int, bool]]  # (actor, bucket start epoch, events, any responder event)
    marks: list[tuple[str, float, int, str]]  # (actor, epoch, score, title)


@dataclass(frozen=True)
class BeaconSeries:
    """A beacon's connections to one destination over time (hour buckets), for the report's network view."""

    dst_addr: str
    dst_port: int
    period: float  # seconds between check-ins
    first: float  # epoch seconds
    last: float
    hours: list[tuple[float, int]]  # (bucket start, connections)


@dataclass
class ReportData:
    """The facts in a report; every string in here may be attacker-controlled and must be escaped."""

    case_dir: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]
    verification: VerifyResult
    triggers: list[dict[str, Any]] = field(default_factory=list)
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: int | None = None  # None: no timeline in the case
    event_range: tuple[str, str] | None = None
    chart: ActivityChart | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)  # logs/<source>/coverage.json contents
    story: Story = field(default_factory=Story)
    cited_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> the event the story cites
    beacons: dict[str, BeaconSeries] = field(default_factory=dict)  # finding id -> its connections over time

    @property
    def evidence(self) -> list[dict[str, Any]]:
        """Newest recorded hash per artifact path, with the record that wrote it."""
        latest: dict[str, dict[str, Any]] = {}
        for record in self.records:
            for artifact in record["artifacts"]:
                latest[artifact["path"]] = {**artifact, "seq": record["seq"], "action": record["action"]}
        return sorted(latest.values(), key=lambda a: str(a["path"]))

    @property
    def actions(self) -> list[dict[str, Any]]:
        """The tool's own actions (custody records)."""
        return self.records

    @property
    def api_call_count(self) -> int:
        """Cloud API calls the tool made into this case."""
        return sum(calls_in(call) for record in self.records for call in record["api_calls"])


def load_report_data(case_dir: Path) -> ReportData:
    """Read a case folder; the timeline parts are empty when there is no ``timeline.duckdb``."""
    if not (case_dir / CUSTODY_FILE).is_file() or not (case_dir / CASE_FILE).is_file():
        raise CloudirError(f"{case_dir} is not a cloudir case (no {CASE_FILE} / {CUSTODY_FILE})")
    records = read_records(case_dir / CUSTODY_FILE)
    data = ReportData(
        case_dir=case_dir,
        meta=json.loads((case_dir / CASE_FILE).read_text(encoding="utf-8")),
        records=records,
        verification=verify_case(case_dir),
    )
    for path in sorted((case_dir / "triggers").glob("*.json")):
        data.triggers.append(json.loads(path.read_text(encoding="utf-8")))
    for record in records:
        if record["action"].startswith("response.") and "finding_id" in record["details"]:
            data.responses[record["details"]["finding_id"]] = record
    for path in sorted(case_dir.glob("logs/*/coverage.json")):
        data.coverage[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    db_path = case_dir / TIMELINE_DB
    if db_path.is_file():
        con = duckdb.connect(str(db_path), read_only=True)
        try:
            _load_timeline(con, data)
        finally:
            con.close()
    else:
        data.story = build_story(None, set(), records, data.coverage)
    return data


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _load_timeline(con: duckdb.DuckDBPyConnection, data: ReportData) -> None:
    tables = _tables(con)
    if "events" not in tables:
        data.story = build_story(con, set(), data.records, data.coverage)
        return
    count, first, last = con.execute("SELECT count(*), min(time), max(time) FROM events").fetchone() or (0, None, None)
    data.events = int(count)
    if first is not None and last is not None:
        data.event_range = (f"{first:%Y-%m-%d %H:%M:%S}Z", f"{last:%Y-%m-%d %H:%M:%S}Z")
    if "findings" in tables:
        data.findings = _rows(
            con,
            "SELECT finding_id, analyzer, rule, score, severity, actor, session, first_time, last_time, title, "
            "explanation, mitre, coalesce(event_count, len(event_ids)) AS event_count, incident_id FROM findings "
            "ORDER BY score DESC, first_time, finding_id",
        )
    if "findings" in tables and "network_beacons" in tables:
        data.beacons = _beacon_series(con)
    if "incidents" in tables:
        data.incidents = _rows(
            con,
            "SELECT incident_id, score, severity, identity, sessions, first_time, last_time, finding_count, "
            "analyzers, mitre, title FROM incidents ORDER BY score DESC, first_time, incident_id",
        )
    if data.events:
        data.chart = _chart(con, "findings" in tables)
    data.story = build_story(con, tables, data.records, data.coverage)
    cited = list(dict.fromkeys(e for section in data.story.sections for s in section.sentences for e in s.events))
    if cited:
        rows = _rows(
            con,
            "SELECT DISTINCT ON (event_id) event_id, time, cloud, account, region, operation, actor, source_ip, "
            "status, source_file, source_position FROM events WHERE list_contains(?, event_id) "
            "ORDER BY event_id, time",
            [cited],
        )
        by_id = {row["event_id"]: row for row in rows}
        data.cited_events = {event_id: by_id[event_id] for event_id in cited if event_id in by_id}


def _beacon_series(con: duckdb.DuckDBPyConnection) -> dict[str, BeaconSeries]:
    """Each network beacon finding's connections per hour to its destination, from ``network_beacons``."""
    rows = con.execute(
        """
        SELECT f.finding_id, b.dst_addr, b.dst_port, b.period, epoch(b.first_time), epoch(b.last_time),
               [(epoch(p.hour), p.connections) FOR p IN b.series]
        FROM findings f JOIN network_beacons b
          ON f.rule = 'flow-beacon' AND f.actor = b.workload
         AND json_extract_string(f.profile, '$.op_key')
             = 'flow:' || b.dst_addr || ':' || b.dst_port || '/' || b.protocol
        ORDER BY f.finding_id
        """
    ).fetchall()
    return {
        str(fid): BeaconSeries(
            str(addr), int(port), float(period), float(t0), float(t1), [(float(h), int(n)) for h, n in series or []]
        )
        for fid, addr, port, period, t0, t1, series in rows
    }


def _chart(con: duckdb.DuckDBPyConnection, with_findings: bool) -> ActivityChart:
    start, end = con.execute("SELECT epoch(min(time)), epoch(max(time)) FROM events").fetchone() or (0.0, 0.0)
    bucket = max((float(end) - float(start)) / BUCKETS, 1.0)
    finding_actors = (
        "UNION SELECT actor, 1e12 AS n FROM findings WHERE actor IS NOT NULL AND score >= 40" if with_findings else ""
    )
    actors = [
        row[0]
        for row in con.execute(
            f"""
            SELECT actor, max(n) AS n FROM (
                SELECT actor, count(*) AS n FROM events WHERE actor IS NOT NULL GROUP BY actor
                {finding_actors}
            ) GROUP BY actor ORDER BY n DESC, actor LIMIT {MAX_ACTORS}
            """
        ).fetchall()
    ]
    cells = [
        (str(r[0]), float(r[1]), int(r[2]), bool(r[3]))
        for r in con.execute(
            """
            SELECT actor, ? + floor((epoch(time) - ?) / ?) * ? AS bucket, count(*), bool_or(is_responder)
            FROM events WHERE list_contains(?, actor) GROUP BY ALL ORDER BY 1, 2
            """,
            [start, start, bucket, bucket, actors],
        ).fetchall()
    ]
    marks: list[tuple[str, float, int, str]] = []
    if with_findings:
        marks = [
            (str(r[0]), float(r[1]), int(r[2]), str(r[3]))
            for r in con.execute(
                """
                SELECT actor, epoch(first_time), score, title FROM findings
                WHERE list_contains(?, actor) AND first_time IS NOT NULL ORDER BY score DESC LIMIT 200
                """,
                [actors],
            ).fetchall()
        ]
    return ActivityChart(float(start), float(end), bucket, actors, cells, marks)
