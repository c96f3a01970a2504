"""The rule catalog as data: every rule's own samples, hostile values, Entra spellings, the generated coverage."""

import importlib
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.analyze import run_analysis
from cloudir.analyze.base import AnalysisWindow
from cloudir.analyze.catalog import (
    PLATFORMS,
    build_rule_events,
    coverage_table,
    load_catalog,
    match_events,
    normalise_operation,
)
from cloudir.analyze.prepare import build_event_view
from cloudir.cli import app
from cloudir.errors import CloudirError
from cloudir.ops.investigate import AnalyzeRequest
from cloudir.ops.investigate import analyze as analyze_case
from cloudir.timeline.ingest import ingest_paths
from tests.analyze.builder import T0, event, routine, write_db
from tests.analyze.conftest import Analyze

PLATFORM_DEFAULTS: dict[str, dict[str, Any]] = {
    "aws": {"cloud": "aws"},
    "azure": {"cloud": "azure", "service": "Microsoft.Resources"},
    "entra": {"cloud": "azure", "service": "Core Directory", "source_format": "entra_audit"},
    "gcp": {"cloud": "gcp", "service": "cloudresourcemanager.googleapis.com"},
    "kubernetes": {"cloud": "kubernetes", "service": "kubernetes", "source_format": "k8s_audit"},
}
INCIDENT = T0 + timedelta(days=21, hours=11)


def _sample_event(platform: str, sample: dict[str, Any]) -> dict[str, Any]:
    fields = {**PLATFORM_DEFAULTS[platform], **sample}
    return event(fields.pop("operation"), time=INCIDENT, **fields)


def _hits(tmp_path: Path, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    db = write_db(tmp_path / "samples.duckdb", rows)
    with duckdb.connect(str(db)) as con:
        build_event_view(con, AnalysisWindow(T0, T0))
        match_events(con, build_rule_events(con, "ev", [load_catalog().rule_set()])["catalog"])
        return {(str(r), str(e)) for r, e in con.execute("SELECT rule, event_id FROM rule_hits").fetchall()}


def _pinned_policy(condition: dict[str, Any]) -> dict[str, Any]:
    statement = {"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage", "Condition": condition}
    policy = json.dumps({"Statement": [statement]})
    return event(
        "SetQueueAttributes",
        service="sqs",
        time=INCIDENT,
        raw={"requestParameters": {"attributes": {"Policy": policy}}},
    )


@pytest.mark.parametrize(
    ("condition", "known", "granted"),
    [
        ({"StringEquals": {"aws:SourceAccount": "999988887777"}}, (), True),  # another account: granted to it
        ({"StringEquals": {"aws:SourceAccount": "999988887777"}}, ("999988887777",), False),  # the config's own
        ({"StringEquals": {"aws:SourceAccount": "111111111111"}}, (), False),  # the timeline's own account
        ({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::999988887777:role/x"}}, (), True),
        ({"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::bucket"}}, (), False),  # an ARN without an account
        ({"StringEquals": {"aws:PrincipalOrgID": "o-other12345"}}, (), False),  # the case's organization unknown
        ({"StringEquals": {"aws:PrincipalOrgID": "o-other12345"}}, ("o-a1b2c3d4e5",), True),
        ({"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}, ("o-a1b2c3d4e5",), False),
        ({"StringLike": {"aws:PrincipalOrgPaths": "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/*"}}, (), False),
        ({"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": ["o-a1b2c3d4e5/r-ab12/*"]}}, (), False),  # IAM's form
        ({"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-*/r-ab12/*"}}, (), True),  # any organization
        ({"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-other12345/*"}}, ("o-a1b2c3d4e5",), True),
    ],
)
def test_a_policy_pinned_to_an_account_outside_the_case_is_a_grant_to_it(
    tmp_path: Path, condition: dict[str, Any], known: tuple[str, ...], granted: bool
) -> None:
    db = write_db(tmp_path / "pinned.duckdb", [_pinned_policy(condition)])
    with duckdb.connect(str(db)) as con:
        build_event_view(con, AnalysisWindow(T0, T0))
        match_events(con, build_rule_events(con, "ev", [load_catalog().rule_set()])["catalog"], known_accounts=known)
        rules = {str(row[0]) for row in con.execute("SELECT rule FROM rule_hits").fetchall()}
    assert ("aws-resource-policy-public" in rules) is granted


def test_every_rule_matches_its_positive_samples_and_none_of_its_negatives(tmp_path: Path) -> None:
    rows, expected = [], []
    for rule in load_catalog().rules:
        for kind in ("positive", "negative"):
            for sample in rule.samples[kind]:
                row = _sample_event(rule.platform, sample)
                rows.append(row)
                expected.append((rule.rule_id, kind, row["event_id"]))
    hits = _hits(tmp_path, rows)
    wrong = [(rule, kind) for rule, kind, event_id in expected if ((rule, event_id) in hits) != (kind == "positive")]
    assert wrong == []


def test_catalog_covers_every_platform_and_keeps_rules_well_formed() -> None:
    rules = load_catalog().rules
    assert {rule.platform for rule in rules} == set(PLATFORMS)
    assert len({rule.rule_id for rule in rules}) == len(rules)
    assert all(0 < rule.floor <= rule.score <= 100 and rule.references for rule in rules)


def test_attacker_values_are_data_never_sql_or_template(tmp_path: Path) -> None:
    quote = event("StopLogging' OR '1'='1", service="cloudtrail", time=INCIDENT)
    injected = event("DeleteTrail", service="cloudtrail", time=INCIDENT, raw={"requestParameters": {"name": "'); --"}})
    placeholder = event(
        "CreateUser", actor="arn:aws:iam::111111111111:user/{count}{title}", time=INCIDENT, source_ip="203.0.113.9"
    )
    hits = _hits(tmp_path, [quote, injected, placeholder])
    assert {rule for rule, _ in hits} == {"aws-trail-tampering", "aws-iam-user-created"}
    assert ("aws-trail-tampering", quote["event_id"]) not in hits


def test_each_spelling_of_an_operation_is_judged_once_for_all_its_events(tmp_path: Path) -> None:
    """Prefilters on the operation are judged per distinct operation: every event of each spelling that normalises
    to a rule's operation is a hit (repeats included), an empty or look-alike operation none."""
    spellings = ["StopLogging", "StopLogging", "stoplogging ", " StopLogging\t", "StopLogging20131101"]
    hits_expected = [event(op, service="cloudtrail", time=INCIDENT) for op in spellings]
    others = [event(op, service="cloudtrail", time=INCIDENT) for op in ("", "StopLoggingX", "Stop Logging")]
    hits = _hits(tmp_path, hits_expected + others)
    tampering = {e for rule, e in hits if rule == "aws-trail-tampering"}
    assert tampering == {row["event_id"] for row in hits_expected}


def test_a_placeholder_in_an_identity_stays_text_in_the_explanation(analyze: Analyze) -> None:
    actor = "arn:aws:iam::111111111111:user/{count}"
    rows = routine(["ListBuckets"], days=22, actor=actor)
    _, findings = analyze([*rows, event("CreateUser", actor=actor, time=INCIDENT, source_ip="203.0.113.9")])
    [finding] = [f for f in findings if f["rule"] == "aws-iam-user-created"]
    assert finding["explanation"].startswith("IAM user created - iam:CreateUser x1")
    assert "user/{count}" in finding["title"]


@pytest.mark.parametrize(
    "spelling",
    [
        "Update application \u2013 Certificates and secrets management ",
        "Update application - Certificates and secrets management",
        "UPDATE APPLICATION  -  CERTIFICATES AND SECRETS MANAGEMENT",
    ],
)
def test_entra_names_with_trailing_spaces_and_en_dashes_are_one_finding(analyze: Analyze, spelling: str) -> None:
    admin = {"actor": "admin@contoso.example", "cloud": "azure", "service": "Core Directory"}
    rows = routine(["Update user"], days=22, source_format="entra_audit", **admin)
    added = event(spelling, time=INCIDENT, source_format="entra_audit", source_ip="203.0.113.9", **admin)
    _, findings = analyze([*rows, added])
    assert [(f["rule"], f["event_ids"]) for f in findings if f["analyzer"] == "sensitive_actions"] == [
        ("entra-credentials-added", [added["event_id"]])
    ]
    assert normalise_operation(spelling) == "update application - certificates and secrets management"


def test_gcp_iam_policy_changes_are_judged_by_what_they_grant_and_where(analyze: Analyze) -> None:
    """A project-level grant of an ordinary role to a colleague is routine administration; the same change at the
    organization, or a grant to a consumer account, reaches the default minimum score."""
    sa = {"actor": "ops@example.iam.gserviceaccount.com", "cloud": "gcp", "service": "compute.googleapis.com"}
    rows = routine(["v1.compute.instances.list"], days=22, **sa)

    def change(event_id: str, resource: str, member: str) -> dict[str, Any]:
        delta = {"action": "ADD", "role": "roles/viewer", "member": member}
        raw = {"protoPayload": {"resourceName": resource, "serviceData": {"policyDelta": {"bindingDeltas": [delta]}}}}
        fields = {**sa, "service": "cloudresourcemanager.googleapis.com"}
        return {**event("SetIamPolicy", time=INCIDENT, raw=raw, **fields), "event_id": event_id}

    changes = [
        change("colleague", "projects/web-prod", "user:dev@example.com"),
        change("org", "organizations/123456789012", "user:dev@example.com"),
        change("consumer", "projects/web-prod", "user:someone@gmail.com"),
    ]
    _, findings = analyze([*rows, *changes])
    assert sorted((f["rule"], tuple(f["event_ids"])) for f in findings if f["analyzer"] == "sensitive_actions") == [
        ("gcp-iam-consumer-account-granted", ("consumer",)),
        ("gcp-org-iam-policy-changed", ("org",)),
    ]


def test_app_access_lists_and_key_use_by_a_service_agent_are_findings_and_an_app_key_grant_is_not(
    analyze: Analyze,
) -> None:
    """Who may open an IAP app or invoke a Cloud Run service is an access list: a change reaches the default minimum,
    a refused one does not; a KMS key given to a Google service agent (a store set to encrypt with it) is a finding,
    the same key given to an application's own service account is not."""
    sa = {"actor": "ops@example.iam.gserviceaccount.com", "cloud": "gcp", "service": "compute.googleapis.com"}
    rows = routine(["v1.compute.instances.list"], days=22, **sa)

    def grant(event_id: str, service: str, member: str, role: str, **extra: Any) -> dict[str, Any]:
        raw = {"protoPayload": {"request": {"policy": {"bindings": [{"members": [member], "role": role}]}}}}
        return {
            **event("SetIamPolicy", time=INCIDENT, raw=raw, **{**sa, "service": service, **extra}),
            "event_id": event_id,
        }

    agent = "serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com"
    changes = [
        grant("iap", "iap.googleapis.com", "user:x@example.org", "roles/iap.httpsResourceAccessor"),
        grant("run", "run.googleapis.com", "user:x@example.org", "roles/run.invoker"),
        grant("run-refused", "run.googleapis.com", "user:x@example.org", "roles/run.invoker", error_code="7"),
        grant("kms-agent", "cloudkms.googleapis.com", agent, "roles/cloudkms.cryptoKeyEncrypterDecrypter"),
        grant(
            "kms-app",
            "cloudkms.googleapis.com",
            "serviceAccount:app@web-prod.iam.gserviceaccount.com",
            "roles/cloudkms.cryptoKeyEncrypterDecrypter",
        ),
    ]
    _, findings = analyze([*rows, *changes])
    assert sorted((f["rule"], tuple(f["event_ids"])) for f in findings if f["analyzer"] == "sensitive_actions") == [
        ("gcp-app-access-policy-changed", ("iap",)),
        ("gcp-app-access-policy-changed", ("run",)),
        ("gcp-kms-key-granted-to-service-agent", ("kms-agent",)),
    ]


def test_coverage_table_in_the_docs_is_the_catalog() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "analyzers.md").read_text(encoding="utf-8")
    assert coverage_table() in docs  # regenerate: print(cloudir.analyze.catalog.coverage_table())


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ({"field": "raw); DROP TABLE events; --", "equals": "x"}, "unknown field"),
        ({"field": ".displayName", "equals": "x"}, "unknown field"),  # an element's field outside 'has'
        ({"field": "$.targetResources", "has": {"field": ".displayName", "equals": "x"}}, "a \\[\\*\\] wildcard"),
    ],
)
def test_a_rule_with_an_unknown_field_is_refused(cond: dict[str, Any], message: str) -> None:
    from cloudir.analyze.catalog import Compiler

    with pytest.raises(CloudirError, match=message):
        Compiler().condition(cond, "bad-rule")


def test_a_refused_change_is_no_finding_unless_trying_is_the_signal(analyze: Analyze) -> None:
    rows = routine(["ListBuckets"], days=22)
    refused = event("StopLogging", service="cloudtrail", time=INCIDENT, error_code="AccessDenied")
    done = event("DeleteTrail", service="cloudtrail", time=INCIDENT, session="other")
    tried = event("LeaveOrganization", service="organizations", time=INCIDENT, error_code="AccessDenied")
    _, findings = analyze([*rows, refused, done, tried])
    flagged = {e for f in findings if f["analyzer"] == "sensitive_actions" for e in f["event_ids"]}
    assert done["event_id"] in flagged
    assert tried["event_id"] in flagged
    assert refused["event_id"] not in flagged


def test_a_gcp_request_whose_every_authorization_was_refused_is_a_failed_attempt(tmp_path: Path) -> None:
    def entry(name: str, granted: bool) -> str:
        payload = {
            "serviceName": "deploymentmanager.googleapis.com",
            "methodName": "v2.deploymentmanager.deployments.insert",
            "authenticationInfo": {"principalEmail": f"{name}@example.iam.gserviceaccount.com"},
            "authorizationInfo": [{"permission": "deploymentmanager.deployments.create", "granted": granted}],
        }
        return json.dumps({"insertId": name, "timestamp": "2024-05-02T08:00:00Z", "protoPayload": payload}) + "\n"

    logs = tmp_path / "gcp.jsonl"
    logs.write_text(entry("refused", False) + entry("done", True))
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [logs])  # the reader marks the refused call failed (no status in the record)
    run_analysis(db)
    with duckdb.connect(str(db), read_only=True) as con:
        flagged = con.execute("SELECT list(DISTINCT e) FROM (SELECT unnest(event_ids) AS e FROM findings "
                              "WHERE rule = 'gcp-deployment-manager')").fetchone()  # fmt: skip
    assert flagged is not None
    assert flagged[0] == ["done"]


def test_an_azure_rule_fires_on_an_sdk_as_dict_record(tmp_path: Path) -> None:
    """Activity Log records exported with azure-mgmt-monitor's ``as_dict()`` (snake-case keys) meet the Azure rules."""
    db = tmp_path / "t.duckdb"
    ingest_paths(db, [Path(__file__).parents[1] / "timeline" / "data" / "azure_activity_sdk.jsonl"])
    run_analysis(db)
    with duckdb.connect(str(db), read_only=True) as con:
        flagged = con.execute(
            "SELECT list(DISTINCT e) FROM (SELECT unnest(event_ids) AS e FROM findings "
            "WHERE rule = 'azure-role-assignment')"
        ).fetchone()
    assert flagged == (["sdk-event-1"],)


@pytest.mark.parametrize("engine", ["catalog", "correlation"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, None),
        ({"severity": "low"}, "must be 1-100 with severity 'high'"),
        ({"score": 0}, "must be 1-100"),
        ({"platform": "oracle"}, "platform must be one of"),
        ({"owner": "x"}, r"unknown \['owner'\]"),
        ({"samples": {"positive": [{}]}}, "samples need positive and negative"),
        ({"explanation": "{title} by {nope}"}, r"unknown placeholders \['nope'\]"),
    ],
)
def test_both_rule_engines_refuse_a_malformed_rule(engine: str, change: dict[str, object], message: str | None) -> None:
    module = importlib.import_module(f"cloudir.analyze.{engine}")
    rule = {"id": "r", "title": "t", "platform": "aws", "severity": "high", "score": 60, "mitre": "T1078",
            "match": {"operations": ["StopLogging"]}, "samples": {"positive": [{}], "negative": [{}]}}  # fmt: skip
    if engine == "correlation":
        rule |= {"group_by": ["identity"], "window": 60}
    if message is None:
        assert module._validate(rule, "test.yaml") == rule
        return
    with pytest.raises(CloudirError, match=message):
        module._validate(rule | change, "test.yaml")


def _ingest_and_analyze(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    """The trail file of ``records`` through ``cloudir timeline ingest`` and ``cloudir analyze``: the database."""
    log = tmp_path / "trail.json"
    log.write_text(json.dumps({"Records": records}), encoding="utf-8")
    db = tmp_path / "timeline.duckdb"
    runner = CliRunner()
    assert runner.invoke(app, ["timeline", "ingest", str(log), "--db", str(db)]).exit_code == 0
    result = runner.invoke(app, ["analyze", str(db)])
    assert result.exit_code == 0, result.output
    return db


def _trail_record(name: str, source: str, parameters: dict[str, Any], user: str = "admin") -> dict[str, Any]:
    """A CloudTrail management event as a trail delivers it (CloudTrail record contents reference)."""
    return {
        "eventVersion": "1.09",
        "eventTime": "2024-05-02T08:00:00Z",
        "eventSource": f"{source}.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "userAgent": "aws-cli/2.15.0",
        "eventID": str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps([name, source, user, parameters], sort_keys=True))),
        "eventType": "AwsApiCall",
        "recipientAccountId": "111122223333",
        "userIdentity": {"type": "IAMUser", "accountId": "111122223333", "userName": user,
                         "arn": f"arn:aws:iam::111122223333:user/{user}", "principalId": "AIDAEXAMPLE"},
        "requestParameters": parameters,
    }  # fmt: skip


def _flagged_records(tmp_path: Path, records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The trail file of ``records`` ingested and analyzed: (record position, rule) of each catalog finding's events."""
    db = _ingest_and_analyze(tmp_path, records)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT e.source_position, f.rule FROM findings f, unnest(f.event_ids) u(id) "
            "JOIN events e ON e.event_id = u.id WHERE f.analyzer = 'sensitive_actions' ORDER BY 1, 2"
        ).fetchall()
    return [(int(position), str(rule)) for position, rule in rows]


def test_policies_read_as_iam_evaluates_them_and_own_password_changes_through_the_cli(tmp_path: Path) -> None:
    """A Principal-* grant that one condition pins to a fixed VPC endpoint is not public (conditions are ANDed);
    wildcards, a /0 network, an unknown key or source addresses alone (the author's own, perhaps) pin nothing; a
    user changing their own password is no takeover."""

    def bucket_policy(condition: dict[str, Any]) -> dict[str, Any]:
        statement = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Condition": condition}
        return {"bucketName": "b", "bucketPolicy": {"Version": "2012-10-17", "Statement": [statement]}}

    pinned = {"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}, "StringLike": {"aws:SourceVpc": "vpc-*"}}
    wildcard_only = {"StringLike": {"aws:SourceVpce": "vpce-*"}, "IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}
    hostile_key = {"StringEquals": {"aws:SourceVpce'\"]); --": "vpce-1"}}
    key_policy = json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": "kms:Decrypt"}]})
    records = [
        _trail_record("PutBucketPolicy", "s3", bucket_policy(pinned)),
        _trail_record("PutBucketPolicy", "s3", bucket_policy(wildcard_only)),
        _trail_record("PutBucketPolicy", "s3", bucket_policy(hostile_key)),
        _trail_record("PutKeyPolicy", "kms", {"keyId": "k", "policyName": "default", "policy": key_policy}),
        _trail_record("UpdateLoginProfile", "iam", {"userName": "alice", "passwordResetRequired": False}, "alice"),
        _trail_record("UpdateLoginProfile", "iam", {"userName": "bob", "passwordResetRequired": False}, "alice"),
        _trail_record("PutBucketPolicy", "s3", bucket_policy({"IpAddress": {"aws:SourceIp": "198.51.100.7/32"}})),
    ]
    assert _flagged_records(tmp_path, records) == [
        (1, "aws-bucket-public"),
        (2, "aws-bucket-public"),
        (3, "aws-resource-policy-public"),
        (5, "aws-login-profile"),
        (6, "aws-bucket-public"),
    ]


@pytest.mark.parametrize(("listed", "flagged"), [([], True), (["444455556666"], False)])
def test_analyze_reads_the_case_accounts_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[str], flagged: bool
) -> None:
    """A bucket policy pinned to account 444455556666 grants it, unless the config's [accounts] lists it as the
    case's own (the timeline's account is 111122223333)."""
    config = tmp_path / "config.toml"
    config.write_text(f"[accounts]\naws = {json.dumps(listed)}\n", encoding="utf-8")
    monkeypatch.setenv("CLOUDIR_CONFIG", str(config))
    statement = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Condition": {"StringEquals": {"aws:PrincipalAccount": "444455556666"}}}  # fmt: skip
    policy = {"bucketName": "b", "bucketPolicy": {"Version": "2012-10-17", "Statement": [statement]}}
    db = _ingest_and_analyze(tmp_path, [_trail_record("PutBucketPolicy", "s3", policy)])
    with duckdb.connect(str(db), read_only=True) as con:
        rules = [str(row[0]) for row in con.execute("SELECT rule FROM findings").fetchall()]
    assert ("aws-bucket-public" in rules) is flagged
    analyze_case(AnalyzeRequest(db))  # as a playbook's analyze step and the demo call it: the same accounts
    with duckdb.connect(str(db), read_only=True) as con:
        rules = [str(row[0]) for row in con.execute("SELECT rule FROM findings").fetchall()]
    assert ("aws-bucket-public" in rules) is flagged


def test_refused_sign_ins_and_password_data_and_new_network_paths_reach_the_default_minimum(analyze: Analyze) -> None:
    """A refused console sign-in (Sigma: failed authentication) and a refused GetPasswordData (how Stratus
    detonates it) are findings at the default minimum score; a route to an internet gateway is one, a route the
    API refused is not (a failed change opens nothing)."""
    user = {"actor": "arn:aws:iam::111111111111:user/alice", "source_ip": "203.0.113.9"}
    login = event("ConsoleLogin", service="signin", error_code="Failed authentication", time=INCIDENT, **user)
    password = event("GetPasswordData", service="ec2", error_code="Client.UnauthorizedOperation", time=INCIDENT, **user)
    route = event("CreateRoute", service="ec2", time=INCIDENT, **user)
    refused = event("CreateVpc", service="ec2", error_code="UnauthorizedOperation", time=INCIDENT, **user)
    _, findings = analyze([login, password, route, refused])
    flagged = {(f["rule"], event_id) for f in findings for event_id in f["event_ids"]}
    assert {("aws-console-login-failed", login["event_id"]), ("aws-password-data", password["event_id"]),
            ("aws-network-perimeter-changed", route["event_id"])} <= flagged  # fmt: skip
    assert not any(event_id == refused["event_id"] for _, event_id in flagged)


def test_ses_enumeration_by_a_user_is_a_finding_and_by_the_service_is_not(analyze: Analyze) -> None:
    """Stolen keys are checked for mail sending (SES quota, identities) before spamming; AWS services acting for
    the account (Trusted Advisor's service-linked role) are no actor the catalog judges."""
    user = event("GetSendQuota", service="ses", actor="arn:aws:iam::111111111111:user/alice", time=INCIDENT)
    advisor = "arn:aws:sts::111111111111:assumed-role/AWSServiceRoleForTrustedAdvisor/TrustedAdvisor_111111111111"
    service = event("GetSendQuota", service="ses", actor=advisor, actor_type="AssumedRole", time=INCIDENT)
    _, findings = analyze([user, service])
    flagged = {event_id for f in findings if f["rule"] == "aws-ses-enumeration" for event_id in f["event_ids"]}
    assert flagged == {user["event_id"]}


def test_elastic_single_call_behaviours_through_the_cli_as_a_trail_delivers_them(tmp_path: Path) -> None:
    """Elastic and Stratus single-call behaviours as CloudTrail records (Lambda's versioned event name, EKS's and
    EFS's event sources): a layer shared with another account or everyone, never with the caller's own; cluster
    admin granted, view access not; control-plane logging off, on not; an AMI deregistered; a file system deleted;
    a notebook given a lifecycle script, its instance type changed not; a database made public (a response showing
    it public already is not) or its backups turned off. A hostile principal stays data."""
    layer = {"layerName": "libs", "versionNumber": 3, "statementId": "s", "action": "lambda:GetLayerVersion"}
    policy = "arn:aws:eks::aws:cluster-access-policy/AmazonEKS{}Policy".format

    def logging(enabled: bool) -> dict[str, Any]:
        return {"name": "prod", "logging": {"clusterLogging": [{"types": ["audit"], "enabled": enabled}]}}

    notebook = {"notebookInstanceName": "nb"}
    database = {"dBInstanceIdentifier": "prod-db"}
    records = [
        _trail_record("AddLayerVersionPermission20181031", "lambda", {**layer, "principal": "*"}),
        _trail_record("AddLayerVersionPermission20181031", "lambda", {**layer, "principal": "111122223333"}),
        _trail_record("AddLayerVersionPermission20181031", "lambda", {**layer, "principal": "x' OR '1'='1' --"}),
        _trail_record("AssociateAccessPolicy", "eks", {"name": "prod", "policyArn": policy("ClusterAdmin")}),
        _trail_record("AssociateAccessPolicy", "eks", {"name": "prod", "policyArn": policy("View")}),
        _trail_record("UpdateClusterConfig", "eks", logging(False)),
        _trail_record("UpdateClusterConfig", "eks", logging(True)),
        _trail_record("DeregisterImage", "ec2", {"imageId": "ami-0b87ea1d007078d18"}),
        _trail_record("DeleteFileSystem", "elasticfilesystem", {"fileSystemId": "fs-0abc"}),
        _trail_record("UpdateNotebookInstance", "sagemaker", {**notebook, "lifecycleConfigName": "start"}),
        _trail_record("UpdateNotebookInstance", "sagemaker", {**notebook, "instanceType": "ml.t3.large"}),
        _trail_record("ModifyDBInstance", "rds", {**database, "publiclyAccessible": True}),
        {**_trail_record("ModifyDBInstance", "rds", database), "responseElements": {"publiclyAccessible": True}},
        _trail_record("ModifyDBInstance", "rds", {**database, "backupRetentionPeriod": 0}),
        _trail_record("ModifyDBInstance", "rds", {**database, "backupRetentionPeriod": 14}),
    ]
    assert _flagged_records(tmp_path, records) == [
        (0, "aws-lambda-layer-shared"),
        (2, "aws-lambda-layer-shared"),
        (3, "aws-eks-cluster-admin-granted"),
        (5, "aws-eks-logging-disabled"),
        (7, "aws-recovery-deleted"),
        (8, "aws-data-store-deleted"),
        (9, "aws-sagemaker-lifecycle-script"),
        (11, "aws-db-made-public"),
        (13, "aws-db-backups-disabled"),
    ]


def test_credential_files_lambda_escalation_and_bedrock_key_users_through_the_cli(tmp_path: Path) -> None:
    """Elastic's single-call behaviours judged by who calls and what is read: a credential file read from S3 (an
    object merely named like one in the middle of its key is not); IAM attached by a function's execution role
    (the Lambda runtime's user agent), by a CI session not; a Bedrock API key's user calling IAM, calling Bedrock
    not. Object keys are attacker-chosen data, regex metacharacters and quotes included."""
    lambda_agent = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 lang/python#3.12.3 exec-env/AWS_Lambda_python3.12"
    role = {"type": "AssumedRole", "accountId": "111122223333", "principalId": "AROAEXAMPLE:fn",
            "arn": "arn:aws:sts::111122223333:assumed-role/fn-role/report-fn"}  # fmt: skip
    attach = {"roleName": "fn-role", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}
    by_function = {**_trail_record("AttachRolePolicy", "iam", attach), "userIdentity": role, "userAgent": lambda_agent}
    by_ci = {**_trail_record("AttachRolePolicy", "iam", {**attach, "roleName": "ci"}), "userIdentity": role}
    records = [
        _trail_record("GetObject", "s3", {"bucketName": "backups", "key": "home/ubuntu/.aws/credentials"}),
        _trail_record("GetObject", "s3", {"bucketName": "b", "key": ".env.production/report.csv"}),
        _trail_record("GetObject", "s3", {"bucketName": "b", "key": "x'); DROP TABLE events; --(.*)+.pem"}),
        by_function,
        by_ci,
        _trail_record("CreateAccessKey", "iam", {"userName": "BedrockAPIKey-x7k2"}, "BedrockAPIKey-x7k2"),
        _trail_record("InvokeModel", "bedrock", {"modelId": "anthropic.claude-3"}, "BedrockAPIKey-x7k2"),
    ]
    assert _flagged_records(tmp_path, records) == [
        (0, "aws-credential-file-read"),
        (2, "aws-credential-file-read"),
        (3, "aws-admin-policy-attached"),
        (3, "aws-iam-change-by-lambda"),
        (4, "aws-admin-policy-attached"),
        (5, "aws-access-key-created"),
        (5, "aws-bedrock-api-key-outside-bedrock"),
    ]
