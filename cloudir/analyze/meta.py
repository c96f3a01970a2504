"""The meta score: weighting, pattern-of-life tempering, the ``findings`` table and ``incidents``."""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import FINDINGS_DDL, INCIDENTS_DDL, SEVERITY_SQL, AnalyzerMeta
from cloudir.analyze.novelty import label_factor

INCIDENT_GAP_HOURS = 2
NOVEL_CONTEXT = 1.1
NEW_IDENTITY_CONTEXT = 1.2
SOMEWHAT_USUAL_CONTEXT = 0.85
USUAL_CONTEXT = 0.6
"""Tempered findings are also weighed by where they came from: a network and user agent the identity uses every
day (USUAL) lower the score, a rare or new one raises it, and an identity absent from the baseline raises it most.
For such an identity the operation itself is judged by how many identities of the organisation use it."""
"""Findings of one identity further apart than this start a new incident."""


def write_findings(con: duckdb.DuckDBPyConnection, analyzers: list[AnalyzerMeta], min_score: int) -> None:
    """Weight and temper the candidates; keep those scoring at least ``min_score`` as ``findings``."""
    con.execute("CREATE OR REPLACE TEMP TABLE weights (analyzer VARCHAR, weight DOUBLE)")
    con.executemany("INSERT INTO weights VALUES (?, ?)", [[a.name, a.default_weight] for a in analyzers])
    id_factor = label_factor("n.id_label", 0.35, 0.6, 0.85, 1.0)
    peer_factor = label_factor("coalesce(n.peer_label, n.org_label)", 0.7, 0.85, 1.0, 1.1)
    org_factor = label_factor("n.org_label", 0.8, 0.9, 1.0, 1.1)
    con.execute(FINDINGS_DDL)
    con.execute("CREATE OR REPLACE TEMP TABLE numbered AS SELECT row_number() OVER () AS cid, * FROM candidates")
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
               max(CASE id_label WHEN 'UNSEEN' THEN 3 WHEN 'RARE' THEN 2 WHEN 'INFREQUENT' THEN 1 ELSE 0 END) AS worst
        FROM labels GROUP BY cid
        """
    )
    con.execute(
        f"""
        INSERT INTO findings
        WITH tempered AS (
            SELECT c.*,
                   CASE WHEN NOT c.temper OR n.id_label IS NULL THEN 1.0
                        WHEN n.new_identity THEN {org_factor}
                        ELSE {id_factor} * {peer_factor} END
                   * CASE WHEN NOT c.temper THEN 1.0
                          WHEN x.cid IS NULL THEN {NOVEL_CONTEXT}
                          WHEN x.new_identity THEN {NEW_IDENTITY_CONTEXT}
                          WHEN x.worst >= 2 THEN {NOVEL_CONTEXT}
                          WHEN x.worst = 1 THEN {SOMEWHAT_USUAL_CONTEXT} ELSE {USUAL_CONTEXT} END AS factor,
                   CASE WHEN c.temper AND n.phrase IS NOT NULL THEN '. ' || c.op_key || ' by this identity: '
                        || n.phrase ELSE '' END
                   || CASE WHEN NOT c.temper OR x.cid IS NULL THEN ''
                           WHEN x.new_identity THEN ''
                           WHEN x.worst >= 2 THEN '; from a network or user agent rare or new for this identity'
                           ELSE '; from a network and user agent this identity uses' END AS novelty_words,
                   w.weight
            FROM numbered c
            JOIN weights w USING (analyzer)
            LEFT JOIN novelty n ON n.identity = c.identity AND n.dim = 'operation' AND n.value = c.op_key
            LEFT JOIN context x USING (cid)
        ),
        scored AS (
            SELECT *, CAST(round(least(100, raw_score * weight * factor)) AS INTEGER) AS score FROM tempered
        )
        SELECT substr(md5(analyzer || rule || coalesce(identity, '') || coalesce(session, '')
                          || coalesce(CAST(first_time AS VARCHAR), '') || coalesce(op_key, '')), 1, 12),
               analyzer, rule, score, {SEVERITY_SQL.format(s="score")}, actor, identity, session, first_time,
               last_time, title, explanation || novelty_words, mitre, event_ids, NULL
        FROM scored WHERE score >= $min_score
        QUALIFY row_number() OVER (PARTITION BY analyzer, rule, identity, session, first_time, op_key
                                   ORDER BY score DESC) = 1
        """,
        {"min_score": min_score},
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
        SELECT finding_id, 'I' || substr(md5(coalesce(identity, '') || grp), 1, 11) AS incident_id FROM g
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
               list_distinct(list(f.session) FILTER (WHERE f.session IS NOT NULL)), min(f.first_time),
               max(f.last_time), count(*), list_sort(list_distinct(list(f.analyzer))),
               list_sort(list_distinct(flatten(list(f.mitre)))),
               list(f.finding_id ORDER BY f.score DESC),
               arg_max(f.title, f.score) || CASE WHEN count(*) > 1 THEN ' (+' || (count(*) - 1) || ' more)' ELSE ''
                                            END
        FROM findings f JOIN combined c USING (incident_id)
        GROUP BY f.incident_id, c.score
        """
    )
