"""AWS findings on the sandbox's planted incident, end to end through the CLI and the Lambda handler."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records, verify_case
from cloudir.playbook import respond
from cloudir.serverless import InvocationTimeUpError
from cloudir.serverless.aws_lambda import handler
from cloudir.triggers import parse_triggers
from tests.respond.conftest import AwsIncident, sample

runner = CliRunner()


def test_cli_respond_resumes_after_a_failed_step_then_approves(
    aws_incident: AwsIncident, case_root: Path, tmp_path: Path
) -> None:
    finding = tmp_path / "finding.json"
    finding.write_text(json.dumps(aws_incident.finding))
    case_dir = case_root / "cli"
    params = [arg for key, value in aws_incident.params.items() for arg in ("--param", f"{key}={value}")]
    base = ["respond", "--trigger", str(finding), "--case", str(case_dir), *params]
    sandbox, incident = aws_incident.sandbox, aws_incident.incident
    with sandbox.fail_next("CreateSnapshots", "UnauthorizedOperation"):  # not transient: not sent again
        failed = runner.invoke(app, base)
    assert failed.exit_code == 3, failed.output
    assert "snapshot" in failed.output
    assert "--resume" in failed.output
    assert sandbox.is_preserved(incident)
    assert not sandbox.is_isolated(incident)

    refused = runner.invoke(app, base)
    assert refused.exit_code == 2
    assert "re-run with --resume" in refused.output

    resumed = runner.invoke(app, [*base, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "awaiting-approval" in resumed.output
    assert "resumed" in resumed.output  # the steps that had finished were not repeated
    assert not sandbox.is_isolated(incident)
    case_id = json.loads((case_dir / "case.json").read_text())["case_id"]
    assert sandbox.snapshots_for_case(case_id)
    assert (case_dir / "timeline.duckdb").is_file()
    assert "awaiting approval" in (case_dir / "reports" / "report.html").read_text()

    [trigger] = parse_triggers(aws_incident.finding)  # the same finding delivered again, through the library
    again = respond(trigger, case_dir, provider_factory=aws_incident.provider_factory)
    assert again.status == "duplicate"
    assert "already handled" in again.message
    assert "nothing new" in again.message

    approved = runner.invoke(app, ["respond", "--case", str(case_dir), "--approve"])
    assert approved.exit_code == 0, approved.output
    assert sandbox.is_isolated(incident)
    nothing = runner.invoke(app, ["respond", "--case", str(case_dir), "--approve"])
    assert nothing.exit_code == 2
    assert "nothing in" in nothing.output
    assert "awaits approval" in nothing.output
    actions = [r["action"] for r in read_records(case_dir / "custody.jsonl")]
    assert "containment.approved" in actions
    assert actions.count("trigger.received") == 1
    assert "trigger.duplicate" in actions
    assert actions[-1] == "response.completed"
    assert_policy_covers_calls(case_dir)
    summary = runner.invoke(app, ["report", str(case_dir), "--format", "json", "--out", str(tmp_path / "s.json")])
    assert summary.exit_code == 0, summary.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["actions_taken"]["containment"] == "performed"
    assert data["evidence"]["custody_verified"] is True
    assert data["detected"]["detections"][0]["finding_id"] == "gd-finding-1"
    assert any(incident.target.value in resource for resource in data["affected"]["resources"])


def assert_resolved_plan_changes_nothing(aws_incident: AwsIncident) -> None:
    sandbox, incident = aws_incident.sandbox, aws_incident.incident
    before = sandbox.state()
    args = ["playbook", "plan", "--cloud", "aws", "--instance", incident.target.value, "--location", sandbox.region]
    result = runner.invoke(app, [*args, "--resolve"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "ec2:CreateSnapshots" in result.output
    assert "ec2:ModifyInstanceAttribute" in result.output
    assert "playbook ec2-instance-compromise" in result.output
    assert sandbox.state() == before


def test_lambda_handler_contains_instance_and_key_when_preapproved(
    aws_incident: AwsIncident, case_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_resolved_plan_changes_nothing(aws_incident)  # --resolve reads the cloud but changes nothing
    event = sample("securityhub_custom_action.json")
    finding = event["detail"]["findings"][0]
    account = aws_incident.sandbox.client("sts").get_caller_identity()["Account"]
    key = aws_incident.incident.access_key
    finding.update(AwsAccountId=account, LastObservedAt=aws_incident.finding["detail"]["updatedAt"])
    finding["Resources"][0]["Id"] = f"AWS::IAM::AccessKey:{key}"
    monkeypatch.setenv("CLOUDIR_CASE_ROOT", str(case_root))
    monkeypatch.setenv("CLOUDIR_PARAMS", json.dumps({"log_window_before_hours": 96}))
    monkeypatch.setenv("CLOUDIR_APPROVE_CONTAINMENT", "true")
    result = handler(event, None, provider_factory=aws_incident.provider_factory)
    [outcome] = result["outcomes"]
    assert outcome["status"] == "completed", outcome["message"]
    assert outcome["playbook"] == "iam-credential-compromise"
    iam = aws_incident.sandbox.client("iam")
    statuses = {
        k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"]
    }
    assert statuses[key] == "Inactive"
    case_dir = Path(outcome["case_dir"])
    assert case_dir.parent == case_root
    assert (case_dir / "reports" / "report.html").is_file()
    assert verify_case(case_dir).ok
    again = handler(event, None, provider_factory=aws_incident.provider_factory)
    assert again["outcomes"][0]["status"] == "duplicate"
    rejected = handler({"detail-type": "x", "source": "aws.guardduty", "detail": {}}, None)
    assert rejected["status"] == "rejected"
    assert "missing field" in rejected["error"]

    monkeypatch.setenv("CLOUDIR_PARAMS", json.dumps(aws_incident.params))  # the GuardDuty EC2 finding
    [instance] = handler(aws_incident.finding, None, provider_factory=aws_incident.provider_factory)["outcomes"]
    assert instance["status"] == "completed", instance["message"]
    assert instance["playbook"] == "ec2-instance-compromise"
    assert aws_incident.sandbox.is_isolated(aws_incident.incident)
    assert verify_case(Path(instance["case_dir"])).ok


# Operations whose IAM action is not "<service>:<Operation>".
IAM_ACTION_EXCEPTIONS = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "GetObjectLockConfiguration"): "s3:GetBucketObjectLockConfiguration",
    ("s3", "GetBucketLocation"): "s3:GetBucketLocation",
}


def iam_action(service: str, operation: str) -> str:
    """The IAM action authorising one API call."""
    return IAM_ACTION_EXCEPTIONS.get((service, operation), f"{service}:{operation}")


def assert_policy_covers_calls(case_dir: Path) -> None:
    result = runner.invoke(app, ["iam-policy", "aws"])
    assert result.exit_code == 0, result.output
    policy = json.loads(result.output)
    allowed = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert not [action for action in allowed if "*" in action]
    made = {
        iam_action(call["service"], call["operation"])
        for record in read_records(case_dir / "custody.jsonl")
        for call in record["api_calls"]
    }
    assert len(made) > 20  # acquisition, log collection and containment all ran
    assert made - allowed == set(), f"the generated policy misses {sorted(made - allowed)}"


class _LambdaContext:
    """A Lambda context whose remaining time drops below the step reserve after ``steps`` steps have started."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.asked = 0

    def get_remaining_time_in_millis(self) -> int:
        self.asked += 1
        return 900_000 if self.asked <= self.steps else 120_000


def test_lambda_splits_a_long_response_across_invocations_resuming_the_case(
    aws_incident: AwsIncident, case_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDIR_CASE_ROOT", str(case_root))
    monkeypatch.setenv("CLOUDIR_PARAMS", json.dumps(aws_incident.params))
    monkeypatch.delenv("CLOUDIR_APPROVE_CONTAINMENT", raising=False)
    first = _LambdaContext(steps=2)
    with pytest.raises(InvocationTimeUpError, match="resumes the case"):
        handler(aws_incident.finding, first, provider_factory=aws_incident.provider_factory)
    assert first.asked == 3  # two steps ran, the third was not started
    [case_dir] = list(case_root.iterdir())
    done_first = [r["details"]["step"] for r in read_records(case_dir / "custody.jsonl") if "step" in r["details"]]
    assert len(done_first) == 2

    second = _LambdaContext(steps=1_000)  # Lambda's retry of the same event, with a fresh 15 minutes
    [outcome] = handler(aws_incident.finding, second, provider_factory=aws_incident.provider_factory)["outcomes"]
    assert outcome["status"] == "awaiting-approval", outcome["message"]
    records = read_records(case_dir / "custody.jsonl")
    steps = [r["details"]["step"] for r in records if "step" in r["details"] and r["outcome"] == "ok"]
    assert steps[:2] == done_first
    assert len(steps) == len(set(steps))  # no step ran twice
    assert second.asked == len(steps) - 2
    starts = [r for r in records if r["action"].endswith(".start") and "resume" in r["details"]]
    assert [r["details"]["resume"] for r in starts] == [False, True]
    assert verify_case(case_dir).ok


def test_a_manual_trigger_around_an_earlier_time_pulls_and_analyzes_the_window_around_it(
    aws_incident: AwsIncident, case_root: Path
) -> None:
    """A responder reacting to yesterday's alert: ``--around`` sets the trigger time that the playbook's log window
    and the analysis's incident window use; it is printed in the plan and recorded in custody."""
    from moto_fixtures.clock import incident_clock

    sandbox, incident = aws_incident.sandbox, aws_incident.incident
    around = incident_clock() - timedelta(hours=3)  # hours before the wall clock (up to a day)
    offset = around.astimezone(timezone(timedelta(hours=2))).isoformat()  # the same instant, written at +02:00
    expected = around.strftime("%Y-%m-%dT%H:%M:%SZ")
    manual = ["--cloud", "aws", "--instance", incident.target.value, "--location", sandbox.region, "--around", offset]
    params = [
        *("--param", f"forensic_account={incident.forensic_account}"),
        *("--param", f"encryption_key={incident.encryption_key}"),
        *("--param", "log_window_before_hours=2", "--param", "log_window_after_hours=1"),
    ]
    planned = runner.invoke(app, ["respond", *manual, *params, "--dry-run"], env={"COLUMNS": "250"})
    assert planned.exit_code == 0, planned.output
    assert f"at {expected}" in planned.output
    case_dir = case_root / "around"
    result = runner.invoke(app, ["respond", *manual, *params, "--case", str(case_dir)])
    assert result.exit_code == 0, result.output
    [received] = [r for r in read_records(case_dir / "custody.jsonl") if r["action"] == "trigger.received"]
    assert received["details"]["time"] == expected
    [trigger] = [json.loads(p.read_text()) for p in (case_dir / "triggers").glob("*.json")]
    assert trigger["time"] == expected
    assert trigger["raw"]["manual"]["around"] == offset  # what the responder typed, kept with the trigger
    coverage = json.loads((case_dir / "logs/aws/coverage.json").read_text())
    assert coverage["window_start"] == (around - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("around", "refusal"),
    [
        ("+1h", "cannot read the time"),
        ("yesterday", "cannot read the time"),
        ("-99999999999d", "cannot read the time"),
        ("2026-05-01T10:00", "has no UTC offset"),
        ("2999-01-01T00:00Z", "is in the future"),
    ],
)
def test_a_manual_trigger_time_that_is_unreadable_naive_or_in_the_future_is_refused_before_any_call(
    around: str, refusal: str
) -> None:
    args = ["respond", "--cloud", "aws", "--instance", "i-1", "--location", "us-east-1", "--around", around]
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert refusal in " ".join(result.output.split())


def test_around_is_refused_with_a_finding_which_carries_its_own_time(tmp_path: Path) -> None:
    finding = tmp_path / "finding.json"
    finding.write_text(json.dumps(sample("guardduty_ec2_eventbridge.json")))
    result = runner.invoke(app, ["respond", "--trigger", str(finding), "--around", "-6h", "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "a finding carries its own time" in " ".join(result.output.split())
