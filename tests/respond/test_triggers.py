"""Every finding envelope parses into one typed Trigger; anything else fails naming the missing field."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloudir.provider import TargetKind
from cloudir.triggers import Trigger, TriggerError, load_triggers, manual_trigger, parse_triggers
from tests.respond.conftest import DATA, sample

EXPECTED = {
    "guardduty_ec2_eventbridge.json": (
        "guardduty",
        "aws",
        "123456789012",
        "us-east-1",
        TargetKind.INSTANCE,
        "i-99999999",
        "high",
        "UnauthorizedAccess:EC2/MaliciousIPCaller.Custom",
        "16afba5c5c43e07c9e3e5e2e544e95df",
        "2026-11-20T14:05:41Z",
    ),
    "guardduty_iam_access_key.json": (
        "guardduty",
        "aws",
        "123456789012",
        "us-east-1",
        TargetKind.ACCESS_KEY,
        "AKIAEXAMPLEKEY000001",
        "high",
        "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        "7cc4c9a4e8d34d5f0c2ff1c4d5a7a0b1",
        "2026-11-20T13:55:00Z",
    ),
    "securityhub_imported_eventbridge.json": (
        "securityhub",
        "aws",
        "123456789012",
        "us-east-1",
        TargetKind.INSTANCE,
        "i-99999999",
        "high",
        "TTPs/Command and Control/UnauthorizedAccess:EC2-MaliciousIPCaller.Custom",
        "arn:aws:guardduty:us-east-1:123456789012:detector/123456789012abcdef/finding/16afba5c5c43e07c9e3e5e2e544e95df",
        "2026-11-20T14:05:41Z",
    ),
    "securityhub_custom_action.json": (
        "securityhub",
        "aws",
        "123456789012",
        "us-east-1",
        TargetKind.ACCESS_KEY,
        "AKIAEXAMPLEKEY000001",
        "critical",
        "TTPs/Initial Access/UnauthorizedAccess:IAMUser-InstanceCredentialExfiltration.OutsideAWS",
        "arn:aws:guardduty:us-east-1:123456789012:detector/123456789012abcdef/finding/7cc4c9a4e8d34d5f0c2ff1c4d5a7a0b1",
        "2026-11-20T13:55:00Z",
    ),
    "defender_eventgrid.json": (
        "defender",
        "azure",
        "00000000-0000-0000-0000-000000000000",
        "eastus",
        TargetKind.INSTANCE,
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/prod-rg/providers/Microsoft.Compute/virtualMachines/web-vm-1",
        "high",
        "VM_SuspiciousCommandLineExecution",
        "2517538088322968242_f8b2a1c4-7d1e-4b8a-9c11-3f2a9e0d1b22",
        "2026-11-20T13:52:11Z",
    ),
    "defender_workflow_automation.json": (
        "defender",
        "azure",
        "00000000-0000-0000-0000-000000000000",
        "eastus",
        TargetKind.INSTANCE,
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/prod-rg/providers/Microsoft.Compute/virtualMachines/web-vm-1",
        "medium",
        "VM_SuspiciousCommandLineExecution",
        "2517538088322968242_a0b1c2d3-0000-4000-8000-000000000001",
        "2026-11-20T13:52:11Z",
    ),
    "scc_notification.json": (
        "scc",
        "gcp",
        "cloudir-sandbox",
        "us-central1",
        TargetKind.INSTANCE,
        "web-1",
        "high",
        "Execution: Cryptocurrency Mining Hash Match",
        "organizations/123456789012/sources/5678901234567890123/findings/6a9b2f7c1d3e4f5a6b7c8d9e0f1a2b3c",
        "2026-11-20T13:49:30Z",
    ),
}
EXPECTED["guardduty_eks_audit.json"] = (
    "guardduty",
    "aws",
    "123456789012",
    "us-east-1",
    TargetKind.PRINCIPAL,
    "arn:aws:sts::123456789012:assumed-role/eks-deployer/ci-session",
    "medium",
    "Execution:Kubernetes/ExecInKubeSystemPod",
    "3ec4c9a4e8d34d5f0c2ff1c4d5a7a0b2",
    "2026-11-20T13:55:00Z",
)
EXPECTED["guardduty_lambda.json"] = (
    "guardduty",
    "aws",
    "123456789012",
    "us-east-1",
    TargetKind.PRINCIPAL,
    "arn:aws:iam::123456789012:role/service-role/thumbnailer-role",
    "high",
    "CryptoCurrency:Lambda/BitcoinTool.B",
    "5ac4c9a4e8d34d5f0c2ff1c4d5a7a0b3",
    "2026-11-20T13:55:00Z",
)
EXPECTED["scc_pubsub_push.json"] = EXPECTED["scc_notification.json"]
EXPECTED["scc_cloudevent.json"] = EXPECTED["scc_notification.json"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_parses_into_one_trigger(name: str) -> None:
    [trigger] = load_triggers(DATA / name)
    source, cloud, account, region, kind, value, severity, finding_type, finding_id, time = EXPECTED[name]
    assert (trigger.source, trigger.cloud, trigger.account, trigger.region) == (source, cloud, account, region)
    assert (trigger.target.kind, trigger.target.value) == (kind, value)
    assert (trigger.severity, trigger.finding_type, trigger.finding_id, trigger.time) == (
        severity,
        finding_type,
        finding_id,
        time,
    )
    assert trigger.raw  # the original finding travels with the trigger
    assert Trigger.from_dict(json.loads(json.dumps(trigger.as_dict()))) == trigger


def test_target_locations_name_where_to_look() -> None:
    assert load_triggers(DATA / "defender_eventgrid.json")[0].target.location == "prod-rg"
    assert load_triggers(DATA / "scc_pubsub_push.json")[0].target.location == "us-central1-a"
    assert load_triggers(DATA / "guardduty_iam_access_key.json")[0].principal == "deploy-bot"


def test_malformed_finding_names_the_missing_field() -> None:
    with pytest.raises(TriggerError, match=r"GuardDuty finding: missing field resource\.instanceDetails\.instanceId"):
        load_triggers(DATA / "malformed_guardduty_no_instance.json")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["detail"].pop("severity"), "missing field severity"),
        (lambda e: e["detail"].pop("accountId"), "missing field accountId"),
        (
            lambda e: e["detail"]["resource"].update(resourceType="S3Bucket"),
            r"'S3Bucket' names no instance, access key or IAM principal \(missing field resource\.accessKeyDetails",
        ),
        (lambda e: e["detail"]["service"].update(eventLastSeen="yesterday"), "eventLastSeen is not an ISO 8601 time"),
        (lambda e: e.update(source="aws.inspector"), "not a finding cloudir handles"),
    ],
)
def test_guardduty_errors(mutate: Callable[[Any], Any], message: str) -> None:
    event = sample("guardduty_ec2_eventbridge.json")
    mutate(event)
    with pytest.raises(TriggerError, match=message):
        parse_triggers(event)


def test_guardduty_runtime_finding_on_a_container_host_targets_the_node() -> None:
    finding = sample("guardduty_eks_audit.json")
    finding["resource"]["instanceDetails"] = {"instanceId": "i-0123456789abcdef0"}
    (trigger,) = parse_triggers(finding)
    assert (trigger.target.kind, trigger.target.value) == (TargetKind.INSTANCE, "i-0123456789abcdef0")


@pytest.mark.parametrize(
    "username",
    [
        "kubernetes-admin",  # a Kubernetes-only user: no IAM identity to collect for
        "arn:aws:sts::123456789012:assumed-role/eks-deployer/ci\nINJECTED",
        "arn:aws:iam::123456789012:role/a b;rm -rf",
        "see arn:aws:iam::123456789012:role/admin",
        "arn:aws:iam::12345:role/short-account",
    ],
)
def test_guardduty_finding_naming_no_iam_arn_is_refused(username: str) -> None:
    finding = sample("guardduty_eks_audit.json")
    finding["resource"]["kubernetesDetails"]["kubernetesUserDetails"]["username"] = username
    with pytest.raises(TriggerError, match=r"'EKSCluster' names no instance, access key or IAM principal") as raised:
        parse_triggers(finding)
    assert "--principal" in (raised.value.hint or "")


def test_asff_lambda_finding_targets_the_execution_role() -> None:
    event = sample("securityhub_imported_eventbridge.json")
    finding = event["detail"]["findings"][0]
    role = "arn:aws:iam::123456789012:role/service-role/thumbnailer-role"
    function = {"Type": "AwsLambdaFunction", "Id": "arn:aws:lambda:us-east-1:123456789012:function:thumbnailer"}
    finding["Resources"] = [{**function, "Details": {"AwsLambdaFunction": {"Role": "not an arn; rm -rf /"}}}]
    with pytest.raises(TriggerError, match=r"no supported resource in Resources \(found AwsLambdaFunction\)"):
        parse_triggers(event)
    finding["Resources"] = [
        {**function, "Details": {"AwsLambdaFunction": {"FunctionName": "thumbnailer", "Role": role}}}
    ]
    (trigger,) = parse_triggers(event)
    assert (trigger.target.kind, trigger.target.value, trigger.principal) == (TargetKind.PRINCIPAL, role, role)


def test_asff_without_severity_or_resources() -> None:
    event = sample("securityhub_imported_eventbridge.json")
    finding = event["detail"]["findings"][0]
    finding.pop("Severity")
    with pytest.raises(TriggerError, match=r"Security Hub finding: missing field Severity\.Label"):
        parse_triggers(event)
    finding["Severity"] = {"Label": "HIGH"}
    finding["Resources"] = [{"Type": "AwsS3Bucket", "Id": "arn:aws:s3:::b"}]
    with pytest.raises(TriggerError, match=r"no supported resource in Resources \(found AwsS3Bucket\)"):
        parse_triggers(event)


def test_defender_alert_on_a_non_vm_and_without_resource() -> None:
    alert = sample("defender_eventgrid.json")[0]["data"]
    alert["properties"]["resourceIdentifiers"] = []
    with pytest.raises(TriggerError, match=r"missing field properties\.resourceIdentifiers\[type=AzureResource\]"):
        parse_triggers(alert)
    alert["properties"]["resourceIdentifiers"] = [
        {
            "type": "AzureResource",
            "azureResourceId": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Sql/servers/x",
        }
    ]
    with pytest.raises(TriggerError, match="is not a virtual machine"):
        parse_triggers(alert)


def test_scc_pubsub_errors() -> None:
    with pytest.raises(TriggerError, match="not base64-encoded JSON"):
        parse_triggers({"message": {"data": "%%% not base64 %%%"}})
    with pytest.raises(TriggerError, match=r"Pub/Sub message: missing field data"):
        parse_triggers({"message": {"attributes": {}}})
    notification = sample("scc_notification.json")
    notification["finding"].pop("severity")
    data = base64.b64encode(json.dumps(notification).encode()).decode()
    with pytest.raises(TriggerError, match=r"Security Command Center finding: finding: missing field severity"):
        parse_triggers({"message": {"data": data}})


def test_scc_iam_finding_targets_the_principal() -> None:
    notification = sample("scc_notification.json")
    notification["finding"]["resourceName"] = "//cloudresourcemanager.googleapis.com/projects/987654321098"
    notification["finding"]["access"] = {"principalEmail": "attacker@example.com"}
    [trigger] = parse_triggers(notification)
    assert (trigger.target.kind, trigger.target.value) == (TargetKind.PRINCIPAL, "attacker@example.com")


def test_unknown_and_broken_payloads(tmp_path: Path) -> None:
    with pytest.raises(TriggerError, match=r"unrecognized finding \(top-level fields: hello\)"):
        load_triggers(DATA / "unknown_shape.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"detail": ')
    with pytest.raises(TriggerError, match="not valid JSON"):
        load_triggers(broken)
    with pytest.raises(TriggerError, match="empty list"):
        parse_triggers([])
    with pytest.raises(TriggerError, match="must be a JSON object"):
        parse_triggers("GuardDuty")


def test_security_hub_batch_gives_one_trigger_per_finding() -> None:
    event = sample("securityhub_imported_eventbridge.json")
    second = sample("securityhub_custom_action.json")["detail"]["findings"][0]
    event["detail"]["findings"].append(second)
    assert [t.target.kind for t in parse_triggers(event)] == [TargetKind.INSTANCE, TargetKind.ACCESS_KEY]
    assert len(parse_triggers({"Findings": event["detail"]["findings"]})) == 2


def test_manual_trigger_is_stable_per_target_and_around_time() -> None:
    first = manual_trigger("aws", TargetKind.INSTANCE, "i-1", location="us-east-1", around="2026-11-20T10:00:00Z")
    again = manual_trigger("aws", TargetKind.INSTANCE, "i-1", location="us-east-1", around="2026-11-20T11:00:00+01:00")
    later = manual_trigger("aws", TargetKind.INSTANCE, "i-1", location="us-east-1", around="2026-11-20T14:00:00Z")
    now = manual_trigger("aws", TargetKind.INSTANCE, "i-1", location="us-east-1")
    assert first.finding_id == again.finding_id  # the same instant, however written: a second delivery
    assert len({first.finding_id, later.finding_id, now.finding_id}) == 3  # each time its own response
    assert now.finding_id == manual_trigger("aws", TargetKind.INSTANCE, "i-1", location="us-east-1").finding_id
    assert first.finding_id.startswith("manual-")
    assert (first.source, first.severity, first.time) == ("manual", "high", "2026-11-20T10:00:00Z")
    with pytest.raises(TriggerError, match="unknown cloud"):
        manual_trigger("oracle", TargetKind.INSTANCE, "i-1")
    with pytest.raises(TriggerError, match="unknown severity"):
        manual_trigger("aws", TargetKind.INSTANCE, "i-1", severity="urgent")
    with pytest.raises(TriggerError, match="needs --account"):
        manual_trigger("gcp", TargetKind.INSTANCE, "web-1", location="us-central1-a")


def test_guardduty_s3_finding_targets_the_access_key() -> None:
    finding = sample("guardduty_iam_access_key.json")
    finding["resource"]["resourceType"] = "S3Bucket"
    finding["resource"]["s3BucketDetails"] = [{"name": "customer-data"}]
    [trigger] = parse_triggers(finding)
    assert (trigger.target.kind, trigger.target.value) == (TargetKind.ACCESS_KEY, "AKIAEXAMPLEKEY000001")
