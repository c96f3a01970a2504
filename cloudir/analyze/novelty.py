"""FREQUENT / INFREQUENT / RARE / UNSEEN labels for every (identity, dimension, value) in the timeline."""

from __future__ import annotations

import duckdb

from cloudir.analyze.peers import DIVERGENCE_COLUMNS, PERSIST_DAYS
from cloudir.analyze.prepare import PROFILE_DIMENSIONS, work_table

LABEL_FACTOR_SQL = """
CASE {label} WHEN 'FREQUENT' THEN {f} WHEN 'INFREQUENT' THEN {i} WHEN 'RARE' THEN {r} ELSE {u} END
"""


def label_factor(label_column: str, frequent: float, infrequent: float, rare: float, unseen: float) -> str:
    """SQL mapping a novelty label column to a multiplier."""
    return LABEL_FACTOR_SQL.format(label=label_column, f=frequent, i=infrequent, r=rare, u=unseen)


TENANT_MIN_IDENTITIES = 5
"""Tenant-wide rarity needs at least this many other identities to compare with; with fewer, nothing is rare."""


_INCIDENT_VALUES = " UNION ".join(
    f"SELECT identity, '{dim}' AS dim, CAST({col} AS VARCHAR) AS value FROM ev WHERE in_incident AND {col} IS NOT NULL"
    for dim, col in PROFILE_DIMENSIONS.items()
)
_DIVERGENCE_DIMS = ", ".join(f"'{dim}'" for dim in DIVERGENCE_COLUMNS)
LOOKED_UP_SQL = f"""
{_INCIDENT_VALUES}
UNION
SELECT e.identity, d.dim, d.value
FROM (SELECT DISTINCT unnest(event_ids) AS event_id FROM candidates WHERE temper) c
JOIN ev e USING (event_id)
CROSS JOIN LATERAL (VALUES ('network', e.network), ('user agent', e.ua_family)) d(dim, value)
WHERE d.value IS NOT NULL
UNION
SELECT identity, 'operation', op_key FROM candidates WHERE temper AND identity IS NOT NULL AND op_key IS NOT NULL
UNION
SELECT identity, dim, value FROM profile WHERE dim IN ({_DIVERGENCE_DIMS}) AND n_days >= {PERSIST_DAYS}
"""
"""The (identity, dimension, value) combinations that are read, a small part of all of them: every value of the
incident window's events (pattern of life), the network, user agent and operation of each tempered candidate (the
meta score) and the reference values that peer divergence judges. Each ``novelty`` row depends on its own
combination alone, so labelling only these gives the readers the same rows as labelling every combination."""


def build_novelty(con: duckdb.DuckDBPyConnection, *, tenant: bool, abstain: bool) -> None:
    """``novelty``: labels and a one-line wording of how usual each combination was in the reference, for the
    combinations that are looked up (:data:`LOOKED_UP_SQL`); run it after every analyzer that writes tempered
    candidates.

    ``basis`` is ``identity`` (judged against the identity's own baseline), ``new`` (an identity absent from the
    baseline: judged against the organisation) or ``tenant`` (history too short for any baseline: judged against
    its peers, else the other identities of the whole timeline; ``UNJUDGED`` with too few identities, and every
    label with ``abstain``: the timeline is no history to judge against).
    Identity label: share of the identity's baseline days with that value (UNSEEN 0, RARE <= 1 day or < 5 %,
    INFREQUENT < 30 %, else FREQUENT). Peer label: share of the identity's peers that used the value
    (RARE < 20 %, INFREQUENT < 50 %).
    """
    others = "1" if tenant else "0"
    # the organisation: every identity of the baseline; in tenant mode the other identities of the same account
    org_size = (
        "SELECT home_account, greatest(count(*) - 1, 1) AS n FROM identity_totals GROUP BY home_account"
        if tenant
        else "SELECT NULL AS home_account, greatest(count(*), 1) AS n FROM identity_totals"
    )
    org_join = (
        "LEFT JOIN tenant_profile g ON g.home_account = t.home_account AND g.dim = c.dim AND g.value = c.value "
        "LEFT JOIN org_size o ON o.home_account = t.home_account"
        if tenant
        else "LEFT JOIN global_profile g ON g.dim = c.dim AND g.value = c.value CROSS JOIN org_size o"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE identity_values AS {LOOKED_UP_SQL}")
    # how many of its peers used each value the identity itself has: the only lookups made of the peers' profiles,
    # so the table never grows past the identity's own values (not peers x their whole profiles)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE peer_profile AS
        SELECT v.identity, v.dim, v.value, count(*) AS peers_seen
        FROM identity_values v
        JOIN peer_groups g ON g.identity = v.identity
        JOIN profile p ON p.identity = g.peer AND p.dim = v.dim AND p.value = v.value
        GROUP BY ALL
        """
    )
    work_table(
        con,
        "novelty",
        f"""
        WITH c AS (SELECT * FROM identity_values),
        org_size AS ({org_size}),
        joined AS (
            SELECT c.identity, c.dim, c.value,
                   coalesce(p.n_events, 0) AS id_events, coalesce(p.n_days, 0) AS id_days,
                   t.n_days AS total_days, t.identity IS NULL AS new_identity,
                   pp.peers_seen, pp2.n_peers,
                   greatest(coalesce(g.n_identities, 0) - {others}, 0) AS org_identities,
                   coalesce(o.n, 1) AS org_n
            FROM c
            LEFT JOIN profile p USING (identity, dim, value)
            LEFT JOIN identity_totals t USING (identity)
            LEFT JOIN peer_profile pp USING (identity, dim, value)
            LEFT JOIN (SELECT identity, count(*) AS n_peers FROM peer_groups GROUP BY identity) pp2 USING (identity)
            {org_join}
        ),
        labelled AS (
            SELECT *,
                CASE WHEN {abstain} OR ({tenant} AND org_n < {TENANT_MIN_IDENTITIES}) THEN 'UNJUDGED'
                     WHEN org_identities = 0 THEN 'UNSEEN'
                     WHEN org_identities <= greatest(1, org_n * 0.05) THEN 'RARE'
                     WHEN org_identities < org_n * 0.3 THEN 'INFREQUENT'
                     ELSE 'FREQUENT' END AS org_label,
                CASE WHEN n_peers IS NULL OR {abstain} THEN NULL
                     WHEN coalesce(peers_seen, 0) = 0 THEN 'UNSEEN'
                     WHEN peers_seen < n_peers * 0.2 THEN 'RARE'
                     WHEN peers_seen < n_peers * 0.5 THEN 'INFREQUENT'
                     ELSE 'FREQUENT' END AS peer_label
            FROM joined
        )
        SELECT * REPLACE ({tenant} OR new_identity AS new_identity),
            CASE WHEN {tenant} THEN 'tenant' WHEN new_identity THEN 'new' ELSE 'identity' END AS basis,
            CASE WHEN {tenant} THEN coalesce(peer_label, org_label)
                 WHEN new_identity THEN org_label
                 WHEN id_events = 0 THEN 'UNSEEN'
                 WHEN id_days <= 1 OR id_days < total_days * 0.05 THEN 'RARE'
                 WHEN id_days < total_days * 0.3 THEN 'INFREQUENT'
                 ELSE 'FREQUENT' END AS id_label,
            CASE WHEN {tenant} AND n_peers IS NOT NULL
                     THEN 'no baseline; ' || lower(peer_label) || ' for its peer group (' || coalesce(peers_seen, 0)
                          || ' of ' || n_peers || ' peers)'
                 WHEN {tenant}
                     THEN 'no baseline; used by ' || org_identities || ' of ' || org_n
                          || ' other identities of its account'
                 WHEN new_identity
                     THEN 'identity not seen in the baseline; ' || lower(org_label) || ' in the organisation ('
                          || org_identities || ' of ' || org_n || ' identities)'
                 WHEN id_events = 0 THEN 'never seen for this identity in ' || total_days || ' baseline days'
                 ELSE 'seen for this identity on ' || id_days || ' of ' || total_days || ' baseline days'
            END
            || CASE WHEN new_identity OR {tenant} THEN ''
                    WHEN n_peers IS NULL THEN ', ' || lower(org_label) || ' in the organisation'
                    ELSE ', ' || lower(peer_label) || ' for its peer group (' || coalesce(peers_seen, 0) || ' of '
                         || n_peers || ' peers)'
               END AS phrase
        FROM labelled
        """,
    )
