"""Reconnaissance bursts: many distinct List/Describe/Get calls, or many authorization failures, in minutes."""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta
from cloudir.analyze.novelty import TENANT_MIN_IDENTITIES

META = AnalyzerMeta(
    name="recon_burst",
    description=(
        "Per identity and 10-minute window of the incident period: at least 10 distinct read/enumeration "
        "operations (List*, Describe*, Get*, Search*, Lookup*, list/get/read verbs), or at least 5 "
        "AccessDenied / Unauthorized / Forbidden failures. Lowered when the identity's baseline already has "
        "bursts of that size (infrastructure-as-code plans, inventory jobs); an identity without a baseline is "
        "compared with a typical identity's largest burst."
    ),
    mitre=("T1580", "T1526", "T1087.004", "T1069.003"),
    default_weight=1.0,
)

WINDOW_MINUTES = 10
MIN_DISTINCT_RECON = 10
MIN_FAILURES = 5
CONSOLE_FACTOR = 0.5
"""An enumeration burst made (80 % of its calls or more) through the AWS console scores this much: a console page
load issues dozens of Describe calls."""

_RECON = (
    r"regexp_matches(operation, '(^|[./])(List|Describe|Get|Search|Lookup|list|get|aggregatedList|"
    r"search)[A-Z]?[A-Za-z]*$|/read$', 'i')"
)
_DENIED = (
    "regexp_matches(coalesce(error_code, ''), "
    "'AccessDenied|Unauthorized|Forbidden|AuthorizationFailed|PERMISSION_DENIED|NotAuthorized|^7$|^403$', 'i')"
)


def run(con: duckdb.DuckDBPyConnection, *, tenant: bool) -> None:
    """Insert candidates for enumeration bursts and failure bursts.

    Without a baseline (``tenant``) the yardstick is the median identity's largest burst over the whole timeline,
    when there are enough identities to compare with."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE recon_buckets AS
        SELECT identity, in_incident, time_bucket(INTERVAL '{WINDOW_MINUTES} minutes', time) AS bucket,
               count(DISTINCT CASE WHEN {_RECON} THEN op_key END) AS distinct_recon,
               count(*) FILTER (WHERE {_DENIED}) AS denied,
               min(actor) AS actor, min(time) AS t0, max(time) AS t1,
               avg(CASE WHEN ua_family = 'aws-console' THEN 1 ELSE 0 END) >= 0.8 AS console,
               CASE WHEN min(session) = max(session) THEN min(session) END AS session
        FROM ev WHERE NOT aws_service GROUP BY ALL
        """
    )
    # the event lists only for the incident buckets that reach a threshold: a list per bucket of every identity
    # (about one bucket per event on a large estate) is aggregate state DuckDB cannot spill
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE recon_evidence AS
        SELECT b.identity, b.bucket,
               list(e.event_id ORDER BY e.time, e.event_id) FILTER (WHERE {_RECON}) AS recon_ids,
               list(e.event_id ORDER BY e.time, e.event_id) FILTER (WHERE {_DENIED}) AS denied_ids,
               list(DISTINCT e.op_key ORDER BY e.op_key) FILTER (WHERE {_DENIED}) AS denied_ops
        FROM (SELECT identity, bucket FROM recon_buckets
              WHERE in_incident AND (distinct_recon >= {MIN_DISTINCT_RECON} OR denied >= {MIN_FAILURES})) b
        JOIN ev e ON e.identity = b.identity AND time_bucket(INTERVAL '{WINDOW_MINUTES} minutes', e.time) = b.bucket
        WHERE e.in_incident AND NOT e.aws_service
        GROUP BY b.identity, b.bucket
        """
    )
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, event_count)
        WITH base AS (
            SELECT identity, max(distinct_recon) AS max_recon, max(denied) AS max_denied
            FROM recon_buckets WHERE NOT in_incident GROUP BY identity
        ),
        everyone AS (
            SELECT identity, max(distinct_recon) AS max_recon, max(denied) AS max_denied
            FROM recon_buckets GROUP BY identity
        ),
        org AS (  -- what a typical identity's largest burst is: the yardstick for identities without a baseline
            SELECT coalesce(median(max_recon), 0) AS max_recon, coalesce(median(max_denied), 0) AS max_denied
            FROM base WHERE NOT {tenant}
            UNION ALL
            SELECT median(max_recon), median(max_denied) FROM everyone
            WHERE {tenant} HAVING count(*) > {TENANT_MIN_IDENTITIES}
            UNION ALL
            SELECT 0, 0 WHERE {tenant} AND (SELECT count(*) FROM everyone) <= {TENANT_MIN_IDENTITIES}
        ),
        bursts AS (
            SELECT b.*, x.recon_ids, x.denied_ids, x.denied_ops, coalesce(base.max_recon, org.max_recon) AS max_recon,
                   coalesce(base.max_denied, org.max_denied) AS max_denied,
                   CASE WHEN base.identity IS NOT NULL THEN 'this identity in the baseline'
                        WHEN {tenant} THEN 'a typical identity over the timeline'
                        ELSE 'a typical identity in the baseline' END AS yardstick
            FROM recon_buckets b JOIN recon_evidence x USING (identity, bucket) LEFT JOIN base USING (identity)
            CROSS JOIN org WHERE b.in_incident
        )
        SELECT 'recon_burst', 'enumeration-burst',
               least(90, 30 + 3 * distinct_recon)
                   * CASE WHEN max_recon >= 0.7 * distinct_recon THEN 0.3
                          WHEN max_recon >= 0.4 * distinct_recon THEN 0.6 ELSE 1 END
                   * CASE WHEN console THEN {CONSOLE_FACTOR} ELSE 1 END,
               actor, identity, session, t0, t1,
               'Enumeration burst: ' || distinct_recon || ' distinct read operations by ' || identity,
               distinct_recon || ' distinct List/Describe/Get operations within {WINDOW_MINUTES} minutes'
                   || CASE WHEN console THEN ' through the AWS console (page loads)' ELSE '' END
                   || '; largest burst of ' || yardstick || ': ' || max_recon,
               ['T1580', 'T1526'], recon_ids[1:{MAX_EVENT_IDS}], len(recon_ids)
        FROM bursts WHERE distinct_recon >= {MIN_DISTINCT_RECON}
        UNION ALL
        SELECT 'recon_burst', 'failure-burst',
               least(90, 25 + 3 * denied)
                   * CASE WHEN max_denied >= 0.7 * denied THEN 0.3
                          WHEN max_denied >= 0.4 * denied THEN 0.6 ELSE 1 END,
               actor, identity, session, t0, t1,
               'Authorization failure burst: ' || denied || ' denied calls by ' || identity,
               denied || ' AccessDenied/Unauthorized failures within {WINDOW_MINUTES} minutes on '
                   || array_to_string(denied_ops[1:5], ', ')
                   || '; largest failure burst of ' || yardstick || ': ' || max_denied,
               ['T1580', 'T1087.004'], denied_ids[1:{MAX_EVENT_IDS}], len(denied_ids)
        FROM bursts WHERE denied >= {MIN_FAILURES}
        """
    )
    con.execute("DROP TABLE recon_buckets")
    con.execute("DROP TABLE recon_evidence")
