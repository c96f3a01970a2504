"""Peer groups built from activity profiles: identities whose baseline operation sets are alike."""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import AnalyzerMeta

META = AnalyzerMeta(
    name="peer_groups",
    description=(
        "Builds each identity's peer group from its baseline activity: identities whose operation sets have "
        "Jaccard similarity >= 0.4, or >= 0.2 with the same role/user name prefix. Peer-group frequency "
        "tempers (seen by peers) or raises (unseen by peers) the scores of the other analyzers."
    ),
    mitre=(),
    default_weight=1.0,
)

JACCARD_PEER = 0.4
JACCARD_PEER_SAME_PREFIX = 0.2


def build_peer_groups(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``peer_groups`` (identity, peer, similarity) and the temp table ``peer_profile``."""
    con.execute(
        r"""
        CREATE OR REPLACE TEMP TABLE op_sets AS
        SELECT identity,
               regexp_extract(regexp_extract(identity, '([^/:]+)$', 1), '^([A-Za-z]+)', 1) AS name_prefix,
               list(DISTINCT value) AS ops, count(DISTINCT value) AS n_ops
        FROM profile WHERE dim = 'operation' GROUP BY identity
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE peer_groups AS
        WITH pairs AS (
            SELECT a.identity, b.identity AS peer, a.name_prefix = b.name_prefix AS same_prefix,
                   len(list_intersect(a.ops, b.ops)) AS shared, a.n_ops AS na, b.n_ops AS nb
            FROM op_sets a JOIN op_sets b ON a.identity <> b.identity
        )
        SELECT identity, peer, round(shared / (na + nb - shared), 3) AS similarity
        FROM pairs
        WHERE shared / (na + nb - shared) >= $peer
           OR (same_prefix AND shared / (na + nb - shared) >= $prefix_peer)
        """,
        {"peer": JACCARD_PEER, "prefix_peer": JACCARD_PEER_SAME_PREFIX},
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE peer_profile AS
        WITH sizes AS (SELECT identity, count(*) AS n_peers FROM peer_groups GROUP BY identity)
        SELECT g.identity, p.dim, p.value, count(DISTINCT g.peer) AS peers_seen, any_value(s.n_peers) AS n_peers,
               sum(p.n_events) AS n_events
        FROM peer_groups g JOIN profile p ON p.identity = g.peer JOIN sizes s ON s.identity = g.identity
        GROUP BY ALL
        """
    )
