from datetime import timedelta

import pytest

from tests.analyze.builder import T0, event, routine
from tests.analyze.conftest import Analyze

INCIDENT = T0 + timedelta(days=21, hours=11)
BASE = ["ListBuckets", "DescribeInstances", "ListUsers"]


@pytest.mark.parametrize(
    ("cloud", "service", "operation", "rule"),
    [
        ("aws", "cloudtrail", "StopLogging", "aws-trail-tampering"),
        ("aws", "ec2", "DeleteFlowLogs", "aws-flow-logs-deleted"),
        (
            "azure",
            "Microsoft.Insights",
            "MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE",
            "azure-diagnostic-settings-deleted",
        ),
        ("gcp", "logging.googleapis.com", "google.logging.v2.ConfigServiceV2.DeleteSink", "gcp-log-sink-changed"),
        ("gcp", "iam.googleapis.com", "google.iam.admin.v1.CreateServiceAccountKey", "gcp-service-account-key"),
        ("aws", "lambda", "UpdateFunctionConfiguration20150331v2", None),
    ],
)
def test_log_tampering_and_persistence_in_three_clouds(
    analyze: Analyze, cloud: str, service: str, operation: str, rule: str | None
) -> None:
    rows = routine(BASE, days=22)
    hit = event(operation, cloud=cloud, service=service, time=INCIDENT, source_ip="203.0.113.50")
    _, findings = analyze([*rows, hit])
    sensitive = [f for f in findings if f["analyzer"] == "sensitive_actions"]
    if rule is None:  # a configuration change without layers is not sensitive
        assert sensitive == []
        return
    assert [f["rule"] for f in sensitive] == [rule]
    assert sensitive[0]["event_ids"] == [hit["event_id"]]
    assert "never seen for this identity" in sensitive[0]["explanation"]
    assert "from a network or user agent rare or new for this identity" in sensitive[0]["explanation"]
    assert sensitive[0]["score"] >= 50


def test_usual_network_never_lowers_an_unfamiliar_action_and_a_new_one_raises_it(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    usual = event("CreateUser", time=INCIDENT)
    elsewhere = event("CreateUser", time=INCIDENT + timedelta(hours=3), source_ip="203.0.113.50")
    _, findings = analyze([*rows, usual, elsewhere], min_score=0)
    scores = {f["event_ids"][0]: f["score"] for f in findings if f["rule"] == "aws-iam-user-created"}
    # no other identity ever created a user (x1.1); a usual network does not lower an unfamiliar action
    assert scores[usual["event_id"]] == round(55 * 1.1)
    assert scores[elsewhere["event_id"]] == round(55 * 1.1 * 1.1)  # a network new for the identity raises it


def test_routine_sensitive_action_is_tempered_below_threshold(analyze: Analyze) -> None:
    rows = routine([*BASE, "CreateAccessKey"], days=22)
    _, findings = analyze(rows)
    assert [f for f in findings if f["rule"] == "aws-access-key-created"] == []


def test_snapshot_shared_with_another_account(analyze: Analyze) -> None:
    share = {"requestParameters": {"createVolumePermission": {"add": {"items": [{"userId": "222222222222"}]}}}}
    keep_private = {"requestParameters": {"createVolumePermission": {"remove": {"items": [{"userId": "2"}]}}}}
    rows = routine(BASE, days=22)
    shared = event("ModifySnapshotAttribute", service="ec2", time=INCIDENT, raw=share)
    private = event("ModifySnapshotAttribute", service="ec2", time=INCIDENT + timedelta(hours=3), raw=keep_private)
    _, findings = analyze([*rows, shared, private])
    exfil = [f for f in findings if f["rule"] == "aws-snapshot-shared"]
    assert [f["event_ids"] for f in exfil] == [[shared["event_id"]]]
    assert exfil[0]["mitre"] == ["T1537"]


def test_bulk_secret_reads_need_many_distinct_secrets(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    same_secret = [
        event(
            "GetSecretValue",
            service="secretsmanager",
            time=INCIDENT + timedelta(seconds=i),
            raw={"requestParameters": {"secretId": "db"}},
            source_ip="203.0.113.50",
        )
        for i in range(10)
    ]
    many = [
        event(
            "GetSecretValue",
            service="secretsmanager",
            time=INCIDENT + timedelta(hours=2, seconds=i),
            raw={"requestParameters": {"secretId": f"s{i}"}},
            source_ip="203.0.113.50",
        )
        for i in range(6)
    ]
    _, findings = analyze([*rows, *same_secret, *many])
    bulk = [f for f in findings if f["rule"] == "aws-secrets-bulk"]
    assert len(bulk) == 1
    assert set(bulk[0]["event_ids"]) == {e["event_id"] for e in many}


def test_responder_activity_never_scores(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    rows.append(
        event("DeleteTrail", service="cloudtrail", time=INCIDENT, is_responder=True, user_agent="cloudir/0.1.0")
    )
    rows.append(event("CreateAccessKey", time=INCIDENT, is_responder=True, user_agent="cloudir/0.1.0"))
    _, findings = analyze(rows)
    assert findings == []


def test_instance_credentials_used_elsewhere_give_one_finding_per_session_and_network(analyze: Analyze) -> None:
    node = "arn:aws:sts::111111111111:assumed-role/node-role/i-0123456789abcdef0"
    rows = routine(["GetAuthorizationToken"], days=22, actor=node, actor_type="AssumedRole", source_ip="10.0.1.5")
    stolen = [
        event(op, actor=node, actor_type="AssumedRole", time=INCIDENT + timedelta(hours=hours), source_ip=ip)
        for hours, op, ip in [
            (0, "ListBuckets", "203.0.113.9"),
            (3, "GetObject", "203.0.113.10"),
            (26, "ListBuckets", "203.0.113.9"),
            (27, "ListBuckets", "192.0.2.7"),
        ]
    ]
    _, findings = analyze([*rows, *stolen])
    elsewhere = [f for f in findings if f["rule"] == "aws-instance-credentials-elsewhere"]
    assert sorted((f["title"].split(":")[0], len(f["event_ids"])) for f in elsewhere) == [
        ("Instance credentials used from 192.0.2.0/24", 1),
        ("Instance credentials used from 203.0.113.0/24", 3),
    ]
    assert {i for f in elsewhere for i in f["event_ids"]} == {e["event_id"] for e in stolen}
    # what AWS services and the SSM agent do with the role is no use elsewhere: a service's name or "AWS Internal"
    # as the source, a call a service made for it (invokedBy), the agent's own message channels
    on_behalf = [
        event("Decrypt", actor=node, actor_type="AssumedRole", service="kms", time=INCIDENT,
              source_ip="cloudformation.amazonaws.com"),
        event("SendHeartbeat", actor=node, actor_type="AssumedRole", service="ec2messages", time=INCIDENT,
              source_ip="AWS Internal"),
        event("DescribeInstances", actor=node, actor_type="AssumedRole", service="ec2", time=INCIDENT,
              source_ip="45.33.32.156", raw={"userIdentity": {"invokedBy": "eks.amazonaws.com"}}),
        event("CreateControlChannel", actor=node, actor_type="AssumedRole", service="ssmmessages", time=INCIDENT,
              source_ip="45.33.32.156"),
    ]  # fmt: skip
    _, findings = analyze([*rows, *on_behalf])
    flagged = {i for f in findings if f["rule"] == "aws-instance-credentials-elsewhere" for i in f["event_ids"]}
    assert not flagged & {e["event_id"] for e in on_behalf}


def test_a_lone_instance_session_is_judged_by_its_address_only_when_public(analyze: Analyze) -> None:
    """With no other session, agent or day of the role to compare with, a call from a private address (the VPC the
    instance sits in) proves nothing; one from a public address is still credentials used off the instance."""
    lone = "arn:aws:sts::111111111111:assumed-role/batch-role/i-0fedcba9876543210"
    inside = event(
        "ListBuckets", actor=lone, actor_type="AssumedRole", service="s3", time=INCIDENT, source_ip="172.31.5.20"
    )
    outside = event("GetObject", actor=lone, actor_type="AssumedRole", service="s3",
                    time=INCIDENT + timedelta(hours=1), source_ip="198.51.100.23")  # fmt: skip
    _, findings = analyze([*routine(BASE, days=22), inside, outside])
    elsewhere = [f for f in findings if f["rule"] == "aws-instance-credentials-elsewhere"]
    assert [f["event_ids"] for f in elsewhere] == [[outside["event_id"]]]
    assert "no other instance session" in elsewhere[0]["explanation"]


def test_repeated_sensitive_call_is_one_finding_per_episode_across_hour_boundaries(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    start = T0 + timedelta(days=21, hours=11, minutes=50)
    episode = [event("StopLogging", service="cloudtrail", time=start + timedelta(minutes=m)) for m in (0, 15, 40)]
    later = event("StopLogging", service="cloudtrail", time=start + timedelta(hours=5))
    _, findings = analyze([*rows, *episode, later])
    tampering = sorted((f["event_ids"] for f in findings if f["rule"] == "aws-trail-tampering"), key=len, reverse=True)
    assert tampering == [[e["event_id"] for e in episode], [later["event_id"]]]


def test_instance_credentials_stolen_in_the_baseline_are_found_and_a_fleet_network_is_the_instances_own(
    analyze: Analyze,
) -> None:
    role = "arn:aws:sts::111111111111:assumed-role/node-role"
    fleet = [
        event("GetAuthorizationToken", actor=f"{role}/i-0{node:016x}", actor_type="AssumedRole", service="ecr",
              source_ip="52.20.14.7", time=T0 + timedelta(days=day, hours=node))
        for node in range(3) for day in range(22) if (day + node) % 3 == 0
    ]  # fmt: skip
    stolen = [
        event(op, actor=f"{role}/i-0{1:016x}", actor_type="AssumedRole", service="s3", source_ip="203.0.113.9",
              time=T0 + timedelta(days=3, hours=2, minutes=minute))
        for minute, op in enumerate(["ListBuckets", "GetObject", "GetObject"])
    ]  # fmt: skip
    _, findings = analyze([*routine(BASE, days=22), *fleet, *stolen])
    elsewhere = [f for f in findings if f["rule"] == "aws-instance-credentials-elsewhere"]
    assert [sorted(f["event_ids"]) for f in elsewhere] == [sorted(e["event_id"] for e in stolen)]
    assert "use only 52.20.14.0/24" in elsewhere[0]["explanation"]


def test_a_refused_call_is_its_own_attempt_finding_and_shares_no_evidence_with_the_change(analyze: Analyze) -> None:
    # the same identity, rule and operation: a StopLogging refused and one that stopped the trail in the same second,
    # and again a minute apart
    refused = event("StopLogging", service="cloudtrail", time=INCIDENT, error_code="InvalidTrailNameException")
    stopped = event("StopLogging", service="cloudtrail", time=INCIDENT)
    later = INCIDENT + timedelta(days=1)
    refused_2 = event("StopLogging", service="cloudtrail", time=later, error_code="InvalidTrailNameException")
    stopped_2 = event("StopLogging", service="cloudtrail", time=later + timedelta(minutes=1))
    _, findings = analyze([*routine(BASE, days=22), refused, stopped, refused_2, stopped_2], min_score=0)
    tampering = sorted(
        (f for f in findings if f["rule"] == "aws-trail-tampering"), key=lambda f: (f["first_time"], -f["score"])
    )
    # each finding names only its own event; the two of the same second share every part of the key: both kept
    assert [f["event_ids"] for f in tampering] == [
        [stopped["event_id"]],
        [refused["event_id"]],
        [refused_2["event_id"]],
        [stopped_2["event_id"]],
    ]
    assert len({f["finding_id"] for f in tampering}) == 4
    assert [f["score"] >= 80 for f in tampering] == [True, False, False, True]
    assert all("every attempt failed" in f["explanation"] for f in tampering[1:3])
