"""Acquisition of an EC2 instance against moto: preserve, capture, snapshot, copy, share, custody."""

import json

import pytest

from cloudir.custody import read_records, verify_case
from cloudir.errors import CloudirError
from cloudir.plan import StepKind
from cloudir.provider import AcquireOptions, TargetKind, TargetQuery
from moto_fixtures.aws import FORENSIC_ACCOUNT, FORENSIC_REGION, AwsSandbox, create_customer_key
from moto_fixtures.sandbox import PlantedIncident
from tests.aws.conftest import Acquire, api_outcomes


def test_preserves_captures_and_snapshots_the_planted_instance(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    iid = aws_incident.extra["instance_id"]
    assert not aws_sandbox.is_preserved(aws_incident)
    case, result = acquire(iid)
    assert result.ok
    assert aws_sandbox.is_preserved(aws_incident)
    members = aws_sandbox.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[iid])
    assert members["AutoScalingInstances"][0]["ProtectedFromScaleIn"] is True
    base = case.root / "artifacts" / "aws" / iid
    for name in (
        "instance.json",
        "tags.json",
        "user-data.json",
        "volumes.json",
        "network-interfaces.json",
        "security-groups.json",
        "instance-profile.json",
        "console-output.json",
        "autoscaling.json",
    ):
        assert (base / name).is_file(), name
    assert b"203.0.113.50" in (base / "user-data.bin").read_bytes()
    profile = json.loads((base / "instance-profile.json").read_text())
    assert profile["Roles"][0]["InlinePolicies"]["app-data"]["Statement"][0]["Action"] == "s3:*"
    assert profile["Roles"][0]["AttachedPolicies"][0]["Document"]["Statement"][0]["Action"] == "logs:*"
    snapshots = aws_sandbox.snapshots_for_case(case.case_id)
    assert len(snapshots) == 2
    described = aws_sandbox.client("ec2").describe_snapshots(SnapshotIds=snapshots)["Snapshots"]
    tags = [{t["Key"]: t["Value"] for t in s["Tags"]} for s in described]
    assert {t["cloudir:source-volume"] for t in tags} == set(aws_incident.extra["volumes"])
    assert all(t["cloudir:case-id"] == case.case_id and t["cloudir:instance-id"] == iid for t in tags)
    records = read_records(case.root / "custody.jsonl")
    snap_record = next(r for r in records if r["details"].get("step") == "snapshot.create")
    assert "CreateSnapshots" in [c["operation"] for c in snap_record["api_calls"]]
    assert all(r["caller"]["aws"].startswith("arn:aws:") for r in records[1:])
    assert verify_case(case.root).ok


def test_rerun_of_the_same_case_reuses_tagged_snapshots(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    iid = aws_incident.extra["instance_id"]
    case, _ = acquire(iid)
    first = aws_sandbox.snapshots_for_case(case.case_id)
    (case.root / "state.json").unlink()  # forget the run state: only the tags can prevent duplicates now
    _, again = acquire(iid)
    assert aws_sandbox.snapshots_for_case(case.case_id) == first
    assert sorted(again.results["snapshot.create"]["reused"]) == first


@pytest.mark.parametrize(("mode", "state"), [("standby", "Standby"), ("detach", None)])
def test_asg_modes(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire, mode: str, state: str | None
):
    iid = aws_incident.extra["instance_id"]
    acquire(iid, group_mode=mode)
    members = aws_sandbox.client("autoscaling").describe_auto_scaling_instances(InstanceIds=[iid])[
        "AutoScalingInstances"
    ]
    assert (members[0]["LifecycleState"] if members else None) == state
    assert aws_sandbox.is_preserved(aws_incident)


def test_snapshot_all_volumes_of_a_multi_volume_instance(
    aws_sandbox: AwsSandbox, multi_volume_instance: str, acquire: Acquire
):
    case, result = acquire(multi_volume_instance)
    assert len(result.results["snapshot.create"]["snapshots"]) == 4
    assert len(aws_sandbox.snapshots_for_case(case.case_id)) == 4
    assert "preserve.autoscaling" not in result.results


def test_reencrypts_aws_managed_volumes_and_shares_with_the_forensic_account(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    key = aws_incident.encryption_key
    case, result = acquire(aws_incident.extra["instance_id"], forensic_account=FORENSIC_ACCOUNT, encryption_key=key)
    copies = result.results["copy.snapshots"]["copies"]
    assert len(copies) == 1  # only the aws/ebs volume needs a re-encrypted copy
    ec2 = aws_sandbox.client("ec2")
    copy = ec2.describe_snapshots(SnapshotIds=list(copies.values()))["Snapshots"][0]
    assert copy["Encrypted"]
    assert copy["KmsKeyId"] == key
    shared = result.results["share.snapshots"]["shared"]
    assert len(shared) == 2
    assert next(iter(copies)) not in shared
    for snapshot_id in shared:
        perms = ec2.describe_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
        assert perms["CreateVolumePermissions"] == [{"UserId": FORENSIC_ACCOUNT}]
    grants = aws_sandbox.client("kms").list_grants(KeyId=key)["Grants"]
    assert [g["GranteePrincipal"] for g in grants] == [f"arn:aws:iam::{FORENSIC_ACCOUNT}:root"]
    assert len(aws_sandbox.snapshots_for_case(case.case_id)) == 3


def test_cross_region_copy_uses_the_key_of_the_forensic_region(
    aws_sandbox: AwsSandbox, customer_key_instance, acquire: Acquire
):
    iid, _ = customer_key_instance
    west_key = create_customer_key(aws_sandbox, FORENSIC_REGION, "forensics-west")
    _, result = acquire(iid, forensic_location=FORENSIC_REGION, encryption_key=west_key)
    copies = result.results["copy.snapshots"]["copies"]
    described = aws_sandbox.client("ec2", FORENSIC_REGION).describe_snapshots(SnapshotIds=list(copies.values()))
    assert len(described["Snapshots"]) == 2
    assert {s.get("KmsKeyId") for s in described["Snapshots"] if s["Encrypted"]} == {west_key}


def test_aws_managed_key_without_kms_key_is_refused_before_any_change(
    aws_sandbox: AwsSandbox, aws_managed_key_instance: str
):
    provider = aws_sandbox.provider()
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, aws_managed_key_instance, "us-east-1"))
    with pytest.raises(CloudirError, match=r"AWS-managed key .*cannot be shared.*--kms-key"):
        provider.plan_acquire(target, AcquireOptions(forensic_account=FORENSIC_ACCOUNT))


def test_unknown_kms_key_names_the_missing_permission(aws_sandbox: AwsSandbox, aws_managed_key_instance: str):
    provider = aws_sandbox.provider()
    target = provider.find_target(TargetQuery(TargetKind.INSTANCE, aws_managed_key_instance, "us-east-1"))
    bogus = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    with pytest.raises(CloudirError, match="kms:DescribeKey") as info:
        provider.plan_acquire(target, AcquireOptions(forensic_account=FORENSIC_ACCOUNT, encryption_key=bogus))
    assert "\n" not in str(info.value)


def test_kms_failure_during_copy_is_a_clear_error_and_blocks_sharing(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    with aws_sandbox.fail_next("CopySnapshot", "KMS.DisabledException"):
        case, result = acquire(
            aws_incident.extra["instance_id"],
            forensic_account=FORENSIC_ACCOUNT,
            encryption_key=aws_incident.encryption_key,
            raise_on_failure=False,
        )
    failed = result.failed
    assert failed is not None
    assert failed.step_id == "copy.snapshots"
    assert "KMS error" in failed.error
    assert "kms:ReEncryptTo" in failed.error
    assert [o.status for o in result.outcomes if o.step_id == "share.snapshots"] == ["blocked"]
    failed_record = next(r for r in read_records(case.root / "custody.jsonl") if r["outcome"] == "failed")
    assert "KMS.DisabledException" in failed_record["error"]
    assert "KMS.DisabledException" in [c["outcome"] for c in failed_record["api_calls"]]


def test_plan_steps_have_stable_ids_and_kinds(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident):
    provider = aws_sandbox.provider()
    target = provider.find_target(aws_incident.target)
    options = AcquireOptions(
        forensic_account=FORENSIC_ACCOUNT, encryption_key=aws_incident.encryption_key, raw_image=True
    )
    first, second = provider.plan_acquire(target, options), provider.plan_acquire(target, options)
    assert [s.id for s in first.steps] == [s.id for s in second.steps]
    kinds = {s.id: s.kind for s in first.steps}
    assert kinds["preserve.termination-protection"] is StepKind.PRESERVE
    assert kinds["capture.instance"] is StepKind.READ
    assert kinds["snapshot.create"] is StepKind.ACQUIRE
    assert list(kinds).index("preserve.autoscaling") < list(kinds).index("capture.instance")
    permissions = set(provider.required_permissions())
    assert {"ec2:CreateSnapshots", "kms:CreateGrant", "ebs:GetSnapshotBlock", "cloudtrail:LookupEvents"} <= permissions
    for step in first.steps:
        for call in step.calls:
            assert f"{call.service}:{call.operation}" in permissions


def test_throttled_snapshot_calls_are_refused_before_they_run_and_leave_no_orphans(
    aws_sandbox: AwsSandbox, multi_volume_instance: str, acquire: Acquire
):
    with aws_sandbox.throttle("CreateSnapshots", 2):
        case, result = acquire(multi_volume_instance)
    assert result.ok
    assert aws_sandbox.throttled == ["CreateSnapshots", "CreateSnapshots"]  # the tool retried twice
    assert len(aws_sandbox.snapshots_for_case(case.case_id)) == 4  # one per volume: the throttled sends made none


def test_fifty_throttled_or_lost_snapshot_calls_leave_one_snapshot_per_volume_all_in_custody(
    aws_sandbox: AwsSandbox, multi_volume_instance: str, acquire: Acquire
):
    # The lost send ran on EC2: a blind retry would snapshot every volume again (CreateSnapshots has no client token).
    with aws_sandbox.throttle("CreateSnapshots", 49), aws_sandbox.lose_responses("CreateSnapshots", 1):
        case, result = acquire(multi_volume_instance)
    assert result.ok
    assert (len(aws_sandbox.throttled), aws_sandbox.lost) == (49, ["CreateSnapshots"])
    snapshots = aws_sandbox.snapshots_for_case(case.case_id)
    assert len(snapshots) == 4  # exactly one per volume: found by its request tag instead of made again
    assert sorted(result.results["snapshot.create"]["snapshots"].values()) == snapshots
    sends = [
        call["outcome"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] == "CreateSnapshots"
    ]
    assert sends == ["RequestLimitExceeded"] * 49 + ["ConnectionClosedError"], sends  # every send is in custody


def test_a_lost_answer_while_describe_lags_leaves_one_snapshot_per_volume(
    aws_sandbox: AwsSandbox, multi_volume_instance: str, acquire: Acquire
):
    """EC2 lists a new snapshot only after a while (the sandbox's default lag): a lookup believed at once would
    resend and snapshot twice."""
    assert aws_sandbox.describe_lag_seconds == 0.5
    with aws_sandbox.throttle("CreateSnapshots", 49), aws_sandbox.lose_responses("CreateSnapshots", 1):
        case, result = acquire(multi_volume_instance, raise_on_failure=False)
    assert result.ok, result.failed
    assert aws_sandbox.lost == ["CreateSnapshots"]
    snapshots = aws_sandbox.snapshots_for_case(case.case_id)
    assert len(snapshots) == 4  # the lost send's snapshots were waited for, not made again
    assert sorted(result.results["snapshot.create"]["snapshots"].values()) == snapshots
    lookups = [
        call["operation"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] in {"CreateSnapshots", "DescribeSnapshots"}
    ]
    assert lookups.count("CreateSnapshots") == 50  # 49 throttled, 1 lost, none sent again


def test_a_security_group_made_a_moment_ago_is_captured_once_ec2_lists_it(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """An instance moved into a group made a moment ago (by its owner or an attacker): EC2 answers
    InvalidGroup.NotFound for it a while (eventual consistency); the capture looks again instead of failing."""
    iid = aws_incident.extra["instance_id"]
    ec2 = aws_sandbox.client("ec2")
    vpc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="just-made", Description="new", VpcId=vpc)["GroupId"]
    ec2.modify_instance_attribute(InstanceId=iid, Groups=[group])
    aws_sandbox.describe_lag_seconds = 5.0  # long enough that the capture always meets it
    case, result = acquire(iid, raise_on_failure=False)
    assert result.ok, result.failed
    lookups = [
        call["outcome"]
        for record in read_records(case.root / "custody.jsonl")
        for call in record["api_calls"]
        if call["operation"] == "DescribeSecurityGroups"
    ]
    assert lookups[0] == "InvalidGroup.NotFound", lookups
    assert lookups[-1] == "ok", lookups


def test_the_copy_and_the_share_wait_while_ec2_does_not_know_a_snapshot_describe_already_shows(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, acquire: Acquire
):
    """EC2 promises no order between its APIs: a snapshot DescribeSnapshots lists as completed can still be unknown
    to CopySnapshot and ModifySnapshotAttribute (InvalidSnapshot.NotFound). Each is sent again with a bounded
    backoff, every refusal in custody, instead of failing the acquisition."""
    # CopySnapshot and the share of the copy: longer than the snapshot step, the copy and their waits take under load
    aws_sandbox.operation_lag_seconds = dict.fromkeys(["CopySnapshot", "ModifySnapshotAttribute"], 5.0)
    key = aws_incident.encryption_key
    case, result = acquire(aws_incident.extra["instance_id"], forensic_account=FORENSIC_ACCOUNT, encryption_key=key)
    assert result.ok, result.failed
    copies = api_outcomes(case, "CopySnapshot")
    assert copies[0] == "InvalidSnapshot.NotFound", copies
    assert copies[-1] == "ok", copies
    shares = api_outcomes(case, "ModifySnapshotAttribute")  # the copy made a moment ago is shared once EC2 knows it
    assert "InvalidSnapshot.NotFound" in shares, shares
    assert shares.count("ok") == len(result.results["share.snapshots"]["shared"]), shares
