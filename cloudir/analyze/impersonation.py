"""Calls impersonating the responder tool: cloudir's user agent on a call the case's custody log never made.

The tool's own calls are recognised only by the request ids its custody log recorded; a user agent is text the
caller chooses. An attacker who writes ``cloudir/<version>`` into theirs hopes to be skipped: here they are
scored instead.
"""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta

META = AnalyzerMeta(
    name="responder_impersonation",
    description=(
        "Per identity: calls (baseline or incident period) whose user agent claims to be cloudir "
        "(`cloudir/`) but whose request id the case's custody log did not record. The tool's own calls are "
        "excluded by request id only, so a caller borrowing its user agent is reported rather than hidden; "
        "higher when the calls change things."
    ),
    mitre=("T1036", "T1562"),
    default_weight=1.0,
)

RESPONDER_AGENT = "cloudir/"


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Insert one candidate per identity whose calls carry the tool's user agent without a recorded request id."""
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids)
        SELECT '{META.name}', 'responder-user-agent-without-request-id',
               CASE WHEN count(*) FILTER (WHERE NOT coalesce(read_only, false)) > 0 THEN 85 ELSE 65 END,
               min(actor), identity,
               CASE WHEN count(DISTINCT session) = 1 THEN any_value(session) END,
               min(time), max(time),
               'Calls impersonating the responder tool by ' || identity,
               count(*) || ' calls carry the cloudir user agent but none of their request ids was recorded in '
                   || 'the case''s custody log (' || count(*) FILTER (WHERE NOT coalesce(read_only, false))
                   || ' change something: ' || array_to_string(list(DISTINCT operation ORDER BY operation)[1:5], ', ')
                   || ')',
               ['T1036'], list(event_id ORDER BY time, event_id)[1:{MAX_EVENT_IDS}]
        FROM ev
        WHERE contains(coalesce(user_agent, ''), '{RESPONDER_AGENT}')
        GROUP BY identity
        """
    )
