"""Compromised principals through the CLI: an IAM user by ARN, a role session from its stolen ASIA key."""

import json
from pathlib import Path

from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from cloudir.provider import LogPullRequest
from cloudir.safepath import path_part
from moto_fixtures.aws import ACCOUNT, AwsSandbox, create_user_with_key
from moto_fixtures.sandbox import PlantedIncident
from providers.aws.logs import lookup_scopes
from providers.aws.principals import DENY_ALL_POLICY, REVOKE_POLICY

runner = CliRunner()
GROUP_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
STOLEN_SESSION_KEY = "ASIAINSTANCEROLE0EX1"  # the planted attacker's instance-role key


def _run(*args: str):
    return runner.invoke(app, list(args))


def _compromised_user(sandbox: AwsSandbox, name: str = "bob") -> str:
    arn, _ = create_user_with_key(sandbox, name, keys=2)
    iam = sandbox.client("iam")
    iam.create_login_profile(UserName=name, Password="Attacker-chosen-1!")
    iam.create_group(GroupName="admins")
    iam.put_group_policy(GroupName="admins", PolicyName="all", PolicyDocument=json.dumps(GROUP_POLICY))
    iam.add_user_to_group(GroupName="admins", UserName=name)
    return arn


def _calls(case: Path, action_prefix: str) -> list[str]:
    return [
        f"{c['service']}:{c['operation']}"
        for r in read_records(case / "custody.jsonl")
        if r["action"].startswith(action_prefix)
        for c in r["api_calls"]
    ]


def test_user_principal_is_captured_then_contained_with_undo(aws_sandbox: AwsSandbox, tmp_path: Path):
    arn = _compromised_user(aws_sandbox)
    case = tmp_path / "bob"
    plan = _run("contain", "aws", "--principal", arn, "--dry-run")
    assert plan.exit_code == 0, plan.output
    for call in ("iam:UpdateAccessKey", "iam:PutUserPolicy", "iam:DeleteLoginProfile"):
        assert call in plan.output
    assert "InstanceId" not in plan.output
    refused = _run("contain", "aws", "--principal", arn, "--case", str(case))
    assert refused.exit_code == 2  # no acquisition yet: nothing changes before the IAM state is evidence
    acquired = _run("acquire", "aws", "--principal", arn, "--case", str(case))
    assert acquired.exit_code == 0, acquired.output
    state = json.loads((case / "artifacts/aws/iam-user/bob/user.json").read_text())
    assert len(state["AccessKeys"]) == 2
    assert state["LoginProfile"]["UserName"] == "bob"
    assert state["GroupPolicies"]["admins"]["InlinePolicies"]["all"] == GROUP_POLICY
    contained = _run("contain", "aws", "--principal", arn, "--case", str(case))
    assert contained.exit_code == 0, contained.output
    iam = aws_sandbox.client("iam")
    assert {k["Status"] for k in iam.list_access_keys(UserName="bob")["AccessKeyMetadata"]} == {"Inactive"}
    deny = iam.get_user_policy(UserName="bob", PolicyName=DENY_ALL_POLICY)["PolicyDocument"]["Statement"][0]
    assert (deny["Effect"], deny["Action"], deny["Resource"]) == ("Deny", "*", "*")
    assert iam.list_attached_user_policies(UserName="bob")["AttachedPolicies"] == []
    try:
        iam.get_login_profile(UserName="bob")
        raise AssertionError("the console password is still there")
    except iam.exceptions.NoSuchEntityException:
        pass
    records = {
        r["details"].get("step"): r for r in read_records(case / "custody.jsonl") if r["action"] == "contain.contain"
    }
    undo = [u for r in records.values() for u in r["details"]["result"]["undo"]]
    assert any("update-access-key" in u and "--status Active" in u for u in undo)
    assert any(f"delete-user-policy --user-name bob --policy-name {DENY_ALL_POLICY}" in u for u in undo)
    assert "iam:DeleteLoginProfile" in _calls(case, "contain.")
    assert _run("verify", str(case)).exit_code == 0


def test_stolen_session_key_is_traced_to_its_role_and_the_role_revokes_older_sessions(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    case = tmp_path / "session"
    acquired = _run("acquire", "aws", "--access-key", STOLEN_SESSION_KEY, "--case", str(case))
    assert acquired.exit_code == 0, acquired.output
    assert "cloudtrail:LookupEvents" in _calls(case, "target.resolve")
    resolved = next(r for r in read_records(case / "custody.jsonl") if r["action"] == "target.resolve")
    assert resolved["details"]["role"] == "web-app-role"
    assert resolved["details"]["session"] == aws_incident.extra["instance_id"]
    role = json.loads((case / "artifacts/aws/iam-role/web-app-role/role.json").read_text())
    assert role["Role"]["AssumeRolePolicyDocument"]
    assert role["Session"] == aws_incident.extra["instance_id"]
    contained = _run("contain", "aws", "--access-key", STOLEN_SESSION_KEY, "--case", str(case))
    assert contained.exit_code == 0, contained.output
    policy = aws_sandbox.client("iam").get_role_policy(RoleName="web-app-role", PolicyName=REVOKE_POLICY)
    condition = policy["PolicyDocument"]["Statement"][0]["Condition"]["DateLessThan"]
    assert condition["aws:TokenIssueTime"].endswith("Z")
    assert _run("verify", str(case)).exit_code == 0


def test_a_key_no_event_signed_is_not_found(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path):
    result = _run("acquire", "aws", "--access-key", "ASIANEVERSEENKEY0001", "--case", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "no CloudTrail event" in result.output


def test_principals_of_other_accounts_and_non_principals_are_refused(aws_sandbox: AwsSandbox, tmp_path: Path):
    other = _run("acquire", "aws", "--principal", "arn:aws:iam::999988887777:user/eve", "--dry-run")
    assert other.exit_code == 2
    assert "--role-arn" in other.output
    for hostile in ("arn:aws:iam::123456789012:user/../../etc", "bob; rm -rf /", "arn:aws:s3:::bucket"):
        result = _run("acquire", "aws", "--principal", hostile, "--dry-run")
        assert result.exit_code == 2, hostile
        assert "Traceback" not in result.output


def test_a_user_named_dot_dot_stays_inside_the_case(aws_sandbox: AwsSandbox, tmp_path: Path):
    arn, _ = create_user_with_key(aws_sandbox, "..")
    result = _run("acquire", "aws", "--principal", arn, "--case", str(tmp_path / "c"))
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "c/artifacts/aws/iam-user").iterdir()] == [path_part("..")]
    assert path_part("..").startswith("_~")


def test_role_by_bare_name_resolves_to_its_arn(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident):
    result = _run("contain", "aws", "--principal", "web-app-role", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"arn:aws:iam::{ACCOUNT}:role/web-app-role" in result.output
    assert "iam:PutRolePolicy" in result.output


def test_playbook_plans_a_user_principal_offline_without_instance_steps():
    result = runner.invoke(
        app,
        ["playbook", "plan", "--cloud", "aws", "--principal", f"arn:aws:iam::{ACCOUNT}:user/bob"],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    assert "playbook iam-credential-compromise" in result.output
    for call in ("iam:GetLoginProfile", "iam:UpdateAccessKey", "iam:PutUserPolicy", "iam:DeleteLoginProfile"):
        assert call in result.output
    assert "InstanceId" not in result.output


def test_log_lookups_by_principal_use_the_attribute_cloudtrail_fills():
    def scopes(*principals: str) -> list[tuple[str | None, str | None]]:
        return lookup_scopes(LogPullRequest(start="s", end="e", principals=list(principals)))

    assert scopes(f"arn:aws:iam::{ACCOUNT}:user/bob") == [("Username", "bob")]
    assert scopes(f"arn:aws:sts::{ACCOUNT}:assumed-role/web-app-role/i-0abc") == [("Username", "i-0abc")]
    assert scopes(f"arn:aws:iam::{ACCOUNT}:role/web-app-role", "alice") == [(None, None)]  # every event
    assert scopes("alice") == [("Username", "alice")]


def test_playbook_captures_and_contains_a_user_principal(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    arn = _compromised_user(aws_sandbox)
    case = tmp_path / "pb"
    args = ["respond", "--cloud", "aws", "--principal", arn, "--location", "us-east-1", "--case", str(case)]
    result = _run(*args, "--approve-containment")
    assert result.exit_code == 0, result.output
    assert (case / "artifacts/aws/iam-user/bob/user.json").is_file()
    iam = aws_sandbox.client("iam")
    assert {k["Status"] for k in iam.list_access_keys(UserName="bob")["AccessKeyMetadata"]} == {"Inactive"}
    assert DENY_ALL_POLICY in iam.list_user_policies(UserName="bob")["PolicyNames"]
    assert _run("verify", str(case)).exit_code == 0


def test_stolen_session_key_dry_run_names_every_call_and_a_playbook_revokes_its_role(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    plan = _run("contain", "aws", "--access-key", STOLEN_SESSION_KEY, "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert "iam:PutRolePolicy" in plan.output
    assert "InstanceId" not in plan.output
    iam = aws_sandbox.client("iam")
    assert REVOKE_POLICY not in iam.list_role_policies(RoleName="web-app-role")["PolicyNames"]  # dry run: no change
    case = tmp_path / "pb"
    args = ["respond", "--cloud", "aws", "--access-key", STOLEN_SESSION_KEY, "--location", "us-east-1"]
    result = _run(*args, "--case", str(case), "--param", "log_window_before_hours=96", "--approve-containment")
    assert result.exit_code == 0, result.output
    assert "iam-credential-compromise" in result.output
    assert (case / "artifacts/aws/iam-role/web-app-role/role.json").is_file()  # captured before the change
    assert REVOKE_POLICY in iam.list_role_policies(RoleName="web-app-role")["PolicyNames"]
    assert _run("verify", str(case)).exit_code == 0
