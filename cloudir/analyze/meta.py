"""The meta score: weighting, pattern-of-life tempering, the ``findings`` table and ``incidents``."""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import (
    FINDING_EVENT_IDS,
    FINDINGS_DDL,
    INCIDENTS_DDL,
    MAX_EXPLANATION,
    SEVERITY_SQL,
    AnalyzerMeta,
)
from cloudir.analyze.peers import GROUP_KEY_SQL

INCIDENT_GAP_HOURS = 2
"""Findings of one identity further apart than this start a new incident."""
FAMILIAR_MIN_DAYS = 3
FAMILIAR_MIN_SPAN_DAYS = 7
"""Familiarity lowers a sensitive action's score only with real history: the same identity did the same operation
on at least FAMILIAR_MIN_DAYS distinct baseline days other than the finding's own, spanning at least
FAMILIAR_MIN_SPAN_DAYS days."""
FAMILIAR_FACTORS = (0.35, 0.6, 0.85)
"""Familiar on >= 30 %, >= 5 %, < 5 % of the identity's baseline days."""
NOVEL_CONTEXT = 1.1
NEW_IDENTITY_CONTEXT = 1.2
SOMEWHAT_USUAL_CONTEXT = 0.85
USUAL_CONTEXT = 0.6
UNSEEN_IN_ORGANISATION = 1.1
GROUP_ROUTINE_MIN = 3
GROUP_ROUTINE_SHARE = 0.5
"""An identity absent from the baseline (a new hire, a new pipeline) doing what at least GROUP_ROUTINE_MIN and
GROUP_ROUTINE_SHARE of its IAM group (same role, path or account: the peer-group structure) do on at least
FAMILIAR_MIN_DAYS baseline days each is judged like a familiar action (x0.6), not raised as new."""
"""Tempered findings are also weighed by where they came from: a network and user agent the identity uses lower the
score of a familiar action (only), a rare or new one raises it, an identity absent from the baseline raises it most.
An operation no other identity did raises it too. Nothing lowers a finding below its floor."""


def write_findings(
    con: duckdb.DuckDBPyConnection, analyzers: list[AnalyzerMeta], min_score: int, *, tenant: bool
) -> None:
    """Weight and temper the candidates; keep those scoring at least ``min_score`` as ``findings``."""
    con.execute("CREATE OR REPLACE TEMP TABLE weights (analyzer VARCHAR, weight DOUBLE)")
    con.executemany("INSERT INTO weights VALUES (?, ?)", [[a.name, a.default_weight] for a in analyzers])
    con.execute(FINDINGS_DDL)
    con.execute("CREATE OR REPLACE TEMP TABLE numbered AS SELECT row_number() OVER () AS cid, * FROM candidates")
    _familiarity(con, tenant=tenant)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE context AS
        WITH ids AS (SELECT cid, unnest(event_ids) AS event_id FROM numbered WHERE temper),
        labels AS (
            SELECT ids.cid, n.id_label, n.new_identity
            FROM ids JOIN ev USING (event_id)
            JOIN novelty n ON n.identity = ev.identity AND n.dim = 'network' AND n.value = ev.network
            UNION ALL
            SELECT ids.cid, n.id_label, n.new_identity
            FROM ids JOIN ev USING (event_id)
            JOIN novelty n ON n.identity = ev.identity AND n.dim = 'user agent' AND n.value = ev.ua_family
        )
        SELECT cid, bool_or(new_identity) AS new_identity,
               max(CASE id_label WHEN 'UNSEEN' THEN 3 WHEN 'RARE' THEN 2 WHEN 'INFREQUENT' THEN 1
                                 WHEN 'FREQUENT' THEN 0 ELSE 2 END) AS worst
        FROM labels GROUP BY cid
        """
    )
    high, mid, low = FAMILIAR_FACTORS
    con.execute(
        f"""
        INSERT INTO findings
        WITH tempered AS (
            SELECT c.*,
                   CASE WHEN NOT c.temper THEN 1.0
                        WHEN f.familiar THEN CASE WHEN f.share >= 0.3 THEN {high} WHEN f.share >= 0.05 THEN {mid}
                                                  ELSE {low} END
                        WHEN f.group_routine THEN {mid}
                        WHEN o.org_label = 'UNSEEN' THEN {UNSEEN_IN_ORGANISATION}
                        ELSE 1.0 END
                   * CASE WHEN NOT c.temper THEN 1.0
                          WHEN f.group_routine THEN 1.0
                          WHEN x.cid IS NULL THEN {NOVEL_CONTEXT}
                          WHEN x.new_identity THEN {NEW_IDENTITY_CONTEXT}
                          WHEN x.worst >= 2 THEN {NOVEL_CONTEXT}
                          WHEN NOT coalesce(f.familiar, false) THEN 1.0
                          WHEN x.worst = 1 THEN {SOMEWHAT_USUAL_CONTEXT} ELSE {USUAL_CONTEXT} END AS factor,
                   CASE WHEN NOT c.temper OR c.op_key IS NULL THEN ''
                        WHEN f.familiar THEN '. Familiar: ' || c.op_key || ' by this identity on ' || f.n_days
                             || ' other baseline days since ' || f.since
                        WHEN f.group_routine THEN '. ' || c.op_key || ': identity new since the baseline; routine for '
                             || f.group_doers || ' of the ' || f.group_size || ' identities of its group '
                             || f.group_key
                        WHEN coalesce(f.n_days, 0) = 0
                            THEN '. ' || c.op_key || ': never seen for this identity on another baseline day'
                        ELSE '. ' || c.op_key || ': seen for this identity on only ' || f.n_days
                             || ' other baseline days (familiar needs {FAMILIAR_MIN_DAYS} over '
                             || '{FAMILIAR_MIN_SPAN_DAYS} days)'
                   END
                   || CASE WHEN c.temper AND o.org_label = 'UNSEEN' THEN ', nor for any other identity' ELSE '' END
                   || CASE WHEN NOT c.temper OR x.cid IS NULL THEN ''
                           WHEN x.new_identity OR f.group_routine THEN ''
                           WHEN x.worst >= 2 THEN '; from a network or user agent rare or new for this identity'
                           ELSE '; from a network and user agent this identity uses' END AS novelty_words,
                   w.weight, f.familiar AS f_familiar, f.n_days AS f_days, f.since AS f_since
            FROM numbered c
            JOIN weights w USING (analyzer)
            LEFT JOIN familiarity f USING (cid)
            LEFT JOIN (SELECT identity, value, org_label FROM novelty WHERE dim = 'operation') o
                ON o.identity = c.identity AND o.value = c.op_key
            LEFT JOIN context x USING (cid)
        ),
        scored AS (
            SELECT *, CAST(round(least(100, greatest(floor, raw_score * weight * factor))) AS INTEGER) AS score,
                   concat_ws(chr(31), analyzer, rule, coalesce(identity, ''), coalesce(session, ''),
                             coalesce(CAST(first_time AS VARCHAR), ''), coalesce(op_key, '')) AS finding_key,
                   coalesce(array_to_string(list_sort(event_ids), chr(31)), '') AS evidence_key
            FROM tempered
        ),
        -- candidates sharing a key (a refused and a successful call of one rule in the same second) are different
        -- findings: the first keeps the key's id, the others add their evidence to it; the same evidence twice is
        -- one finding (the same key spelt NULL or '' is one key)
        distinct_evidence AS (
            SELECT * FROM scored
            QUALIFY row_number() OVER (PARTITION BY finding_key, evidence_key
                                       ORDER BY score DESC, raw_score DESC, title, explanation, actor, last_time,
                                                event_ids, mitre, event_count, floor) = 1
        ),
        keyed AS (
            SELECT *, row_number() OVER (PARTITION BY finding_key
                                         ORDER BY score DESC, evidence_key, title, explanation) AS key_rank
            FROM distinct_evidence
        )
        SELECT substr(md5(CASE WHEN key_rank = 1 THEN finding_key
                               ELSE finding_key || chr(30) || evidence_key END), 1, 12),
               analyzer, rule, score, {SEVERITY_SQL.format(s="score")}, actor, identity, session, first_time,
               last_time, title,
               CASE WHEN length(explanation || novelty_words) > {MAX_EXPLANATION}
                    THEN left(explanation || novelty_words, {MAX_EXPLANATION - 3}) || '...'
                    ELSE explanation || novelty_words END,
               mitre, event_ids[1:{FINDING_EVENT_IDS}], coalesce(event_count, len(event_ids)),
               json_object('explanation', explanation || novelty_words, 'raw_score', round(raw_score, 6),
                           'analyzer_weight', weight, 'factor', round(factor, 3), 'floor', floor,
                           'familiar', f_familiar, 'familiar_days', f_days, 'familiar_since', f_since,
                           'event_ids_kept', least(len(event_ids), {FINDING_EVENT_IDS}),
                           'event_count', coalesce(event_count, len(event_ids)), 'op_key', op_key),
               NULL
        FROM keyed WHERE score >= $min_score
        """,
        {"min_score": min_score},
    )


def _familiarity(con: duckdb.DuckDBPyConnection, *, tenant: bool) -> None:
    """``familiarity`` per tempered candidate: distinct baseline days (other than the finding's) the identity did
    the operation, and whether that makes it familiar (never in tenant mode: there is no baseline); for an
    identity absent from the baseline, how many identities of its IAM group do the operation routinely."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE familiarity AS
        WITH c AS (
            SELECT cid, identity, op_key, CAST(first_time AS DATE) AS day FROM numbered
            WHERE temper AND op_key IS NOT NULL
        ),
        days AS (
            SELECT DISTINCT e.identity, e.op_key, CAST(e.time AS DATE) AS day
            FROM ev e SEMI JOIN (SELECT DISTINCT identity, op_key FROM c) k USING (identity, op_key)
            WHERE e.in_baseline
        ),
        counted AS (  -- the finding's own day never counts: a burst within one day is not a habit
            SELECT c.cid, count(d.day) AS op_days, min(d.day) AS since,
                   greatest(max(d.day), c.day) - least(min(d.day), c.day) AS span
            FROM c LEFT JOIN days d ON d.identity = c.identity AND d.op_key = c.op_key AND d.day <> c.day
            GROUP BY c.cid, c.day
        ),
        newcomers AS (  -- identities absent from the baseline, with the IAM group they belong to
            SELECT identity, {GROUP_KEY_SQL} AS group_key
            FROM (SELECT identity, mode(account ORDER BY account) AS home_account FROM ev
                  WHERE NOT {tenant} AND identity IN (SELECT identity FROM c)
                    AND identity NOT IN (SELECT identity FROM identity_totals)
                  GROUP BY identity)
        ),
        group_sizes AS (SELECT group_key, count(*) AS size FROM peer_members GROUP BY group_key),
        group_routine AS (
            SELECT m.group_key, p.value AS op_key, count(*) AS doers
            FROM peer_members m JOIN profile p ON p.identity = m.identity
            WHERE p.dim = 'operation' AND p.n_days >= {FAMILIAR_MIN_DAYS}
              AND m.group_key IN (SELECT group_key FROM newcomers)
            GROUP BY ALL
        )
        SELECT cid, op_days AS n_days, since,
               op_days / greatest(t.n_days, 1) AS share,
               NOT {tenant} AND op_days >= {FAMILIAR_MIN_DAYS} AND span >= {FAMILIAR_MIN_SPAN_DAYS} AS familiar,
               coalesce(r.doers >= {GROUP_ROUTINE_MIN} AND r.doers >= s.size * {GROUP_ROUTINE_SHARE}, false)
                   AS group_routine,
               r.doers AS group_doers, s.size AS group_size, n.group_key
        FROM counted JOIN numbered USING (cid) LEFT JOIN identity_totals t ON t.identity = numbered.identity
        LEFT JOIN newcomers n ON n.identity = numbered.identity
        LEFT JOIN group_sizes s ON s.group_key = n.group_key
        LEFT JOIN group_routine r ON r.group_key = n.group_key AND r.op_key = numbered.op_key
        """
    )


def write_incidents(con: duckdb.DuckDBPyConnection) -> None:
    """Group findings by identity and time into ``incidents``; the score combines the best finding of each
    analyzer as independent evidence (1 - product of (1 - score/100))."""
    con.execute(INCIDENTS_DDL)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE finding_incident AS
        WITH f AS (
            SELECT finding_id, identity, first_time,
                   max(last_time) OVER (PARTITION BY identity ORDER BY first_time, finding_id
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
            FROM findings
        ),
        g AS (
            SELECT *, sum(CASE WHEN prev_end IS NULL OR first_time > prev_end + INTERVAL {INCIDENT_GAP_HOURS} HOUR
                               THEN 1 ELSE 0 END)
                      OVER (PARTITION BY identity ORDER BY first_time, finding_id ROWS UNBOUNDED PRECEDING) AS grp
            FROM f
        )
        -- the separator keeps identity and number apart ('u' + 11 is not 'u1' + 1); no identity is no separator
        SELECT finding_id, 'I' || substr(md5(coalesce(identity || chr(31), '') || grp), 1, 11) AS incident_id FROM g
        """
    )
    con.execute(
        "UPDATE findings SET incident_id = fi.incident_id FROM finding_incident fi "
        "WHERE findings.finding_id = fi.finding_id"
    )
    con.execute(
        f"""
        INSERT INTO incidents
        WITH best AS (
            SELECT incident_id, analyzer, max(score) AS score FROM findings GROUP BY ALL
        ),
        combined AS (
            SELECT incident_id, CAST(round(100 * (1 - exp(sum(ln(greatest(1e-6, 1 - score / 100.0))))))
                                     AS INTEGER) AS score
            FROM best GROUP BY incident_id
        )
        SELECT f.incident_id, c.score, {SEVERITY_SQL.format(s="c.score")}, any_value(f.identity),
               list_sort(list_distinct(list(f.session) FILTER (WHERE f.session IS NOT NULL))), min(f.first_time),
               max(f.last_time), count(*), list_sort(list_distinct(list(f.analyzer))),
               list_sort(list_distinct(flatten(list(f.mitre)))),
               list(f.finding_id ORDER BY f.score DESC, f.finding_id),
               first(f.title ORDER BY f.score DESC, f.finding_id)
               || CASE WHEN count(*) > 1 THEN ' (+' || (count(*) - 1) || ' more)' ELSE '' END
        FROM findings f JOIN combined c USING (incident_id)
        GROUP BY f.incident_id, c.score
        """
    )
