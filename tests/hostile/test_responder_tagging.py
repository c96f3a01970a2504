"""Planted calls with the tool's user agent are scored, and reported as impersonating it; the tool's own are not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import ApiCall

runner = CliRunner()
ATTACKER = "arn:aws:iam::111122223333:user/deploy"
FORGED_AGENT = "aws-cli/2.15.0 cloudir/9.9"
START = datetime(2026, 11, 1, 9, tzinfo=UTC)
ATTACK = [
    ("cloudtrail", "StopLogging", {"name": "org-trail"}),
    ("cloudtrail", "DeleteTrail", {"name": "org-trail"}),
    ("iam", "AttachUserPolicy", {"userName": "deploy", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
    ("secretsmanager", "GetSecretValue", {"secretId": "prod/db"}),
    ("iam", "CreateAccessKey", {"userName": "deploy"}),
    (
        "ec2",
        "ModifySnapshotAttribute",
        {"snapshotId": "snap-1", "createVolumePermission": {"add": [{"userId": "999"}]}},
    ),
]


def _record(n: int, when: datetime, service: str, name: str, params: dict[str, Any], agent: str) -> dict[str, Any]:
    return {
        "eventVersion": "1.08",
        "userIdentity": {"type": "IAMUser", "arn": ATTACKER, "accountId": "111122223333", "userName": "deploy"},
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": f"{service}.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.50",
        "userAgent": agent,
        "requestParameters": params,
        "requestID": f"req-{n}",
        "eventID": f"00000000-0000-4000-8000-{n:012d}",
        "readOnly": name.startswith(("Get", "Describe", "List")),
        "eventType": "AwsApiCall",
        "recipientAccountId": "111122223333",
    }


def _case_with_planted_trail(root: Path) -> Case:
    case = Case.create(root)
    records = [  # two weeks of the identity's routine, then the attack
        _record(day * 10 + k, START + timedelta(days=day, minutes=k), "s3", "ListBuckets", {}, "aws-cli/2.15.0")
        for day in range(14)
        for k in range(3)
    ]
    attack_time = START + timedelta(days=14, hours=2)
    records += [
        _record(1000 + i, attack_time + timedelta(minutes=i), service, name, params, FORGED_AGENT)
        for i, (service, name, params) in enumerate(ATTACK)
    ]
    own = _record(2000, attack_time, "ec2", "CreateSnapshots", {}, f"cloudir/0.1.0 case/{case.case_id}")
    records.append(own)
    case.custody.append(
        "acquire.snapshot", api_calls=[ApiCall("ec2", "CreateSnapshots", "us-east-1", "req-2000", "ok")]
    )
    case.write_bytes("logs/aws/trail/planted.json", json.dumps({"Records": records}).encode())
    return case


def test_planted_calls_with_the_tool_user_agent_are_scored_and_flagged(tmp_path: Path) -> None:
    case = _case_with_planted_trail(tmp_path / "case")
    built = runner.invoke(app, ["timeline", "build", str(case.root)])
    assert built.exit_code == 0, built.output
    db = str(case.root / "timeline.duckdb")
    analyzed = runner.invoke(app, ["analyze", db, "--incident-since", "2026-11-15", "--format", "json"])
    assert analyzed.exit_code == 0, analyzed.output
    findings = json.loads(analyzed.output)["findings"]
    scored_events = {event for finding in findings for event in finding["event_ids"]}
    planted = {f"00000000-0000-4000-8000-{1000 + i:012d}" for i in range(len(ATTACK))}
    assert planted <= scored_events  # none of the six planted calls escaped analysis
    [impersonation] = [f for f in findings if f["analyzer"] == "responder_impersonation"]
    assert impersonation["title"] == f"Calls impersonating the responder tool by {ATTACKER}"
    assert set(impersonation["event_ids"]) == planted
    assert impersonation["score"] >= 80
    assert "00000000-0000-4000-8000-000000002000" not in scored_events  # the tool's own, recorded call
    responder = runner.invoke(app, ["timeline", "query", db, "SELECT request_id FROM events WHERE is_responder"])
    assert responder.exit_code == 0, responder.output
    assert "req-2000" in responder.output
    assert "req-1000" not in responder.output
