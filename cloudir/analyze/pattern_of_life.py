"""Pattern of life: what an identity did in the incident window that it (and its peers) rarely or never did."""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta
from cloudir.analyze.novelty import label_factor
from cloudir.analyze.prepare import PROFILE_DIMENSIONS

META = AnalyzerMeta(
    name="pattern_of_life",
    description=(
        "For each identity and day of the incident window, the operations, services, regions, /24 networks, "
        "user-agent families, times of day and accounts that were RARE or UNSEEN in its baseline, weighed by "
        "how usual they are for its peer group (or the organisation for a new identity). AWS services acting "
        "for the account are not profiled."
    ),
    mitre=("T1078.004",),
    default_weight=1.0,
)

DIMENSION_WEIGHT: dict[str, float] = {
    "operation": 0.30,
    "service": 0.30,
    "region": 0.30,
    "network": 0.20,
    "user agent": 0.35,
    "time of day": 0.15,
    "account": 0.35,
}
"""Probability-like weight of one UNSEEN value in each dimension; a day's score combines the dimensions."""

CONTEXT_DIMENSIONS = ("network", "user agent", "account")
USUAL_CONTEXT_FACTOR = 0.6
"""A day whose novelties are all in what was done, none in where from or with what tool, scores lower."""
CONTEXT_SQL = ", ".join(f"'{dim}'" for dim in CONTEXT_DIMENSIONS)
VALUES_SAID = 2
"""The explanation names the two most novel values of each dimension (where from and with what first) and counts
the rest; the finding's ``profile`` keeps the full text."""


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Insert one candidate per (identity, day) whose novel combinations add up."""
    weights = " ".join(f"WHEN '{dim}' THEN {w}" for dim, w in DIMENSION_WEIGHT.items())
    per_event = " UNION ALL ".join(
        f"SELECT event_id, time, identity, actor, session, '{dim}' AS dim, CAST({col} AS VARCHAR) AS value "
        f"FROM ev WHERE in_incident AND NOT aws_service AND {col} IS NOT NULL"
        for dim, col in PROFILE_DIMENSIONS.items()
    )
    id_factor = label_factor("n.id_label", 0.0, 0.0, 0.5, 1.0)
    peer_factor = label_factor("coalesce(n.peer_label, n.org_label)", 0.4, 0.7, 1.0, 1.2)
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, event_count)
        WITH hits AS (
            SELECT e.*, n.phrase, n.new_identity, n.basis,
                   least(0.95, (CASE e.dim {weights} END) * {id_factor}
                       * CASE WHEN n.new_identity THEN 1.0 ELSE {peer_factor} END) AS p
            FROM ({per_event}) e JOIN novelty n USING (identity, dim, value)
            WHERE n.id_label IN ('RARE', 'UNSEEN')
        ),
        per_value AS (
            SELECT identity, CAST(time AS DATE) AS day, dim, value, max(p) AS p, min(phrase) AS phrase,
                   any_value(new_identity) AS new_identity, any_value(basis) AS basis, count(*) AS n,
                   min(time) AS t0, max(time) AS t1,
                   min(actor) AS actor, list(DISTINCT session) AS sess
            FROM hits WHERE p > 0 GROUP BY ALL
        ),
        per_dim AS (
            SELECT identity, day, dim, max(p) AS p,
                   array_to_string(list(dim || ' ' || value || ' (' || n || ' events): ' || phrase
                                        ORDER BY p DESC, value)[1:{VALUES_SAID}], '; ')
                   || CASE WHEN count(*) > {VALUES_SAID} THEN ' (+' || (count(*) - {VALUES_SAID}) || ' more)'
                           ELSE '' END
                       AS words,
                   min(actor) AS actor, flatten(list(sess)) AS sess,
                   any_value(new_identity) AS new_identity, any_value(basis) AS basis, min(t0) AS t0,
                   max(t1) AS t1
            FROM per_value GROUP BY ALL
        ),
        per_day AS (
            SELECT identity, day,
                   100 * (1 - exp(sum(ln(1 - p))))
                       * CASE WHEN any_value(new_identity) OR bool_or(dim IN ({CONTEXT_SQL})) THEN 1.0
                              ELSE {USUAL_CONTEXT_FACTOR} END AS score,
                   string_agg(words, '; ' ORDER BY dim IN ({CONTEXT_SQL}) DESC, p DESC, dim) AS words,
                   min(actor) AS actor,
                   list_distinct(flatten(list(sess))) AS sess, any_value(new_identity) AS new_identity,
                   any_value(basis) AS basis, min(t0) AS t0, max(t1) AS t1
            FROM per_dim GROUP BY ALL
        ),
        -- supporting events, most novel first: on a day with one new network (travel) and a burst of new
        -- operations from another, the kept event ids must not be only the first hundreds of ordinary calls
        per_event AS (
            SELECT identity, CAST(time AS DATE) AS day, event_id, min(time) AS time, round(sum(p), 9) AS strength
            FROM hits WHERE p > 0 GROUP BY ALL
        ),
        ranked AS (  -- only for the days that make a finding: a list per day of every identity is memory
            SELECT identity, day, list(event_id ORDER BY strength DESC, time, event_id) AS ids
            FROM per_event SEMI JOIN (SELECT identity, day FROM per_day WHERE score >= 20) USING (identity, day)
            GROUP BY ALL
        )
        SELECT 'pattern_of_life',
               CASE basis WHEN 'new' THEN 'new-identity' WHEN 'tenant' THEN 'tenant-rarity' ELSE 'novel-activity' END,
               score,
               actor, identity, CASE WHEN len(sess) = 1 THEN sess[1] END,
               t0, t1,
               CASE basis WHEN 'new' THEN 'New identity with unusual activity: '
                          WHEN 'tenant' THEN 'Activity unlike the other identities: ' ELSE 'Unusual activity: ' END
                   || identity || ' on ' || day,
               words, ['T1078.004'], ids[1:{MAX_EVENT_IDS}], len(ids)
        FROM per_day JOIN ranked USING (identity, day)
        WHERE score >= 20
        """
    )
