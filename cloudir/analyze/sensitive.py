"""Sensitive actions across AWS, Azure and GCP: log tampering, persistence, privilege escalation, exfiltration,
credential access, execution and lateral movement. Scores are tempered later by pattern of life."""

from __future__ import annotations

from collections.abc import Iterable

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta
from cloudir.analyze.catalog import load_catalog, match_events

META = AnalyzerMeta(
    name="sensitive_actions",
    description=(
        "The rule catalog (cloudir/analyze/rules/*.yaml: AWS, Azure, Entra, GCP and Kubernetes audit) of "
        "security-relevant operations - log tampering, persistence, privilege escalation, exfiltration by sharing, "
        "credential access, remote execution, impact - with conditions on request fields and bulk thresholds; "
        "scores are lowered when the identity does the operation routinely and raised when neither it nor its "
        "peers ever did; plus instance credentials used away from their instance."
    ),
    mitre=tuple(sorted({rule.mitre for rule in load_catalog().rules} | {"T1552.005"})),
    default_weight=1.0,
)


BULK_WINDOW_MINUTES = 10
EPISODE_GAP_MINUTES = 60
"""Hits of one rule, identity, session and operation less than this apart form one finding (one episode)."""
INSTANCE_CREDENTIALS_SCORE = 70
INSTANCE_CREDENTIALS_NEW_ROLE_SCORE = 50
INSTANCE_AGENTS = "'amazon-ssm-agent|amazon-cloudwatch-agent|CWAgent/|ec2-instance-connect'"
PRIVATE_ADDRESS = r"'^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.)'"
IP_ADDRESS = r"'^(\d{1,3}\.){3}\d{1,3}$|^[0-9a-fA-F]*:[0-9a-fA-F:.]*$'"
AGENT_CHANNELS = "'ssmmessages', 'ec2messages'"
"""The SSM agent's channels to Systems Manager (AWS: "endpoints the SSM Agent uses"): its calls, not a person's."""
OWN_MIN_SESSIONS = 2
OWN_MIN_DAYS = 3
"""A network is the instances' own when this many of the role's instance sessions, or one on this many days,
use it (or their agents do)."""


def run(con: duckdb.DuckDBPyConnection, rule_events: str, known_accounts: Iterable[str] = ()) -> None:
    """Insert one candidate per rule, identity, session, operation and episode (bulk rules: per 10 minutes);
    ``rule_events``: the query :func:`cloudir.analyze.catalog.build_rule_events` returned for the catalog;
    ``known_accounts``: the case's AWS accounts beside the timeline's (the config's ``[accounts]``)."""
    _catalog(con, rule_events, known_accounts)
    _instance_credentials(con)


def _instance_credentials(con: duckdb.DuckDBPyConnection) -> None:
    """EC2 instance-profile sessions (session name = instance id) calling from a network that is not the role's
    instances' own: credentials taken off the instance (T1552.005). Every event of the timeline is scored, the
    baseline included: a theft three weeks ago is still a theft.

    A network is the instances' own by evidence only: their agents (SSM, CloudWatch) call from it - an agent's
    user agent from a private address, or for at least 6 hours from one network (a user agent string alone is
    attacker-chosen and proves nothing) - or at least two of the role's instance sessions, or one on at least
    three days, use it. Stolen credentials are one session used from elsewhere, for a while. With no network of the
    role's to compare with, a private address (a VPC: the instance's own, through an endpoint, as likely as a
    neighbour's) is no evidence that the credentials left the instance; a public one is.

    One finding per session and network: the misuse is one fact, however many hours it spans."""
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, event_count)
        WITH inst AS (
            SELECT ev.*, json_extract_string(e.raw, '$.userIdentity.invokedBy') AS invoked_by
            FROM ev JOIN (SELECT event_uid, raw FROM events) e USING (event_uid)
            WHERE ev.cloud = 'aws' AND NOT ev.aws_service
              AND regexp_matches(ev.actor, ':assumed-role/[^/]+/i-[0-9a-fA-F]{{8,17}}$')
        ),
        agents AS (
            SELECT identity, network FROM inst
            WHERE regexp_matches(coalesce(user_agent, ''), {INSTANCE_AGENTS}, 'i')
            GROUP BY identity, network
            HAVING bool_or(regexp_matches(coalesce(source_ip, ''), {PRIVATE_ADDRESS}))
                OR max(time) - min(time) >= INTERVAL 6 HOUR
        ),
        shared AS (
            SELECT identity, network FROM inst GROUP BY identity, network
            HAVING count(DISTINCT actor) >= {OWN_MIN_SESSIONS} OR count(DISTINCT CAST(time AS DATE)) >= {OWN_MIN_DAYS}
        ),
        known AS (
            SELECT identity, list(DISTINCT network ORDER BY network) AS networks
            FROM (SELECT identity, network FROM shared UNION ALL SELECT identity, network FROM agents)
            GROUP BY identity
        )
        SELECT 'sensitive_actions', 'aws-instance-credentials-elsewhere',
               CASE WHEN any_value(k.networks) IS NULL THEN {INSTANCE_CREDENTIALS_NEW_ROLE_SCORE}
                    ELSE {INSTANCE_CREDENTIALS_SCORE} END,
               i.actor, i.identity, min(i.session), min(i.time), max(i.time),
               'Instance credentials used from ' || i.network || ': ' || i.actor,
               'EC2 instance-profile credentials (session ' || regexp_extract(i.actor, '[^/]+$') || ') called '
                   || count(*) || ' APIs ('
                   || array_to_string(list(DISTINCT i.op_key ORDER BY i.op_key)[1:5], ', ') || ') from '
                   || i.network || ' with ' || min(i.ua_family) || '; '
                   || CASE WHEN any_value(k.networks) IS NULL
                           THEN 'the role has no other instance session, repeated use or agent calls to compare with'
                           ELSE 'its instances and their agents use only '
                                || array_to_string(any_value(k.networks)[1:3], ', ')
                      END,
               ['T1552.005'], list(i.event_id ORDER BY i.time, i.event_id)[1:{MAX_EVENT_IDS}], count(*)
        FROM inst i LEFT JOIN known k USING (identity)
        WHERE NOT list_contains(coalesce(k.networks, []), i.network)
          -- an AWS service calling with the role (invokedBy, a service name or "AWS Internal" as the source) and
          -- the SSM agent's own message channels are the instance's, not its credentials used elsewhere
          AND i.invoked_by IS NULL AND regexp_matches(coalesce(i.source_ip, ''), {IP_ADDRESS})
          AND i.service NOT IN ({AGENT_CHANNELS})
          AND NOT (k.networks IS NULL AND regexp_matches(i.source_ip, {PRIVATE_ADDRESS}))
        GROUP BY i.identity, i.actor, i.network
        """
    )


def _catalog(con: duckdb.DuckDBPyConnection, rule_events: str, known_accounts: Iterable[str]) -> None:
    catalog = match_events(con, rule_events, known_accounts=known_accounts)
    # only the rules that matched something: the statements below are planned for those alone (a small timeline
    # matches a few of the catalog's rules, and planning every rule's explanation dominated its analysis)
    hit = {row[0] for row in con.execute("SELECT DISTINCT rule FROM rule_hits").fetchall()}
    rules = [rule for rule in catalog.rules if rule.rule_id in hit]
    if not rules:
        con.execute("DROP TABLE rule_hits")
        return
    columns = [
        [r.rule_id, r.title, r.mitre, r.score, r.bulk_min if r.bulk_sql else None, r.floor, r.failed_factor]
        for r in rules
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE sens_rules AS SELECT unnest($1::VARCHAR[]) AS rule, unnest($2::VARCHAR[]) AS "
        "title, unnest($3::VARCHAR[]) AS mitre, unnest($4::INTEGER[]) AS score, unnest($5::INTEGER[]) AS bulk_min, "
        "unnest($6::INTEGER[]) AS floor, unnest($7::DOUBLE[]) AS failed_factor",
        [list(column) for column in zip(*columns, strict=True)],
    )
    explanation = "CASE rule " + " ".join(f"WHEN {r.id_sql} THEN {r.explanation_sql}" for r in rules) + " END"
    sql = f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, op_key, temper, floor, event_count)
        -- a refused call is no evidence that the change was made: its own finding, as an attempt; ties in time are
        -- ordered by event id, so that calls of the same second are one episode in every run
        WITH outcomes AS (
            SELECT h.*, CASE WHEN r.bulk_min IS NULL THEN h.failed END AS outcome
            FROM rule_hits h JOIN sens_rules r USING (rule)
        ),
        gapped AS (
            SELECT *, coalesce(time - lag(time) OVER (PARTITION BY rule, identity, session, op_key, outcome
                                                      ORDER BY time, event_id)
                               > INTERVAL '{EPISODE_GAP_MINUTES} minutes', true) AS starts
            FROM outcomes
        ),
        episodes AS (
            SELECT g.*, CASE WHEN r.bulk_min IS NULL
                THEN sum(CAST(g.starts AS INTEGER)) OVER (PARTITION BY g.rule, g.identity, g.session, g.op_key,
                                                                       g.outcome
                                                           ORDER BY g.time, g.event_id ROWS UNBOUNDED PRECEDING)
                ELSE epoch(time_bucket(INTERVAL '{BULK_WINDOW_MINUTES} minutes', g.time)) END AS bucket
            FROM gapped g JOIN sens_rules r USING (rule)
        ),
        grouped AS (
            SELECT h.rule, h.identity, h.session, h.op_key, h.bucket, h.outcome,
                   min(h.actor) AS actor, min(h.time) AS t0, max(h.time) AS t1, count(*) AS n,
                   bool_and(h.failed) AS all_failed, count(DISTINCT h.bulk_value) AS distinct_values,
                   list(h.event_id ORDER BY h.time, h.event_id) AS ids,
                   any_value(r.title) AS title, any_value(r.mitre) AS mitre, any_value(r.score) AS score,
                   any_value(r.bulk_min) AS bulk_min, any_value(r.floor) AS floor,
                   any_value(r.failed_factor) AS failed_factor
            FROM episodes h JOIN sens_rules r USING (rule)
            GROUP BY h.rule, h.identity, h.session, h.op_key, h.bucket, h.outcome
        )
        SELECT 'sensitive_actions', rule,
               score * CASE WHEN all_failed THEN failed_factor ELSE 1 END,
               actor, identity, session, t0, t1,
               title || ': ' || op_key || ' by ' || identity,
               ({explanation}) || CASE WHEN all_failed THEN ', every attempt failed' ELSE '' END,
               [mitre], ids[1:{MAX_EVENT_IDS}], op_key, true,
               floor * CASE WHEN all_failed THEN failed_factor ELSE 1 END, n
        FROM grouped
        WHERE bulk_min IS NULL OR distinct_values >= bulk_min
    """
    con.execute(sql, catalog.bound(sql))
    con.execute("DROP TABLE rule_hits")
    con.execute("DROP TABLE sens_rules")
