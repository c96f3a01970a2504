"""An incident in a member account handled from a security account: evidence ends owned by the forensic account."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.aws import ACCOUNT, FORENSIC_ACCOUNT, AwsSandbox, calls_of_forensic_acquisition
from moto_fixtures.aws_accounts import SECURITY_ACCOUNT, account_session, create_trusted_role
from moto_fixtures.sandbox import PlantedIncident

runner = CliRunner()
EXTERNAL_ID = "IR-42-external"
BUCKET = "ir-evidence-locked"


def _env(session: Any) -> dict[str, str]:
    creds = session.get_credentials().get_frozen_credentials()
    return {
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_SESSION_TOKEN": creds.token,
        "COLUMNS": "250",
    }


@pytest.fixture
def accounts(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident) -> dict[str, Any]:
    """Member role (with an external id), forensic role, forensic key and Object Lock bucket; security creds."""
    member_role = create_trusted_role(aws_sandbox.session, "cloudir-responder", SECURITY_ACCOUNT, EXTERNAL_ID)
    forensic = account_session(FORENSIC_ACCOUNT, aws_sandbox.region)
    forensic_role = create_trusted_role(forensic, "cloudir-forensic", SECURITY_ACCOUNT, None)
    forensic_key = forensic.client("kms").create_key(Description="evidence")["KeyMetadata"]["Arn"]
    forensic.client("s3").create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    return {
        "member_role": member_role,
        "forensic_role": forensic_role,
        "forensic_key": forensic_key,
        "forensic": forensic,
        "env": _env(account_session(SECURITY_ACCOUNT, aws_sandbox.region)),
    }


def _acquire_args(incident: PlantedIncident, accounts: dict[str, Any], *extra: str) -> list[str]:
    return [
        "acquire",
        "aws",
        "--target",
        incident.extra["instance_id"],
        "--region",
        "us-east-1",
        "--role-arn",
        accounts["member_role"],
        "--kms-key",
        incident.encryption_key or "",
        "--forensic-role-arn",
        accounts["forensic_role"],
        "--forensic-kms-key",
        accounts["forensic_key"],
        *extra,
    ]


def test_forensic_account_owns_the_evidence_after_the_victim_side_is_deleted(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, accounts: dict[str, Any], tmp_path: Path
):
    case = tmp_path / "IR-42"
    args = _acquire_args(aws_incident, accounts, "--external-id", EXTERNAL_ID)
    plan = runner.invoke(app, [*args, "--dry-run"], env=accounts["env"])
    assert plan.exit_code == 0, plan.output
    assert "kms:RevokeGrant" in plan.output
    assert f"owned by {FORENSIC_ACCOUNT}: account {ACCOUNT} cannot delete them" in plan.output

    result = runner.invoke(app, [*args, "--case", str(case), "--evidence-bucket", BUCKET], env=accounts["env"])
    assert result.exit_code == 0, result.output
    records = read_records(case / "custody.jsonl")
    assumed = {r["details"]["purpose"]: r for r in records if r["action"] == "identity.assume-role"}
    assert assumed["target"]["target"] == accounts["member_role"]
    assert assumed["target"]["details"]["assumed_arn"].startswith(
        f"arn:aws:sts::{ACCOUNT}:assumed-role/cloudir-responder/cloudir-"
    )
    assert assumed["forensic"]["details"]["assumed_arn"].startswith(
        f"arn:aws:sts::{FORENSIC_ACCOUNT}:assumed-role/cloudir-forensic/"
    )
    assert all(c["operation"] == "AssumeRole" for r in assumed.values() for c in r["api_calls"])

    steps = {r["details"]["step"]: r["details"]["result"] for r in records if r["action"] == "acquire.acquire"}
    owned = steps["own.copy"]["owned"]
    assert len(owned) == len(aws_incident.extra["volumes"])
    victim_ec2, victim_kms = aws_sandbox.client("ec2"), aws_sandbox.client("kms")
    for shared in owned:  # the share and the temporary grant are gone
        attribute = victim_ec2.describe_snapshot_attribute(SnapshotId=shared, Attribute="createVolumePermission")
        assert attribute["CreateVolumePermissions"] == []
    grants = victim_kms.list_grants(KeyId=aws_incident.encryption_key)["Grants"]
    assert not [g for g in grants if FORENSIC_ACCOUNT in g["GranteePrincipal"]]

    # the attacker (or a cleanup job) deletes every snapshot of the case in the victim account
    case_id = json.loads((case / "case.json").read_text())["case_id"]
    ours = [{"Name": "tag:cloudir:case-id", "Values": [case_id]}]
    deleted = victim_ec2.describe_snapshots(OwnerIds=["self"], Filters=ours)["Snapshots"]
    assert set(owned) <= {s["SnapshotId"] for s in deleted}
    for snapshot in deleted:
        victim_ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"])
    forensic_ec2 = accounts["forensic"].client("ec2")
    kept = forensic_ec2.describe_snapshots(SnapshotIds=sorted(owned.values()))["Snapshots"]
    assert {s["OwnerId"] for s in kept} == {FORENSIC_ACCOUNT}
    assert {s["KmsKeyId"] for s in kept} == {accounts["forensic_key"]}
    blocks = [
        block
        for snapshot in kept
        for block in accounts["forensic"]
        .client("ebs")
        .list_snapshot_blocks(SnapshotId=snapshot["SnapshotId"])["Blocks"]
    ]
    assert {b["BlockIndex"] for b in blocks} >= {0, 7, 2048}  # the disks' content, readable by the forensic side

    # the artifacts sit in the forensic account's Object Lock bucket, out of the victim account's reach
    s3 = accounts["forensic"].client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{case_id}/")["Contents"]]
    assert any(k.endswith("instance.json") for k in keys)
    assert s3.head_object(Bucket=BUCKET, Key=keys[0])["ObjectLockMode"] == "COMPLIANCE"
    assert runner.invoke(app, ["verify", str(case)]).exit_code == 0


def test_a_wrong_external_id_is_refused_in_one_line_and_changes_nothing(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, accounts: dict[str, Any], tmp_path: Path
):
    before = aws_sandbox.state()
    args = _acquire_args(aws_incident, accounts, "--external-id", "guessed")
    result = runner.invoke(app, [*args, "--case", str(tmp_path / "x")], env=accounts["env"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "sts:AssumeRole" in result.output
    assert "Traceback" not in result.output
    assert aws_sandbox.state() == before


def test_the_plan_says_a_shared_snapshot_stays_deletable_without_a_forensic_role(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident
):
    args = ["acquire", "aws", "--target", aws_incident.extra["instance_id"], "--region", "us-east-1"]
    key = ["--kms-key", aws_incident.encryption_key or ""]
    shared = runner.invoke(app, [*args, *key, "--forensic-account", FORENSIC_ACCOUNT, "--dry-run"])
    assert shared.exit_code == 0, shared.output
    assert f"owned by {ACCOUNT}, which can still delete them" in " ".join(shared.output.split())
    local = runner.invoke(app, [*args, "--dry-run"])
    assert f"snapshots stay in account {ACCOUNT}" in " ".join(local.output.split())


def test_a_finding_from_a_member_account_is_routed_through_its_configured_role(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    create_trusted_role(aws_sandbox.session, "ir-member-responder", SECURITY_ACCOUNT, EXTERNAL_ID)
    forensic = account_session(FORENSIC_ACCOUNT, aws_sandbox.region)
    create_trusted_role(forensic, "ir-forensic", SECURITY_ACCOUNT, None)
    forensic_key = forensic.client("kms").create_key(Description="evidence")["KeyMetadata"]["Arn"]
    config = tmp_path / "config.toml"
    config.write_text(
        f'[forensic]\naws = "{FORENSIC_ACCOUNT}"\n\n[roles.aws]\n'
        f'"{ACCOUNT}" = {{ role = "ir-member-responder", external_id = "{EXTERNAL_ID}" }}\n'  # its trust needs one
        f'"{FORENSIC_ACCOUNT}" = "arn:aws:iam::{FORENSIC_ACCOUNT}:role/ir-forensic"\n',
        encoding="utf-8",
    )
    env = _env(account_session(SECURITY_ACCOUNT, aws_sandbox.region)) | {"CLOUDIR_CONFIG": str(config)}
    case = tmp_path / "routed"
    args = ["respond", "--cloud", "aws", "--instance", aws_incident.extra["instance_id"], "--location", "us-east-1"]
    params = ["--param", f"encryption_key={aws_incident.encryption_key}", "--param", f"forensic_kms_key={forensic_key}"]
    result = runner.invoke(app, [*args, "--account", ACCOUNT, *params, "--case", str(case)], env=env)
    assert result.exit_code == 0, result.output
    records = read_records(case / "custody.jsonl")
    assumed = {r["target"] for r in records if r["action"] == "identity.assume-role"}
    assert assumed == {
        f"arn:aws:iam::{ACCOUNT}:role/ir-member-responder",
        f"arn:aws:iam::{FORENSIC_ACCOUNT}:role/ir-forensic",
    }
    owned = forensic.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert len(owned) == len(aws_incident.extra["volumes"])


def test_the_cli_routes_a_member_account_through_the_configured_role_and_external_id(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    create_trusted_role(aws_sandbox.session, "ir-member-responder", SECURITY_ACCOUNT, EXTERNAL_ID)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[roles.aws]\n"{ACCOUNT}" = {{ role = "ir-member-responder", external_id = "{EXTERNAL_ID}" }}\n',
        encoding="utf-8",
    )
    env = _env(account_session(SECURITY_ACCOUNT, aws_sandbox.region)) | {"CLOUDIR_CONFIG": str(config)}
    case = tmp_path / "cli-routed"
    target = ["--target", aws_incident.extra["instance_id"], "--region", "us-east-1"]
    unmapped = runner.invoke(app, ["acquire", "aws", *target, "--account", "999988887777", "--dry-run"], env=env)
    assert unmapped.exit_code == 2
    assert "maps account 999988887777 to no role" in unmapped.output
    args = ["acquire", "aws", *target, "--account", ACCOUNT, "--kms-key", aws_incident.encryption_key or ""]
    result = runner.invoke(app, [*args, "--case", str(case)], env=env)
    assert result.exit_code == 0, result.output
    assumed = {r["target"] for r in read_records(case / "custody.jsonl") if r["action"] == "identity.assume-role"}
    assert assumed == {f"arn:aws:iam::{ACCOUNT}:role/ir-member-responder"}


def test_per_volume_calls_go_at_once_so_the_critical_path_does_not_grow_with_the_volumes(
    aws_sandbox: AwsSandbox, tmp_path: Path
):
    """Tags, copies, shares, forensic copies and unshares of 4 volumes: each step's per-volume calls overlap."""
    volumes = 4
    figures = calls_of_forensic_acquisition(aws_sandbox, volumes, tmp_path / "case", latency=0.2)
    for step in ("snapshot.create", "copy.snapshots", "share.snapshots", "own.copy", "own.unshare"):
        calls, sequential = figures[step]
        assert calls >= volumes, (step, figures[step])
        assert sequential <= calls - volumes + 2, (step, figures[step])  # the volumes' calls count about once


def test_the_forensic_copy_waits_while_a_share_made_a_moment_ago_has_not_reached_its_account(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, accounts: dict[str, Any], tmp_path: Path
):
    """EC2 is eventually consistent across accounts too: right after the share, the forensic account's
    CopySnapshot of the shared snapshot is answered InvalidSnapshot.NotFound; the tool sends it again, each refusal
    in custody, instead of failing the acquisition after every victim-side step succeeded."""
    aws_sandbox.change_lag_seconds = 3.0  # longer than the steps between the share and the copy take under load
    case = tmp_path / "IR-43"
    args = _acquire_args(aws_incident, accounts, "--external-id", EXTERNAL_ID)
    result = runner.invoke(app, [*args, "--case", str(case)], env=accounts["env"])
    assert result.exit_code == 0, result.output
    records = read_records(case / "custody.jsonl")
    steps = {r["details"]["step"]: r for r in records if r["action"] == "acquire.acquire"}
    copies = [c["outcome"] for c in steps["own.copy"]["api_calls"] if c["operation"] == "CopySnapshot"]
    assert copies[0] == "InvalidSnapshot.NotFound", copies
    assert copies.count("ok") == len(aws_incident.extra["volumes"]), copies
    assert len(steps["own.copy"]["details"]["result"]["owned"]) == len(aws_incident.extra["volumes"])
