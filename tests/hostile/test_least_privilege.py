"""The generated permissions cannot escalate: no write on a bare "*", no way to grant the responder more."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.serverless.aws_policy import QUARANTINE_PROFILE, TAG_CASE, is_read

runner = CliRunner()
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# Permissions that would let the responder give itself (or anyone) more access, per cloud.
ESCALATION = {
    "aws": {"iam:AttachRolePolicy", "iam:AttachUserPolicy", "iam:CreatePolicyVersion", "iam:UpdateAssumeRolePolicy"},
    "azure": {"Microsoft.Authorization/roleAssignments/write", "Microsoft.Authorization/roleDefinitions/write"},
    "gcp": {
        "resourcemanager.projects.setIamPolicy",
        "iam.serviceAccounts.actAs",
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccountKeys.create",
        "iam.roles.update",
    },
}


def _policy(cloud: str) -> dict[str, Any]:
    result = runner.invoke(app, ["iam-policy", cloud])
    assert result.exit_code == 0, result.output
    policy: dict[str, Any] = json.loads(result.output)
    return policy


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def test_aws_policy_scopes_every_write_and_passes_parliament() -> None:
    policy = _policy("aws")
    allowed = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    for statement in allowed:
        writes = [action for action in statement["Action"] if not is_read(action)]
        if writes:
            assert "*" not in _as_list(statement["Resource"]), statement["Sid"]
    granted = {action for s in allowed for action in s["Action"]}
    assert not granted & ESCALATION["aws"]
    [pass_role] = [s for s in allowed if "iam:PassRole" in s["Action"]]
    assert pass_role["Resource"] == "arn:aws:iam::*:role/cloudir/quarantine/*"
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
    [share] = [s for s in allowed if "ec2:ModifySnapshotAttribute" in s["Action"]]
    assert share["Condition"]["Null"] == {"aws:ResourceTag/cloudir:case-id": "false"}
    assert all("kms:ViaService" in s["Condition"]["StringLike"] for s in allowed if s["Sid"].startswith("Kms"))
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert {"iam:PutRolePolicy", "iam:AttachRolePolicy"} <= set(deny["Action"])
    assert "arn:aws:iam::*:role/cloudir-*" in deny["Resource"]  # the responder role and the roles it assumes
    with warnings.catch_warnings():  # parliament imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string
    findings = analyze_policy_string(json.dumps(policy)).findings
    assert [f.issue for f in findings] == ["RESOURCE_STAR"]
    assert all(is_read(action) for action in findings[0].detail)  # only reads are on "*"


def test_the_policy_names_what_the_aws_provider_creates() -> None:
    from providers.aws.common import TAG_CASE as PROVIDER_TAG
    from providers.aws.contain import QUARANTINE_PROFILE as PROVIDER_PROFILE

    assert (TAG_CASE, QUARANTINE_PROFILE) == (PROVIDER_TAG, PROVIDER_PROFILE)


def test_sam_template_carries_the_generated_statements() -> None:
    template = yaml.safe_load((DEPLOY / "aws" / "template.yaml").read_text())
    document = template["Resources"]["ResponderPolicy"]["Properties"]["PolicyDocument"]
    assert document["Statement"] == _policy("aws")["Statement"], "stale: run python deploy/aws/render_policy.py"


def test_azure_role_and_gcp_custom_role_grant_nothing_that_escalates() -> None:
    azure = _policy("azure")
    assert azure["AssignableScopes"] == ["/subscriptions/<subscription-id>"]  # never "/" (every subscription)
    assert not [a for a in azure["Actions"] + azure["DataActions"] if "*" in a]
    assert not set(azure["Actions"]) & ESCALATION["azure"]
    assert not [a for a in azure["Actions"] if a.endswith("/delete")]
    gcp = _policy("gcp")["includedPermissions"]
    assert not [p for p in gcp if "*" in p]
    assert not set(gcp) & ESCALATION["gcp"]
    assert not [p for p in gcp if p.endswith((".setIamPolicy", ".delete"))]


def test_iam_policy_explain_names_each_statement_and_its_scope() -> None:
    result = runner.invoke(app, ["iam-policy", "aws", "--explain"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for statement in _policy("aws")["Statement"]:
        assert statement["Sid"] in result.output
    assert "ec2.amazonaws.com" in result.output  # the PassRole condition, shown
    refused = runner.invoke(app, ["iam-policy", "gcp", "--explain"])
    assert refused.exit_code == 2
    assert "docs/permissions.md" in refused.output
