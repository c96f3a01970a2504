"""Working tables every analyzer reads: ``ev`` (events with derived columns) and the baseline profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from cloudir.analyze.base import AnalysisWindow

PROFILE_DIMENSIONS: dict[str, str] = {
    "operation": "op_key",
    "service": "service",
    "region": "region",
    "network": "network",
    "user agent": "ua_family",
    "time of day": "hour_block",
    "account": "account",
}
"""Pattern-of-life dimensions: the word used in explanations -> the ``ev`` column."""


WORK_DB = "analysis_work"
"""The database of the working tables that grow with the events (``ev``, ``novelty``): compressed
(about a sixth of an uncompressed temporary table), a scratch file beside the timeline in an analysis run
(:func:`attach_work`), else in memory."""


def attach_work(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach ``WORK_DB`` as the scratch file ``path`` (replaced if a run before left it): what a query writes
    there is compressed as it is written, and read back through the buffer pool within the memory limit."""
    remove_work(path)
    quoted = str(path).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {WORK_DB}")


def remove_work(path: Path) -> None:
    """Delete the scratch file of :func:`attach_work` (and its write-ahead log)."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def work_table(
    con: duckdb.DuckDBPyConnection, name: str, select_sql: str, params: dict[str, Any] | None = None
) -> None:
    """Create ``name`` from ``select_sql`` in ``WORK_DB`` (in memory, compressed, when none is attached) and a
    temporary view ``name`` of it, so that readers name it like any working table."""
    con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {WORK_DB} (COMPRESS)")
    con.execute(f"CREATE OR REPLACE TABLE {WORK_DB}.{name} AS {select_sql}", params)
    con.execute(f"CHECKPOINT {WORK_DB}")  # an in-memory database compresses at the checkpoint
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {WORK_DB}.{name}")


def build_event_view(con: duckdb.DuckDBPyConnection, window: AnalysisWindow) -> None:
    """``ev``: the non-responder events with identity, /24 network, user-agent family and window flags.

    The raw record stays in ``events`` (joined by ``event_uid`` where a rule reads it): no JSON is copied into
    the working tables; ``ev`` itself is compressed (:func:`work_table`)."""
    work_table(
        con,
        "ev",
        r"""
        WITH actors AS (  -- identity and service judged once per distinct actor, not per event
            SELECT actor_key, actor_type,
                CASE
                    WHEN actor_key = '' THEN 'anonymous'
                    -- people behind SSO / federation keep their session name (the person); workloads collapse to
                    -- the role
                    WHEN regexp_matches(actor_key, ':assumed-role/AWSReservedSSO_|:assumed-role/[^/]+/[^/]*@')
                        THEN actor_key
                    ELSE regexp_replace(actor_key, '^arn:aws:sts::(\d+):assumed-role/([^/]+)/.*$',
                                        'arn:aws:iam::\1:role/\2')
                END AS identity,
                -- services acting for the account: AWS services and service-linked roles, Google-managed service
                -- agents
                (actor_type = 'AWSService' OR actor_key LIKE '%.amazonaws.com'
                 OR regexp_matches(actor_key, ':role/aws-service-role/|:assumed-role/AWSServiceRoleFor')
                 OR regexp_matches(actor_key,
                                   '@(gcp-sa-[a-z0-9-]+\.iam|cloudservices|container-engine-robot|compute-system)'
                                   || '\.gserviceaccount\.com$')) AS aws_service
            FROM (SELECT DISTINCT coalesce(actor, '') AS actor_key, actor_type FROM events WHERE NOT is_responder)
        ),
        agents AS (  -- the user-agent family once per distinct user agent
            SELECT agent_key,
                CASE
                    WHEN agent_key ILIKE '%console%.amazonaws.com%' OR agent_key ILIKE 'signin.amazonaws.com%'
                         OR agent_key ILIKE '%ConsoleFrontend%'
                        THEN 'aws-console'
                    WHEN regexp_matches(agent_key, '^[a-z0-9.-]+\.amazonaws\.com$') OR agent_key = 'AWS Internal'
                        THEN 'aws-service'
                    ELSE coalesce(nullif(regexp_extract(
                        lower(regexp_replace(agent_key, '^[^A-Za-z]+', '')),
                        '^([a-z][a-z0-9.-]*[a-z0-9])', 1), ''), '-')
                END AS ua_family
            FROM (SELECT DISTINCT coalesce(user_agent, '') AS agent_key FROM events WHERE NOT is_responder)
        )
        SELECT
            event_uid, event_id, time, cloud, source_format, account, region, operation, e.actor_type, session,
            source_ip, user_agent, error_code, read_only,
            coalesce(nullif(actor, ''), 'anonymous') AS actor,
            a.identity, a.aws_service,
            regexp_replace(lower(coalesce(service, '')), '\.amazonaws\.com$', '') AS service,
            regexp_replace(lower(coalesce(service, '')), '\.amazonaws\.com$', '') || ':' || operation AS op_key,
            CASE
                WHEN regexp_matches(source_ip, '^\d+\.\d+\.\d+\.\d+$')
                    THEN regexp_extract(source_ip, '^(\d+\.\d+\.\d+)\.', 1) || '.0/24'
                WHEN contains(source_ip, ':') THEN regexp_extract(source_ip, '^([^:]*:[^:]*:[^:]*)', 1) || '::/48'
                ELSE coalesce(lower(source_ip), '-')
            END AS network,
            g.ua_family,
            CAST(hour(time) // 3 AS VARCHAR) AS hour_block,
            (status = 'failure' OR error_code IS NOT NULL) AS failed,
            time < $baseline_until AS in_baseline,
            time >= $incident_since AS in_incident,
            -- what rarity is learned from: the baseline, or in tenant mode (short history) the whole timeline
            $tenant OR time < $baseline_until AS in_reference
        FROM events e
        JOIN actors a ON a.actor_key = coalesce(e.actor, '') AND a.actor_type IS NOT DISTINCT FROM e.actor_type
        JOIN agents g ON g.agent_key = coalesce(e.user_agent, '')
        WHERE NOT is_responder
        """,
        {"baseline_until": window.baseline_until, "incident_since": window.incident_since, "tenant": window.tenant},
    )


def resolve_principals(con: duckdb.DuckDBPyConnection) -> None:
    """Join AWS principals logged without an ARN (a principal id, an access key, a bare user or role name) to the
    one identity they belong to, found in the events that carry both; ambiguous ones stay as logged."""
    unresolved = con.execute(
        "SELECT count(*) FROM ev WHERE cloud = 'aws' AND NOT aws_service AND actor NOT LIKE 'arn:%' "
        "AND actor <> 'anonymous'"
    ).fetchone()
    if not unresolved or not unresolved[0]:
        return
    con.execute(
        r"""
        CREATE OR REPLACE TEMP TABLE principal_map AS
        WITH u AS (
            SELECT DISTINCT actor, account, session FROM ev
            WHERE cloud = 'aws' AND NOT aws_service AND actor NOT LIKE 'arn:%' AND actor <> 'anonymous'
        ),
        sessions AS (  -- one record per identity and session is enough to read its principal id
            SELECT identity, account, session, min(event_uid) AS event_uid
            FROM ev WHERE cloud = 'aws' AND actor LIKE 'arn:%' AND NOT aws_service GROUP BY ALL
        ),
        known AS (
            SELECT DISTINCT s.identity, s.account, s.session,
                   split_part(json_extract_string(e.raw, '$.userIdentity.principalId'), ':', 1) AS principal_id,
                   regexp_extract(s.identity, '[:/]([^/:]+)$', 1) AS name
            FROM sessions s JOIN events e USING (event_uid)
        ),
        matches AS (
            SELECT u.actor, u.account, k.identity FROM u JOIN known k
                ON k.account = u.account AND k.principal_id = split_part(u.actor, ':', 1)
            UNION ALL
            SELECT u.actor, u.account, k.identity FROM u JOIN known k ON k.account = u.account AND k.name = u.actor
            UNION ALL
            SELECT u.actor, u.account, k.identity FROM u JOIN known k ON k.session = u.session
        )
        SELECT actor, account, min(identity) AS identity FROM matches
        GROUP BY actor, account HAVING count(DISTINCT identity) = 1
        """
    )
    con.execute(
        f"UPDATE {WORK_DB}.ev SET identity = m.identity FROM principal_map m "
        "WHERE ev.actor = m.actor AND ev.account IS NOT DISTINCT FROM m.account AND ev.cloud = 'aws'"
    )
    con.execute("DROP TABLE principal_map")
    con.execute(f"CHECKPOINT {WORK_DB}")


def build_profiles(con: duckdb.DuckDBPyConnection, *, tenant: bool) -> None:
    """Reference counts (baseline, or the whole timeline in tenant mode) per identity and tenant-wide.

    Distinct days are counted in two plain aggregations (per day, then per value) rather than a DISTINCT
    aggregate; a (identity, dimension, value) is one ``profile`` row, so identities are counted with ``count(*)``.
    ``tenant_profile`` (per account) is built only in tenant mode, the only one that reads it."""
    unpivot = " UNION ALL ".join(
        f"SELECT identity, '{dim}' AS dim, CAST({col} AS VARCHAR) AS value, CAST(time AS DATE) AS day FROM ev "
        f"WHERE in_reference AND {col} IS NOT NULL"
        for dim, col in PROFILE_DIMENSIONS.items()
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE profile AS
        SELECT identity, dim, value, CAST(sum(n) AS BIGINT) AS n_events, count(*) AS n_days
        FROM (SELECT identity, dim, value, day, count(*) AS n FROM ({unpivot}) GROUP BY ALL) GROUP BY ALL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE identity_totals AS
        SELECT identity, count(*) AS n_events, count(DISTINCT CAST(time AS DATE)) AS n_days,
               min(time) AS first_seen, mode(account ORDER BY account) AS home_account
        FROM ev WHERE in_reference GROUP BY identity
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE global_profile AS
        SELECT dim, value, count(*) AS n_identities, CAST(sum(n_events) AS BIGINT) AS n_events
        FROM profile GROUP BY ALL
        """
    )
    if tenant:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE tenant_profile AS
            SELECT t.home_account, p.dim, p.value, count(*) AS n_identities
            FROM profile p JOIN identity_totals t USING (identity) GROUP BY ALL
            """
        )
