"""FREQUENT / INFREQUENT / RARE / UNSEEN labels for every (identity, dimension, value) in the timeline."""

from __future__ import annotations

import duckdb

from cloudir.analyze.prepare import PROFILE_DIMENSIONS

LABEL_FACTOR_SQL = """
CASE {label} WHEN 'FREQUENT' THEN {f} WHEN 'INFREQUENT' THEN {i} WHEN 'RARE' THEN {r} ELSE {u} END
"""


def label_factor(label_column: str, frequent: float, infrequent: float, rare: float, unseen: float) -> str:
    """SQL mapping a novelty label column to a multiplier."""
    return LABEL_FACTOR_SQL.format(label=label_column, f=frequent, i=infrequent, r=rare, u=unseen)


def build_novelty(con: duckdb.DuckDBPyConnection) -> None:
    """``novelty``: labels and a one-line wording of how usual each combination was in the baseline.

    Identity label: share of the identity's baseline days with that value (UNSEEN 0, RARE <= 1 day or < 5 %,
    INFREQUENT < 30 %, else FREQUENT). Identities without a baseline are judged against the whole organisation.
    Peer label: share of the identity's peers that used the value (RARE < 20 %, INFREQUENT < 50 %).
    """
    combos = " UNION ALL ".join(
        f"SELECT DISTINCT identity, '{dim}' AS dim, CAST({col} AS VARCHAR) AS value FROM ev WHERE {col} IS NOT NULL"
        for dim, col in PROFILE_DIMENSIONS.items()
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE novelty AS
        WITH c AS ({combos}),
        org_size AS (SELECT greatest(count(*), 1) AS n FROM identity_totals),
        joined AS (
            SELECT c.identity, c.dim, c.value,
                   coalesce(p.n_events, 0) AS id_events, coalesce(p.n_days, 0) AS id_days,
                   t.n_days AS total_days, t.identity IS NULL AS new_identity,
                   pp.peers_seen, pp2.n_peers,
                   coalesce(g.n_identities, 0) AS org_identities, (SELECT n FROM org_size) AS org_n
            FROM c
            LEFT JOIN profile p USING (identity, dim, value)
            LEFT JOIN identity_totals t USING (identity)
            LEFT JOIN peer_profile pp USING (identity, dim, value)
            LEFT JOIN (SELECT identity, count(*) AS n_peers FROM peer_groups GROUP BY identity) pp2 USING (identity)
            LEFT JOIN global_profile g USING (dim, value)
        ),
        labelled AS (
            SELECT *,
                CASE WHEN org_identities = 0 THEN 'UNSEEN'
                     WHEN org_identities <= greatest(1, org_n * 0.05) THEN 'RARE'
                     WHEN org_identities < org_n * 0.3 THEN 'INFREQUENT'
                     ELSE 'FREQUENT' END AS org_label,
                CASE WHEN n_peers IS NULL THEN NULL
                     WHEN coalesce(peers_seen, 0) = 0 THEN 'UNSEEN'
                     WHEN peers_seen < n_peers * 0.2 THEN 'RARE'
                     WHEN peers_seen < n_peers * 0.5 THEN 'INFREQUENT'
                     ELSE 'FREQUENT' END AS peer_label
            FROM joined
        )
        SELECT *,
            CASE WHEN new_identity THEN org_label
                 WHEN id_events = 0 THEN 'UNSEEN'
                 WHEN id_days <= 1 OR id_days < total_days * 0.05 THEN 'RARE'
                 WHEN id_days < total_days * 0.3 THEN 'INFREQUENT'
                 ELSE 'FREQUENT' END AS id_label,
            CASE WHEN new_identity
                     THEN 'identity not seen in the baseline; ' || lower(org_label) || ' in the organisation ('
                          || org_identities || ' of ' || org_n || ' identities)'
                 WHEN id_events = 0 THEN 'never seen for this identity in ' || total_days || ' baseline days'
                 ELSE 'seen for this identity on ' || id_days || ' of ' || total_days || ' baseline days'
            END
            || CASE WHEN new_identity THEN ''
                    WHEN n_peers IS NULL THEN ', ' || lower(org_label) || ' in the organisation'
                    ELSE ', ' || lower(peer_label) || ' for its peer group (' || coalesce(peers_seen, 0) || ' of '
                         || n_peers || ' peers)'
               END AS phrase
        FROM labelled
        """
    )
