"""Offline plans list every provider step and API call without a cloud call, and can never run.

No sandbox runs in the offline tests: the autouse network guard fails any connection attempt to a cloud.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.errors import PreconditionError
from cloudir.plan import Plan, StepContext, run_plan
from cloudir.playbook import (
    ResponsePlan,
    build_response_plan,
    load_playbooks,
    offline_provider,
    select_playbook,
    symbolic_target,
)
from cloudir.triggers import Trigger, load_triggers, manual_trigger, parse_triggers
from moto_fixtures.gcp import INSTANCE, PROJECT, ZONE, GcpSandbox
from tests.respond.conftest import DATA, AwsIncident

runner = CliRunner()


def _offline(trigger: Trigger, playbook_id: str | None = None, **params: object) -> ResponsePlan:
    playbook = select_playbook(trigger, load_playbooks(), playbook_id)
    return build_response_plan(
        playbook, trigger, offline_provider(trigger), symbolic_target(trigger), approved=True, params=params
    )


def _operations(plan: Plan) -> set[str]:
    return {f"{call.service}:{call.operation}" for step in plan.steps for call in step.calls}


@pytest.mark.parametrize(
    ("finding", "playbook", "expected"),
    [
        (
            "guardduty_ec2_eventbridge.json",
            "ec2-instance-compromise",
            {
                "ec2:ModifyInstanceAttribute",
                "autoscaling:SetInstanceProtection",
                "ec2:CreateSnapshots",
                "cloudtrail:LookupEvents",
                "ec2:CreateSecurityGroup",
                "ec2:ModifyNetworkInterfaceAttribute",
                "ec2:ReplaceIamInstanceProfileAssociation",
                "iam:PutRolePolicy",
            },
        ),
        (
            "guardduty_iam_access_key.json",
            "iam-credential-compromise",
            {"iam:GetUser", "cloudtrail:LookupEvents", "iam:UpdateAccessKey", "iam:PutUserPolicy"},
        ),
        (  # a Lambda / EKS finding names an IAM role, not an instance or a key
            "guardduty_lambda.json",
            "iam-credential-compromise",
            {"iam:GetRole", "iam:ListAttachedRolePolicies", "cloudtrail:LookupEvents", "iam:PutRolePolicy"},
        ),
        (
            "defender_eventgrid.json",
            "azure-vm-compromise",
            {
                "Microsoft.Authorization:locks/write",
                "Microsoft.Compute:snapshots/write",
                "Microsoft.Insights:eventtypes/values/read",
                "Microsoft.Network:networkSecurityGroups/write",
                "Microsoft.Network:networkInterfaces/write",
            },
        ),
        (
            "scc_pubsub_push.json",
            "gce-instance-compromise",
            {
                "compute:instances.setDeletionProtection",
                "compute:disks.createSnapshot",
                "logging:entries.list",
                "compute:firewalls.insert",
                "compute:instances.setTags",
            },
        ),
        ("guardduty_ec2_eventbridge.json", "preserve-and-collect", {"ec2:CreateSnapshots", "cloudtrail:LookupEvents"}),
        ("defender_eventgrid.json", "preserve-and-collect", {"Microsoft.Compute:snapshots/write"}),
        ("scc_pubsub_push.json", "preserve-and-collect", {"compute:disks.createSnapshot", "logging:entries.list"}),
    ],
)
def test_offline_plan_of_each_shipped_playbook_lists_provider_calls(
    finding: str, playbook: str, expected: set[str]
) -> None:
    (trigger,) = load_triggers(DATA / finding)
    response = _offline(trigger, playbook)
    assert response.plan.symbolic
    assert expected <= _operations(response.plan)
    if playbook == "preserve-and-collect":
        assert not any(step.kind == "contain" for step in response.plan.steps)


def test_offline_plan_fills_in_what_the_finding_knows() -> None:
    (trigger,) = load_triggers(DATA / "guardduty_ec2_eventbridge.json")
    calls = [call.describe() for step in _offline(trigger).plan.steps for call in step.calls]
    assert any(
        c.startswith("ec2:CreateSnapshots (us-east-1) InstanceSpecification={'InstanceId': 'i-99999999'") for c in calls
    )
    assert any(
        "ec2:ModifyInstanceAttribute (us-east-1) InstanceId=i-99999999 DisableApiTermination=True" in c for c in calls
    )
    placeholders = [c for c in calls if "ec2:ModifyNetworkInterfaceAttribute" in c]
    assert placeholders == [
        (
            "ec2:ModifyNetworkInterfaceAttribute (us-east-1) NetworkInterfaceId=<each interface of i-99999999> "
            "Groups=<isolation group>"
        )
    ]
    cross_region = _offline(trigger, forensic_location="eu-west-1", encryption_key="arn:aws:kms:eu-west-1:1:key/k")
    copy = next(step for step in cross_region.plan.steps if step.id == "copy.copy.snapshots")
    assert not copy.title.startswith(("if ", "for each"))  # a cross-region copy always happens
    assert any("SourceSnapshotId=<each snapshot of i-99999999>" in call.describe() for call in copy.calls)


def test_offline_plan_cannot_run(tmp_path: Path) -> None:
    (trigger,) = load_triggers(DATA / "guardduty_ec2_eventbridge.json")
    plan = _offline(trigger).plan
    case = Case.create(tmp_path / "case")
    with pytest.raises(PreconditionError, match="built offline for an unresolved target"):
        run_plan(plan, case)
    step = next(step for step in plan.steps if step.id == "snapshot.snapshot.create")
    with pytest.raises(PreconditionError, match=r"step snapshot\.create was planned offline"):
        step.run(StepContext(case, {}, Console(quiet=True)))


def test_cli_offline_plan_lists_every_call() -> None:
    """``cloudir playbook plan`` without --resolve: every call, no cloud call (the guard would fail one)."""
    result = runner.invoke(
        app,
        [
            "playbook",
            "plan",
            "--trigger",
            str(DATA / "guardduty_ec2_eventbridge.json"),
            "--param",
            "log_window_before_hours=6",
        ],
        env={"COLUMNS": "250"},
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "ec2:CreateSnapshots (us-east-1) InstanceSpecification={'InstanceId': 'i-99999999'",
        "if the instance is in an Auto Scaling group: Protect from scale-in",
        "autoscaling:SetInstanceProtection (us-east-1) InstanceIds=['i-99999999']",
        "cloudtrail:LookupEvents (us-east-1) StartTime=2026-11-20T08:05:41Z EndTime=2026-11-20T16:05:41Z",
        "ec2:ModifyNetworkInterfaceAttribute",
        "target not resolved (no cloud call made)",
        "dry run: nothing was changed",
    ):
        assert expected in result.output, expected
    assert "<calls listed" not in result.output


def _resolved(incident: AwsIncident, trigger: Trigger, **params: object) -> ResponsePlan:
    provider = incident.provider_factory(trigger)
    playbook = select_playbook(trigger, load_playbooks())
    target = provider.find_target(trigger.target)
    merged = {**incident.params, **params}
    return build_response_plan(playbook, trigger, provider, target, approved=True, params=merged)


def test_offline_plan_matches_the_resolved_plan(aws_incident: AwsIncident) -> None:
    """Same step ids and kinds; per step the same operations; offline-only steps are all conditional."""
    (trigger,) = parse_triggers(aws_incident.finding)
    resolved = _resolved(aws_incident, trigger).plan
    offline = _offline(trigger, **aws_incident.params).plan
    offline_steps = {step.id: step for step in offline.steps}
    for step in resolved.steps:
        assert step.id in offline_steps, step.id
        twin = offline_steps[step.id]
        assert twin.kind == step.kind, step.id
        assert {(c.service, c.operation) for c in twin.calls} == {(c.service, c.operation) for c in step.calls}, step.id
    resolved_ids = {step.id for step in resolved.steps}
    extra = [step for step in offline.steps if step.id not in resolved_ids]
    assert all(step.title.startswith(("if ", "for each ")) for step in extra), [s.title for s in extra]
    assert _operations(resolved) <= _operations(offline)
    assert [s.id for s in offline.steps if s.id in resolved_ids] == [s.id for s in resolved.steps]  # same order


def test_production_database_tags_skip_containment(aws_incident: AwsIncident) -> None:
    """The instance's own tags, read when the target is resolved, decide the "never contain" condition."""
    finding = aws_incident.finding
    finding["detail"]["resource"]["instanceDetails"]["tags"] = []  # only the cloud knows the tags
    (trigger,) = parse_triggers(finding)
    untagged = _resolved(aws_incident, trigger)
    assert not untagged.skipped
    assert any(step.kind == "contain" for step in untagged.plan.steps)
    assert not any("tags unknown" in note for note in untagged.plan.notes)

    aws_incident.sandbox.client("ec2").create_tags(
        Resources=[trigger.target.value],
        Tags=[{"Key": "env", "Value": "production"}, {"Key": "role", "Value": "database"}],
    )
    tagged = _resolved(aws_incident, trigger)
    assert [step_id for step_id, _ in tagged.skipped] == ["contain"]
    assert tagged.skipped[0][1] == "target is tagged role=database, env=production"
    assert not any(step.kind == "contain" for step in tagged.plan.steps)
    assert any(note.startswith("contain: skipped (") for note in tagged.plan.notes)


def test_gce_labels_skip_containment(gcp_sandbox: GcpSandbox) -> None:
    """GCE instance labels are the tags playbook conditions check."""
    incident = gcp_sandbox.plant_incident()
    gcp_sandbox.fake.project(PROJECT).instances[ZONE][INSTANCE]["labels"].update(role="database", env="production")
    query = incident.target
    trigger = manual_trigger("gcp", query.kind, query.value, location=query.location, account=PROJECT)
    playbook = select_playbook(trigger, load_playbooks())
    provider = gcp_sandbox.provider()
    target = provider.find_target(trigger.target)
    response = build_response_plan(playbook, trigger, provider, target, approved=True)
    assert response.skipped == [("contain", "target is tagged role=database, env=production")]
