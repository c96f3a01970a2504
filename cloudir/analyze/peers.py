"""Peer groups and peer divergence: who behaves alike, and who has behaved unlike its peers from the start.

Each identity's reference operations become a TF-IDF vector (sub-linear day counts x smoothed inverse identity
frequency, L2-normalised). Candidate peers come from shared uncommon operations (inverted lists, operations used
by at most ``POSTING_MAX_IDENTITIES`` identities) and from IAM structure (same role, same user path, same account,
same directory domain: a ring of at most ``STRUCTURE_CANDIDATES`` members), never from all pairs; the candidates
are scored by exact cosine and each identity keeps its ``TOP_K`` best peers. An identity whose operations, user
agents, networks or hours differ from all of its peers on many reference days is a ``peer-divergence`` finding:
an attacker already present when logging started is learned as normal by its own baseline, never by its peers.
"""

from __future__ import annotations

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta

META = AnalyzerMeta(
    name="peer_groups",
    description=(
        "Peers by TF-IDF cosine over each identity's service:operation set (top 10, candidates from shared "
        "uncommon operations and IAM structure: same role, path, account or domain). Peer-group frequency tempers "
        "or raises the other analyzers' scores; an identity whose operations, user agents, networks or hours no "
        "peer shares, on many reference days, is flagged (peer-divergence)."
    ),
    mitre=("T1078.004",),
    default_weight=1.0,
)

TOP_K = 10
"""Peers kept per identity."""
POSTING_MAX_IDENTITIES = 50
"""Operations used by more identities than this do not propose candidates (they still count in the cosine)."""
STRUCTURE_CANDIDATES = 30
"""Members of the same IAM group proposed as candidates per identity (a ring, so cost stays linear)."""
CANDIDATES_PER_IDENTITY = 40
"""Operation-proposed candidates kept per identity before exact scoring."""
MIN_COSINE = 0.3
MIN_COSINE_SAME_GROUP = 0.15
"""A candidate is a peer at this TF-IDF cosine, or the lower one when it shares the identity's IAM group."""

MIN_PEERS = 3
"""Divergence is judged only against at least this many peers."""
PERSIST_DAYS = 3
PERSIST_SHARE = 0.25
"""A value the peers never use counts when the identity used it on >= PERSIST_DAYS days and on >= this share of
its reference days: throughout the baseline, not once."""
DIVERGENCE_WEIGHT: dict[str, float] = {"operation": 0.40, "user agent": 0.35, "network": 0.08, "time of day": 0.08}
"""Weight of each dimension at full divergence; combined as ``1 - prod(1 - p)``, so no single dimension (a home
network, a time zone, one tool of one's own) reaches the default minimum score alone."""
FULL_DIVERGENCE: dict[str, float] = {"operation": 0.2, "user agent": 0.1, "network": 0.1, "time of day": 0.1}
"""Share at which a dimension counts fully: of the identity's TF-IDF mass for operations, of its events otherwise."""
DIVERGENCE_COLUMNS = {
    "operation": "op_key",
    "user agent": "ua_family",
    "network": "network",
    "time of day": "hour_block",
}
PEERS_NAMED = 3
SHOWN_VALUE = (
    "CASE dim WHEN 'time of day' THEN lpad(CAST(3 * CAST(value AS INTEGER) AS VARCHAR), 2, '0') || '-' "
    "|| lpad(CAST(3 * CAST(value AS INTEGER) + 3 AS VARCHAR), 2, '0') || 'h UTC' ELSE value END"
)
VALUES_NAMED = 3

GROUP_KEY_SQL = r"""
CASE
    WHEN regexp_matches(identity, '^arn:aws[a-z-]*:sts::\d+:assumed-role/')
        THEN regexp_extract(identity, '^arn:aws[a-z-]*:sts::(\d+:assumed-role/[^/]+)/', 1)
    WHEN regexp_matches(identity, '^arn:aws[a-z-]*:iam::\d+:')
        THEN regexp_replace(identity, '/[^/]*$', '/')
    WHEN contains(identity, '@') THEN coalesce(home_account, '') || '@' || split_part(identity, '@', 2)
    ELSE coalesce(home_account, '')
END
"""
"""IAM structure: the role behind a session, the user or role path, the directory domain, else the account."""


def build_peer_groups(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``peer_groups`` (identity, peer, similarity); what the peers share is ``peer_profile``, built by
    :func:`cloudir.analyze.novelty.build_novelty`."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE peer_members AS
        SELECT identity, {GROUP_KEY_SQL} AS group_key, hash(identity) AS h
        FROM identity_totals
        WHERE identity <> 'anonymous' AND identity NOT IN (SELECT DISTINCT identity FROM ev WHERE aws_service)
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE peer_terms AS
        WITH t AS (
            SELECT p.identity, p.value AS term, 1 + ln(greatest(p.n_days, 1)) AS tf
            FROM profile p SEMI JOIN peer_members m USING (identity) WHERE p.dim = 'operation'
        ),
        df AS (SELECT term, count(*) AS df FROM t GROUP BY term),
        n AS (SELECT count(DISTINCT identity) AS n FROM t),
        w AS (SELECT t.identity, t.term, df.df, t.tf * (ln((1 + n.n) / (1 + df.df)) + 1) AS w
              FROM t JOIN df USING (term) CROSS JOIN n)
        SELECT identity, term, df, w / sqrt(sum(w * w) OVER (PARTITION BY identity)) AS w FROM w
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE peer_candidates AS
        WITH by_terms AS (
            SELECT a.identity, b.identity AS peer, sum(a.w * b.w) AS partial
            FROM peer_terms a JOIN peer_terms b
                ON a.term = b.term AND a.identity <> b.identity AND a.df <= {POSTING_MAX_IDENTITIES}
            GROUP BY a.identity, b.identity
            QUALIFY row_number() OVER (PARTITION BY a.identity ORDER BY partial DESC, b.identity)
                    <= {CANDIDATES_PER_IDENTITY}
        ),
        ring AS (
            SELECT identity, group_key, row_number() OVER (PARTITION BY group_key ORDER BY h, identity) - 1 AS pos,
                   count(*) OVER (PARTITION BY group_key) AS size
            FROM peer_members
        ),
        by_group AS (
            SELECT a.identity, b.identity AS peer
            FROM ring a CROSS JOIN range(1, {STRUCTURE_CANDIDATES + 1}) o(step)
            JOIN ring b ON b.group_key = a.group_key AND b.pos = (a.pos + o.step) % a.size
            WHERE o.step < a.size
        )
        SELECT identity, peer FROM by_terms UNION SELECT identity, peer FROM by_group
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE peer_groups AS
        WITH scored AS (
            SELECT c.identity, c.peer, sum(a.w * b.w) AS cosine
            FROM peer_candidates c
            JOIN peer_terms a ON a.identity = c.identity
            JOIN peer_terms b ON b.identity = c.peer AND b.term = a.term
            GROUP BY c.identity, c.peer
        )
        SELECT s.identity, s.peer, round(s.cosine, 3) AS similarity
        FROM scored s JOIN peer_members ma ON ma.identity = s.identity JOIN peer_members mb ON mb.identity = s.peer
        WHERE s.cosine >= {MIN_COSINE} OR (ma.group_key = mb.group_key AND s.cosine >= {MIN_COSINE_SAME_GROUP})
        QUALIFY row_number() OVER (PARTITION BY s.identity ORDER BY s.cosine DESC, s.peer) <= {TOP_K}
        """
    )


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Insert a ``peer-divergence`` candidate for each identity whose reference activity its peers never share."""
    dims = ", ".join(f"'{dim}'" for dim in DIVERGENCE_WEIGHT)
    weight = " ".join(f"WHEN '{dim}' THEN {w}" for dim, w in DIVERGENCE_WEIGHT.items())
    full = " ".join(f"WHEN '{dim}' THEN {s}" for dim, s in FULL_DIVERGENCE.items())
    hits = " UNION ".join(
        f"SELECT e.identity, e.event_id, e.time, e.actor, e.session FROM ev e JOIN peer_divergent d "
        f"ON d.identity = e.identity AND d.dim = '{dim}' AND d.value = CAST(e.{col} AS VARCHAR) WHERE e.in_reference"
        for dim, col in DIVERGENCE_COLUMNS.items()
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE peer_divergent AS
        WITH judged AS (
            SELECT identity, count(*) AS n_peers,
                   string_agg(regexp_extract(peer, '([^/:]+)$', 1), ', ' ORDER BY similarity DESC, peer)
                       FILTER (WHERE rank <= {PEERS_NAMED}) AS named
            FROM (SELECT *, row_number() OVER (PARTITION BY identity ORDER BY similarity DESC, peer) AS rank
                  FROM peer_groups)
            GROUP BY identity HAVING count(*) >= {MIN_PEERS}
        )
        SELECT p.identity, p.dim, p.value, p.n_events, p.n_days, t.n_days AS total_days, t.n_events AS total_events,
               j.n_peers, j.named, coalesce(w.w * w.w, 0) AS mass
        FROM profile p
        JOIN judged j USING (identity)
        JOIN identity_totals t USING (identity)
        LEFT JOIN peer_profile pp USING (identity, dim, value)
        LEFT JOIN peer_terms w ON p.dim = 'operation' AND w.identity = p.identity AND w.term = p.value
        WHERE p.dim IN ({dims}) AND pp.peers_seen IS NULL
          AND p.n_days >= {PERSIST_DAYS} AND p.n_days >= t.n_days * {PERSIST_SHARE}
        """
    )
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, event_count)
        WITH per_dim AS (
            SELECT identity, dim, any_value(n_peers) AS n_peers, any_value(named) AS named,
                   (CASE dim {weight} END)
                   * least(1.0, CASE dim WHEN 'operation' THEN sum(mass) ELSE sum(n_events) / any_value(total_events)
                                END / (CASE dim {full} END)) AS p,
                   dim || ' ' || array_to_string(
                       list({SHOWN_VALUE} || ' (' || n_days || ' of ' || total_days || ' days)'
                            ORDER BY n_events DESC, value)[1:{VALUES_NAMED}], ', ')
                   || CASE WHEN count(*) > {VALUES_NAMED} THEN ' (+' || (count(*) - {VALUES_NAMED}) || ' more)'
                           ELSE '' END AS words
            FROM peer_divergent GROUP BY identity, dim
        ),
        per_identity AS (
            SELECT identity, any_value(n_peers) AS n_peers, any_value(named) AS named,
                   100 * (1 - exp(sum(ln(1 - p)))) AS score,
                   string_agg(words, '; ' ORDER BY p DESC, dim) AS words
            FROM per_dim GROUP BY identity HAVING score >= 20
        ),
        hits AS ({hits}),
        evidence AS (
            SELECT identity, list(event_id ORDER BY time, event_id) AS ids, min(time) AS t0, max(time) AS t1,
                   list(DISTINCT actor ORDER BY actor) AS actors,
                   list(DISTINCT session ORDER BY session) FILTER (WHERE session IS NOT NULL) AS sess
            FROM hits SEMI JOIN per_identity USING (identity) GROUP BY identity
        )
        SELECT 'peer_groups', 'peer-divergence', score, actors[1], identity,
               CASE WHEN len(sess) = 1 THEN sess[1] END, t0, t1,
               'Unlike its peers from the start: ' || identity,
               'Throughout the reference period, unlike its ' || n_peers || ' peers (' || named
               || CASE WHEN n_peers > {PEERS_NAMED} THEN ', ...' ELSE '' END || '), which never use: ' || words,
               ['T1078.004'], ids[1:{MAX_EVENT_IDS}], len(ids)
        FROM per_identity JOIN evidence USING (identity)
        """
    )
