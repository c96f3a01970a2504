"""Detectors keep within DuckDB's memory limit on a timeline far larger than it: event-id lists (aggregate state
held in memory) are built only for what becomes a finding, never one per channel, bucket or day of every identity."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from cloudir.analyze import beaconing
from cloudir.analyze.base import CANDIDATES_DDL, AnalysisWindow
from cloudir.analyze.prepare import attach_work, build_event_view
from cloudir.timeline.schema import EVENTS_DDL

EVENTS = 100_000
START = datetime(2026, 1, 1)


def _busy_timeline(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    """``ev`` of 100,000 calls by 10 identities within one day, all in the incident window, each with a long event
    id (236 characters): about 24 MB of event ids, against a memory limit of 32 MiB."""
    con = duckdb.connect(str(tmp_path / "timeline.duckdb"))
    con.execute(EVENTS_DDL)
    con.execute(
        """
        INSERT INTO events (event_uid, time, cloud, source_format, account, region, service, operation, actor,
                            actor_type, session, source_ip, user_agent, status, event_id, read_only, raw)
        SELECT 'aws:' || id, $start + to_seconds(i * 86400.0 / $n), 'aws', 'cloudtrail', '111111111111', 'eu-west-1',
               'ec2', 'Describe' || (i % 7) || 'Things', 'arn:aws:iam::111111111111:user/u' || (i % 10), 'IAMUser',
               'AKIA' || (i % 10), '198.51.100.7', 'aws-cli/2.15.0', 'success', id, true, '{}'
        FROM (SELECT i, uuid()::VARCHAR || repeat('0', 200) AS id FROM range($n) t(i))
        """,
        {"n": EVENTS, "start": START},
    )
    attach_work(con, tmp_path / "work.duckdb")
    build_event_view(con, AnalysisWindow(START, START))
    con.execute(CANDIDATES_DDL)
    con.execute("SET threads = 1")  # one thread: the memory a statement needs does not depend on the machine
    con.execute(f"SET temp_directory = '{tmp_path / 'spill'}'")
    con.execute("SET memory_limit = '32MiB'")
    return con


def test_api_beaconing_lists_events_only_of_periodic_channels(tmp_path: Path) -> None:
    # the code before listed every incident event of every (identity, client) channel: out of memory here
    with _busy_timeline(tmp_path) as con:
        beaconing.run(con)
        # a call every 8.6 s on each channel: under the shortest period, no beacon
        assert con.execute("SELECT count(*) FROM candidates").fetchone() == (0,)
