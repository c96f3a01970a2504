"""Sensitive actions across AWS, Azure and GCP: log tampering, persistence, privilege escalation, exfiltration,
credential access, execution and lateral movement. Scores are tempered later by pattern of life."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cloudir.analyze.base import MAX_EVENT_IDS, AnalyzerMeta

META = AnalyzerMeta(
    name="sensitive_actions",
    description=(
        "A catalog of security-relevant control-plane operations in the three clouds (log tampering, persistence, "
        "privilege escalation, exfiltration by sharing, credential access, remote execution, lateral movement), "
        "with request-parameter conditions and bulk thresholds; scores are lowered when the identity does the "
        "operation routinely and raised when neither it nor its peers ever did."
    ),
    mitre=("T1562.008", "T1098", "T1136.003", "T1537", "T1552", "T1555.006", "T1651", "T1021", "T1496"),
    default_weight=1.0,
)


@dataclass(frozen=True)
class SensitiveRule:
    """One catalog entry: operations (lower case, API version suffix removed) and an optional condition."""

    rule_id: str
    title: str
    mitre: str
    score: int
    cloud: str
    operations: tuple[str, ...]
    condition: str = "true"
    bulk_value: str | None = None
    bulk_min: int = 0
    floor: int | None = None
    """Tempering never lowers a finding below this (default: half the score)."""


def _req(path: str) -> str:
    return f"json_extract_string(raw, '$.requestParameters.{path}')"


_ADMIN_POLICY = (
    f"(coalesce({_req('policyArn')}, '') ILIKE '%AdministratorAccess%' "
    f"OR coalesce({_req('policyArn')}, '') ILIKE '%IAMFullAccess%' "
    f"OR regexp_matches(coalesce({_req('policyDocument')}, ''), '\"Action\"\\s*:\\s*\"\\*\"'))"
)
_PUBLIC = "(contains(CAST(raw AS VARCHAR), 'allUsers') OR contains(CAST(raw AS VARCHAR), 'allAuthenticatedUsers'))"
_LARGE_INSTANCE = (
    f"regexp_matches(coalesce({_req('instanceType')}, ''), "
    "'^(p\\d|g\\d|inf\\d|trn\\d|x\\d|dl\\d)|metal|(24|32|48)xlarge')"
)

CATALOG: tuple[SensitiveRule, ...] = (
    # --- log tampering / defence evasion
    SensitiveRule(
        "aws-trail-tampering",
        "CloudTrail trail stopped, deleted or its selectors changed",
        "T1562.008",
        85,
        "aws",
        ("stoplogging", "deletetrail", "updatetrail", "puteventselectors", "putinsightselectors"),
    ),
    SensitiveRule("aws-flow-logs-deleted", "VPC flow logs deleted", "T1562.008", 75, "aws", ("deleteflowlogs",)),
    SensitiveRule(
        "aws-dns-logs-deleted",
        "Route 53 resolver query logging removed",
        "T1562.008",
        75,
        "aws",
        ("deleteresolverquerylogconfig", "disassociateresolverquerylogconfig"),
    ),
    SensitiveRule(
        "aws-monitoring-disabled",
        "GuardDuty, Config or Security Hub disabled",
        "T1562.001",
        75,
        "aws",
        (
            "deletedetector",
            "disassociatefrommasteraccount",
            "stopconfigurationrecorder",
            "deleteconfigurationrecorder",
            "deletedeliverychannel",
            "disablesecurityhub",
        ),
    ),
    SensitiveRule(
        "aws-leave-organization",
        "Account tried to leave its AWS Organization",
        "T1562",
        85,
        "aws",
        ("leaveorganization",),
    ),
    SensitiveRule("aws-log-group-deleted", "CloudWatch log group deleted", "T1070", 50, "aws", ("deleteloggroup",)),
    # --- persistence
    SensitiveRule("aws-iam-user-created", "IAM user created", "T1136.003", 55, "aws", ("createuser",)),
    SensitiveRule("aws-access-key-created", "IAM access key created", "T1098.001", 55, "aws", ("createaccesskey",)),
    SensitiveRule(
        "aws-login-profile",
        "Console password (login profile) created or changed",
        "T1098",
        65,
        "aws",
        ("createloginprofile", "updateloginprofile"),
    ),
    SensitiveRule(
        "aws-trust-policy-changed", "Role trust policy changed", "T1098", 65, "aws", ("updateassumerolepolicy",)
    ),
    SensitiveRule("aws-role-created", "IAM role created", "T1098", 40, "aws", ("createrole",)),
    SensitiveRule(
        "aws-federation-token",
        "Federation token issued for an IAM user",
        "T1550.001",
        55,
        "aws",
        ("getfederationtoken",),
    ),
    SensitiveRule(
        "aws-roles-anywhere",
        "IAM Roles Anywhere trust anchor or profile created",
        "T1098",
        70,
        "aws",
        ("createtrustanchor", "createprofile"),
    ),
    SensitiveRule(
        "aws-lambda-public-permission",
        "Lambda function made invocable by anyone or another account",
        "T1648",
        65,
        "aws",
        ("addpermission",),
        f"({_req('principal')} = '*' OR regexp_matches(coalesce({_req('principal')}, ''), '^\\d{{12}}$'))",
    ),
    SensitiveRule(
        "aws-lambda-code-changed", "Lambda function code overwritten", "T1648", 45, "aws", ("updatefunctioncode",)
    ),
    SensitiveRule(
        "aws-lambda-layer-added",
        "Lambda layer or extension attached",
        "T1648",
        50,
        "aws",
        ("updatefunctionconfiguration",),
        "json_extract(raw, '$.requestParameters.layers') IS NOT NULL",
    ),
    # --- privilege escalation
    SensitiveRule(
        "aws-admin-policy-attached",
        "Administrator-level policy attached",
        "T1098.003",
        70,
        "aws",
        (
            "attachuserpolicy",
            "attachrolepolicy",
            "attachgrouppolicy",
            "putuserpolicy",
            "putrolepolicy",
            "putgrouppolicy",
        ),
        _ADMIN_POLICY,
    ),
    SensitiveRule(
        "aws-policy-version-default",
        "New default IAM policy version",
        "T1098.003",
        50,
        "aws",
        ("createpolicyversion", "setdefaultpolicyversion"),
    ),
    # --- execution and lateral movement
    SensitiveRule(
        "aws-ssm-command", "Command run on instances through SSM", "T1651", 50, "aws", ("sendcommand", "startsession")
    ),
    SensitiveRule(
        "aws-user-data-changed",
        "Instance user data (startup script) modified",
        "T1059",
        60,
        "aws",
        ("modifyinstanceattribute",),
        "json_extract(raw, '$.requestParameters.userData') IS NOT NULL",
    ),
    SensitiveRule(
        "aws-unusual-instances",
        "GPU or very large instances launched",
        "T1496",
        55,
        "aws",
        ("runinstances",),
        _LARGE_INSTANCE,
    ),
    SensitiveRule(
        "aws-instance-connect",
        "SSH key pushed to an instance (EC2 Instance Connect / serial console)",
        "T1021.004",
        55,
        "aws",
        ("sendsshpublickey", "sendserialconsolesshpublickey", "enableserialconsoleaccess"),
    ),
    SensitiveRule(
        "aws-bedrock-enabled",
        "Foundation model access enabled (LLM hijacking)",
        "T1496",
        55,
        "aws",
        ("putusecaseformodelaccess", "createfoundationmodelagreement", "putfoundationmodelentitlement"),
    ),
    SensitiveRule(
        "aws-console-login-no-mfa",
        "Console login without MFA",
        "T1078.004",
        50,
        "aws",
        ("consolelogin",),
        "json_extract_string(raw, '$.additionalEventData.MFAUsed') = 'No' "
        "AND coalesce(actor_type, '') NOT IN ('AssumedRole', 'FederatedUser')",
    ),
    SensitiveRule(
        "aws-root-activity",
        "Root user activity",
        "T1078.004",
        60,
        "aws",
        ("*",),
        "actor_type = 'Root' AND json_extract_string(raw, '$.userIdentity.invokedBy') IS NULL",
    ),
    # --- exfiltration
    SensitiveRule(
        "aws-snapshot-shared",
        "EBS snapshot shared with another account or made public",
        "T1537",
        75,
        "aws",
        ("modifysnapshotattribute",),
        "json_extract(raw, '$.requestParameters.createVolumePermission.add') IS NOT NULL",
    ),
    SensitiveRule(
        "aws-ami-shared",
        "AMI shared with another account or made public",
        "T1537",
        70,
        "aws",
        ("modifyimageattribute",),
        "json_extract(raw, '$.requestParameters.launchPermission.add') IS NOT NULL",
    ),
    SensitiveRule(
        "aws-db-snapshot-shared",
        "RDS snapshot shared with another account or made public",
        "T1537",
        75,
        "aws",
        ("modifydbsnapshotattribute", "modifydbclustersnapshotattribute"),
        f"lower({_req('attributeName')}) = 'restore' "
        "AND json_extract(raw, '$.requestParameters.valuesToAdd') IS NOT NULL",
    ),
    SensitiveRule(
        "aws-bucket-public",
        "S3 bucket opened to the public",
        "T1530",
        70,
        "aws",
        ("putbucketpolicy", "putbucketacl", "deletebucketpublicaccessblock", "deletepublicaccessblock"),
        "(lower(operation) LIKE 'delete%' OR regexp_matches(CAST(raw AS VARCHAR), "
        '\'"Principal\\\\?"\\s*:\\s*(\\{\\s*\\\\?"AWS\\\\?"\\s*:\\s*)?\\\\?"\\*|AllUsers\'))',
    ),
    SensitiveRule(
        "aws-ingress-open-world",
        "Security group opened to the whole internet",
        "T1562.007",
        50,
        "aws",
        ("authorizesecuritygroupingress",),
        "regexp_matches(CAST(raw AS VARCHAR), '/0\"')",
    ),
    # --- credential access
    SensitiveRule(
        "aws-password-data", "Windows instance password data requested", "T1552", 60, "aws", ("getpassworddata",)
    ),
    SensitiveRule(
        "aws-secrets-batch", "Secrets Manager batch secret retrieval", "T1555.006", 60, "aws", ("batchgetsecretvalue",)
    ),
    SensitiveRule(
        "aws-secrets-bulk",
        "Many distinct secrets read in a few minutes",
        "T1555.006",
        65,
        "aws",
        ("getsecretvalue",),
        bulk_value=_req("secretId"),
        bulk_min=5,
    ),
    SensitiveRule(
        "aws-parameters-bulk",
        "Many SecureString parameters decrypted in a few minutes",
        "T1552",
        60,
        "aws",
        ("getparameter", "getparameters", "describeparameters"),
        bulk_value=f"coalesce({_req('name')}, CAST(json_extract(raw, '$.requestParameters.names') "
        "AS VARCHAR), 'describe')",
        bulk_min=4,
    ),
    # --- Azure
    SensitiveRule(
        "azure-diagnostic-settings-deleted",
        "Azure diagnostic setting or log profile deleted",
        "T1562.008",
        80,
        "azure",
        (
            "microsoft.insights/diagnosticsettings/delete",
            "microsoft.insights/logprofiles/delete",
            "microsoft.aadiam/diagnosticsettings/delete",
        ),
    ),
    SensitiveRule(
        "azure-disk-export",
        "Managed disk or snapshot exported (SAS URL generated)",
        "T1537",
        65,
        "azure",
        ("microsoft.compute/snapshots/begingetaccess/action", "microsoft.compute/disks/begingetaccess/action"),
    ),
    SensitiveRule(
        "azure-role-assignment",
        "Azure role assignment created",
        "T1098.003",
        45,
        "azure",
        ("microsoft.authorization/roleassignments/write",),
    ),
    SensitiveRule(
        "entra-credentials-added",
        "Credentials added to an application or service principal",
        "T1098.001",
        60,
        "azure",
        (
            "add service principal credentials",
            "update application - certificates and secrets management",
            "update application \u2013 certificates and secrets management",
        ),
    ),
    SensitiveRule(
        "entra-user-or-role",
        "Entra user created or added to a role",
        "T1136.003",
        50,
        "azure",
        ("add user", "add member to role", "add eligible member to role", "add owner to application"),
    ),
    # --- GCP
    SensitiveRule(
        "gcp-log-sink-changed",
        "Cloud Logging sink deleted or changed",
        "T1562.008",
        80,
        "gcp",
        (
            "google.logging.v2.configservicev2.deletesink",
            "google.logging.v2.configservicev2.updatesink",
            "google.logging.v2.loggingservicev2.deletelog",
        ),
    ),
    SensitiveRule(
        "gcp-service-account-key",
        "Service account key created",
        "T1098.001",
        55,
        "gcp",
        ("google.iam.admin.v1.createserviceaccountkey",),
    ),
    SensitiveRule(
        "gcp-service-account-created",
        "Service account created",
        "T1136.003",
        45,
        "gcp",
        ("google.iam.admin.v1.createserviceaccount",),
    ),
    SensitiveRule(
        "gcp-public-iam",
        "Resource IAM policy grants allUsers / allAuthenticatedUsers",
        "T1537",
        75,
        "gcp",
        ("*",),
        f"(lower(operation) LIKE '%setiampolicy' OR lower(operation) = 'storage.setiampermissions') AND {_PUBLIC}",
    ),
    SensitiveRule(
        "gcp-iam-policy-changed",
        "Project or resource IAM policy changed",
        "T1098.003",
        40,
        "gcp",
        ("*",),
        "lower(operation) LIKE '%setiampolicy'",
    ),
    SensitiveRule(
        "gcp-secrets-bulk",
        "Many distinct Secret Manager secrets read in a few minutes",
        "T1555.006",
        60,
        "gcp",
        ("google.cloud.secretmanager.v1.secretmanagerservice.accesssecretversion",),
        bulk_value="json_extract_string(raw, '$.protoPayload.resourceName')",
        bulk_min=5,
    ),
)

BULK_WINDOW_MINUTES = 10
EPISODE_GAP_MINUTES = 60
"""Hits of one rule, identity, session and operation less than this apart form one finding (one episode)."""
FAILED_FACTOR = 0.85
INSTANCE_CREDENTIALS_SCORE = 70
INSTANCE_CREDENTIALS_NEW_ROLE_SCORE = 50
INSTANCE_AGENTS = "'amazon-ssm-agent|amazon-cloudwatch-agent|CWAgent/|ec2-instance-connect'"
PRIVATE_ADDRESS = r"'^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.)'"


def _select(rule: SensitiveRule) -> str:
    ops = "true" if rule.operations == ("*",) else "op_base IN (" + ", ".join(f"'{o}'" for o in rule.operations) + ")"
    bulk = rule.bulk_value or "NULL"
    return (
        f"SELECT '{rule.rule_id}' AS rule, event_id, time, actor, identity, session, op_key, failed, "
        f"CAST({bulk} AS VARCHAR) AS bulk_value FROM sens_ev WHERE cloud = '{rule.cloud}' AND {ops} "
        f"AND ({rule.condition})"
    )


def run(con: duckdb.DuckDBPyConnection) -> None:
    """Insert one candidate per rule, identity, session, operation and episode (bulk rules: per 10 minutes)."""
    _catalog(con)
    _instance_credentials(con)


def _instance_credentials(con: duckdb.DuckDBPyConnection) -> None:
    """EC2 instance-profile sessions (session name = instance id) calling from a network that the role's
    instance sessions never used in the baseline, nor its instances' own agents: credentials taken off the
    instance (T1552.005).

    An agent (SSM, CloudWatch) is recognised by evidence: its user agent calling from a private address, or for
    at least 6 hours from one network - a user agent string alone is attacker-chosen and proves nothing.

    One finding per session and network over the whole incident window: the misuse is one fact, however many
    hours it spans."""
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, event_count)
        WITH inst AS (
            SELECT * FROM ev
            WHERE cloud = 'aws' AND NOT aws_service
              AND regexp_matches(actor, ':assumed-role/[^/]+/i-[0-9a-fA-F]{{8,17}}$')
        ),
        agents AS (
            SELECT identity, network FROM inst
            WHERE regexp_matches(coalesce(user_agent, ''), {INSTANCE_AGENTS}, 'i')
            GROUP BY identity, network
            HAVING bool_or(regexp_matches(coalesce(source_ip, ''), {PRIVATE_ADDRESS}))
                OR max(time) - min(time) >= INTERVAL 6 HOUR
        ),
        known AS (
            SELECT identity, list(DISTINCT network ORDER BY network) AS networks
            FROM (SELECT identity, network FROM inst WHERE in_baseline UNION ALL SELECT identity, network FROM agents)
            GROUP BY identity
        )
        SELECT 'sensitive_actions', 'aws-instance-credentials-elsewhere',
               CASE WHEN any_value(k.networks) IS NULL THEN {INSTANCE_CREDENTIALS_NEW_ROLE_SCORE}
                    ELSE {INSTANCE_CREDENTIALS_SCORE} END,
               i.actor, i.identity, any_value(i.session), min(i.time), max(i.time),
               'Instance credentials used from ' || i.network || ': ' || i.actor,
               'EC2 instance-profile credentials (session ' || regexp_extract(i.actor, '[^/]+$') || ') called '
                   || count(*) || ' APIs (' || array_to_string(list(DISTINCT i.op_key)[1:5], ', ') || ') from '
                   || i.network || ' with ' || any_value(i.ua_family) || '; '
                   || CASE WHEN any_value(k.networks) IS NULL
                           THEN 'the role has no instance activity in the baseline nor agent calls to compare with'
                           ELSE 'its instances and their agents used only '
                                || array_to_string(any_value(k.networks)[1:3], ', ')
                      END,
               ['T1552.005'], list(i.event_id ORDER BY i.time, i.event_id)[1:{MAX_EVENT_IDS}], count(*)
        FROM inst i LEFT JOIN known k USING (identity)
        WHERE i.in_incident AND NOT list_contains(coalesce(k.networks, []), i.network)
        GROUP BY i.identity, i.actor, i.network
        """
    )


def _catalog(con: duckdb.DuckDBPyConnection) -> None:
    named = sorted({op for rule in CATALOG for op in rule.operations if op != "*"})
    any_operation = " OR ".join(f"(cloud = '{r.cloud}' AND {r.condition})" for r in CATALOG if r.operations == ("*",))
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE sens_ev AS
        SELECT * FROM (SELECT *, lower(regexp_replace(operation, '20\\d{{6}}(v\\d+)?$', '')) AS op_base FROM ev)
        WHERE op_base IN ({", ".join(f"'{op}'" for op in named)}) OR {any_operation}
        """
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE sens_rules (rule VARCHAR, title VARCHAR, mitre VARCHAR, score INTEGER, "
        "bulk_min INTEGER, floor INTEGER)"
    )
    con.executemany(
        "INSERT INTO sens_rules VALUES (?, ?, ?, ?, ?, ?)",
        [
            [r.rule_id, r.title, r.mitre, r.score, r.bulk_min if r.bulk_value else None, r.floor or r.score // 2]
            for r in CATALOG
        ],
    )
    hits = " UNION ALL ".join(_select(rule) for rule in CATALOG)
    con.execute(
        f"""
        INSERT INTO candidates (analyzer, rule, raw_score, actor, identity, session, first_time, last_time,
                                title, explanation, mitre, event_ids, op_key, temper, floor, event_count)
        WITH hits AS ({hits}),
        gapped AS (
            SELECT *, coalesce(time - lag(time) OVER (PARTITION BY rule, identity, session, op_key ORDER BY time)
                               > INTERVAL '{EPISODE_GAP_MINUTES} minutes', true) AS starts
            FROM hits
        ),
        episodes AS (
            SELECT g.*, CASE WHEN r.bulk_min IS NULL
                THEN sum(CAST(g.starts AS INTEGER)) OVER (PARTITION BY g.rule, g.identity, g.session, g.op_key
                                                           ORDER BY g.time ROWS UNBOUNDED PRECEDING)
                ELSE epoch(time_bucket(INTERVAL '{BULK_WINDOW_MINUTES} minutes', g.time)) END AS bucket
            FROM gapped g JOIN sens_rules r USING (rule)
        ),
        grouped AS (
            SELECT h.rule, h.identity, h.session, h.op_key, h.bucket,
                   any_value(h.actor) AS actor, min(h.time) AS t0, max(h.time) AS t1, count(*) AS n,
                   bool_and(h.failed) AS all_failed, count(DISTINCT h.bulk_value) AS distinct_values,
                   list(h.event_id ORDER BY h.time, h.event_id) AS ids,
                   any_value(r.title) AS title, any_value(r.mitre) AS mitre, any_value(r.score) AS score,
                   any_value(r.bulk_min) AS bulk_min, any_value(r.floor) AS floor
            FROM episodes h JOIN sens_rules r USING (rule)
            GROUP BY h.rule, h.identity, h.session, h.op_key, h.bucket
        )
        SELECT 'sensitive_actions', rule,
               score * CASE WHEN all_failed THEN {FAILED_FACTOR} ELSE 1 END,
               actor, identity, session, t0, t1,
               title || ': ' || op_key || ' by ' || identity,
               title || ' - ' || op_key || ' x' || n
                   || CASE WHEN bulk_min IS NOT NULL THEN ' (' || distinct_values || ' distinct targets within '
                           || '{BULK_WINDOW_MINUTES} minutes)' ELSE '' END
                   || CASE WHEN all_failed THEN ', every attempt failed' ELSE '' END,
               [mitre], ids[1:{MAX_EVENT_IDS}], op_key, true, floor, n
        FROM grouped
        WHERE bulk_min IS NULL OR distinct_values >= bulk_min
        """
    )
