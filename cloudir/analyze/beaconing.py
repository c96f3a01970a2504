"""Beaconing: activity on a regular period (allowing jitter and missed beats) that the baseline did not have."""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta, table_exists

META = AnalyzerMeta(
    name="beaconing",
    description=(
        "Groups incident-window activity by channel (identity + user-agent family; for VPC flow "
        "logs source -> destination:port), collapses calls less than 2 s apart into one beat, and scores how "
        "many intervals are a whole multiple of the median period within 15 % (missed beats allowed) and how "
        "constant the sizes are. Channels already periodic in the baseline are ignored."
    ),
    mitre=("T1071", "T1029"),
    default_weight=0.8,
)

MIN_BEATS = 10
JITTER = 0.15
MAX_MISSED_PER_BEAT = 1.0
"""A channel is periodic only if at least half of the expected beats are present (missed <= observed intervals):
a few calls scattered over days fit almost any period with thousands of "missed" beats."""
FLOW_TABLE = "flow_logs"
"""Optional table of VPC flow records: time, src_addr, dst_addr, dst_port, bytes."""


def _beacon_sql(source: str, label: str) -> str:
    """Candidates from a relation ``source`` with columns key, identity, actor, event_id, time, size, in_incident."""
    return f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids)
        WITH src AS ({source}),
        gaps AS (
            SELECT *, epoch(time) - epoch(lag(time) OVER (PARTITION BY key, in_incident ORDER BY time)) AS gap
            FROM src
        ),
        beats AS (SELECT * FROM gaps WHERE gap IS NULL OR gap > 2),
        deltas AS (
            SELECT key, in_incident, size,
                   epoch(time) - epoch(lag(time) OVER (PARTITION BY key, in_incident ORDER BY time)) AS d
            FROM beats
        ),
        periods AS (
            SELECT key, in_incident, median(d) AS period, count(d) AS n,
                   coalesce(stddev_pop(size) / nullif(avg(size), 0), 0) AS size_cv
            FROM deltas WHERE d IS NOT NULL GROUP BY ALL HAVING count(d) >= {MIN_BEATS}
        ),
        regularity AS (
            SELECT key, in_incident, any_value(period) AS period, any_value(n) AS n, any_value(size_cv) AS size_cv,
                   avg(CASE WHEN abs(d / period - greatest(round(d / period), 1)) / greatest(round(d / period), 1)
                            <= {JITTER} THEN 1.0 ELSE 0.0 END) AS regular,
                   sum(greatest(round(d / period), 1)) - count(*) AS missed
            FROM deltas JOIN periods USING (key, in_incident)
            WHERE d IS NOT NULL AND period BETWEEN 10 AND 21600
            GROUP BY ALL
        ),
        known AS (SELECT key FROM regularity WHERE NOT in_incident AND regular >= 0.6),
        events AS (
            SELECT key, any_value(actor) AS actor, any_value(identity) AS identity, min(time) AS t0,
                   max(time) AS t1, list(event_id ORDER BY time) AS ids
            FROM src WHERE in_incident GROUP BY key
        )
        SELECT 'beaconing', '{label}',
               least(95, 100 * (regular - 0.5) * 2 * CASE WHEN size_cv <= 0.2 THEN 1.0 ELSE 0.8 END),
               e.actor, e.identity, NULL, e.t0, e.t1,
               'Periodic activity every ' || CAST(round(period) AS BIGINT) || ' s: ' || r.key,
               round(100 * regular) || '% of ' || n || ' intervals are whole multiples of '
                   || CAST(round(period) AS BIGINT)
                   || ' s (within {int(JITTER * 100)} %), ' || CAST(missed AS BIGINT) || ' missed beats; '
                   || 'size variation ' || round(100 * size_cv) || '%; this channel was not periodic in the baseline',
               ['T1071', 'T1029'], e.ids[1:{MAX_EVENT_IDS}]
        FROM regularity r JOIN events e USING (key)
        WHERE r.in_incident AND regular >= 0.7 AND missed <= {MAX_MISSED_PER_BEAT} * n
          AND r.key NOT IN (SELECT key FROM known)
    """


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Insert candidates for periodic API channels and, when a flow-log table exists, periodic flows."""
    con.execute(
        _beacon_sql(
            "SELECT identity || ' via ' || ua_family AS key, identity, "
            "actor, event_id, time, 1.0 AS size, in_incident FROM ev WHERE NOT aws_service",
            "api-beacon",
        )
    )
    if table_exists(con, FLOW_TABLE):
        con.execute(
            _beacon_sql(
                f"SELECT src_addr || ' -> ' || dst_addr || ':' || dst_port AS key, src_addr AS identity, "
                f"src_addr AS actor, CAST(NULL AS VARCHAR) AS event_id, time, CAST(bytes AS DOUBLE) AS size, "
                f"time >= (SELECT min(time) FROM ev WHERE in_incident) AS in_incident FROM {FLOW_TABLE}",
                "flow-beacon",
            )
        )
