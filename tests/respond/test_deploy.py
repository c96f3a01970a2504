"""Deployment artifacts: the SAM template routes GuardDuty findings to the handler with the generated policy."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from cloudir.cli import app

runner = CliRunner()
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _policy(cloud: str) -> dict[str, Any]:
    result = runner.invoke(app, ["iam-policy", cloud])
    assert result.exit_code == 0, result.output
    policy: dict[str, Any] = json.loads(result.output)
    return policy


def test_sam_template_uses_the_generated_policy_and_routes_guardduty() -> None:
    template = yaml.safe_load((DEPLOY / "aws" / "template.yaml").read_text())
    resources = template["Resources"]
    statements = resources["ResponderPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    generated = _policy("aws")["Statement"]
    assert statements == generated, "deploy/aws/template.yaml is stale: run python deploy/aws/render_policy.py"
    assert not [action for s in statements if s["Effect"] == "Allow" for action in s["Action"] if "*" in action]
    function = resources["ResponderFunction"]["Properties"]
    module, _, name = function["Handler"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    pattern = function["Events"]["GuardDutyFindings"]["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.guardduty"]
    assert pattern["detail-type"] == ["GuardDuty Finding"]
    assert function["Environment"]["Variables"]["CLOUDIR_CASE_ROOT"] == "/mnt/cases"


def test_azure_and_gcp_roles_are_generated_without_credentials() -> None:
    azure = _policy("azure")
    actions = [a for d in azure["roleDefinitions"] for a in d["body"]["properties"]["permissions"][0]["actions"]]
    assert actions
    assert all(action.startswith("Microsoft.") for action in actions)
    gcp = _policy("gcp")
    permissions = [p for r in gcp["roles"] for p in r["request"]["role"]["includedPermissions"]]
    assert permissions
    assert all("*" not in permission for permission in permissions)
    for cloud in ("azure", "gcp"):  # the deploy guides name the generated placeholders
        guide = (DEPLOY / cloud / "README.md").read_text()
        for placeholder in {*re.findall(r"<[a-z-]+>", json.dumps(_policy(cloud)))}:
            assert placeholder in guide, (cloud, placeholder)


def test_sam_template_passes_cfn_lint_and_wires_dead_letters_failures_and_the_wheel_package() -> None:
    path = DEPLOY / "aws" / "template.yaml"
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(path)], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    resources = yaml.safe_load(path.read_text())["Resources"]
    function = resources["ResponderFunction"]["Properties"]
    assert function["CodeUri"] == ".build/cloudir-lambda.zip"  # deploy/aws/build_package.py: the wheel, no repo
    rules = [name for name, event in function["Events"].items() if event["Type"] == "EventBridgeRule"]
    for name in rules:
        assert function["Events"][name]["Properties"]["DeadLetterConfig"]["Arn"] == {
            "Fn::GetAtt": ["DeliveryDeadLetterQueue", "Arn"]
        }
    [policy] = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SQS::QueuePolicy"]
    assert policy["Queues"] == [{"Ref": "DeliveryDeadLetterQueue"}]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Fn::GetAtt": [f"ResponderFunction{name}", "Arn"]}
        for name in rules  # SAM's rule logical ids
    ]
    invoke = function["EventInvokeConfig"]
    assert invoke["MaximumRetryAttempts"] == 2  # each retry resumes the case (CLOUDIR_STEP_RESERVE_SECONDS)
    on_failure = invoke["DestinationConfig"]["OnFailure"]
    assert on_failure["Type"] == "SQS"
    assert resources[on_failure["Destination"]["Fn::GetAtt"][0]]["Type"] == "AWS::SQS::Queue"
    assert function["Environment"]["Variables"]["CLOUDIR_STEP_RESERVE_SECONDS"] == "300"
