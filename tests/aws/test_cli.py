"""`cloudir acquire aws` / `cloudir contain aws` as a responder runs them: exit codes and one-line errors."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.custody import read_records
from moto_fixtures.aws import FORENSIC_ACCOUNT, AwsSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.aws.calls import API_CALLS

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def _one_line_error(output: str) -> str:
    """The one error line, after the sealed head of the case when the command had opened one."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert "Traceback" not in output
    if len(lines) == 2:
        assert lines[0].startswith("custody head "), output
        lines = lines[1:]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


def test_dry_run_prints_the_plan_and_changes_nothing(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    before = aws_sandbox.state()
    iid = aws_incident.extra["instance_id"]
    result = _run(
        "acquire",
        "aws",
        "--ip",
        aws_incident.alternate_targets[0].value,
        "--region",
        "us-east-1",
        "--forensic-account",
        FORENSIC_ACCOUNT,
        "--kms-key",
        aws_incident.encryption_key or "",
        "--case",
        str(tmp_path / "c"),
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    for text in ("ec2:CreateSnapshots", "ec2:CopySnapshot", "ec2:ModifySnapshotAttribute", iid, "nothing was changed"):
        assert text in result.output.replace("\n", " ") or text in result.output
    contain = _run("contain", "aws", "--instance", iid, "--region", "us-east-1", "--dry-run")
    assert contain.exit_code == 0
    assert "ec2:ModifyNetworkInterface" in contain.output
    assert aws_sandbox.state() == before
    assert not (tmp_path / "c").exists()


def test_dry_run_shows_the_raw_image_running_alongside_the_copies_and_shares(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    iid = aws_incident.extra["instance_id"]
    args = ["--instance", iid, "--region", "us-east-1", "--forensic-account", FORENSIC_ACCOUNT, "--raw-image"]
    args += ["--kms-key", aws_incident.encryption_key or "", "--case", str(tmp_path / "c"), "--dry-run"]
    result = _run("acquire", "aws", *args, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    steps = {row["step"]: (row["title"], row["alongside"]) for row in rows}
    (image,) = [number for number, (title, _) in steps.items() if "raw image" in title]
    (wait,) = [number for number, (title, _) in steps.items() if title.startswith("Wait for the snapshots")]
    (share,) = [number for number, (title, _) in steps.items() if title.startswith("Share the snapshots")]
    assert image < wait < share
    assert steps[image][1] == ",".join(str(number) for number in range(wait, share + 1))
    assert steps[wait][1] == steps[share][1] == str(image)
    assert steps[1][1] == ""  # the preserve steps run one after another


def test_acquire_contain_and_verify_end_to_end(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path):
    iid, case = aws_incident.extra["instance_id"], str(tmp_path / "case")
    refused = _run("contain", "aws", "--instance", iid, "--region", "us-east-1", "--case", case)
    assert refused.exit_code == 2
    assert "acquire" in _one_line_error(refused.output)
    acquired = _run(
        "acquire",
        "aws",
        "--instance",
        iid,
        "--region",
        "us-east-1",
        "--case",
        case,
        "--forensic-account",
        FORENSIC_ACCOUNT,
        "--kms-key",
        aws_incident.encryption_key or "",
    )
    assert acquired.exit_code == 0, acquired.output
    again = _run("acquire", "aws", "--instance", iid, "--region", "us-east-1", "--case", case)
    assert again.exit_code == 2
    assert "--resume" in _one_line_error(again.output)
    contained = _run("contain", "aws", "--instance", iid, "--region", "us-east-1", "--case", case)
    assert contained.exit_code == 0, contained.output
    assert aws_sandbox.is_isolated(aws_incident)
    assert aws_sandbox.is_preserved(aws_incident)
    repeat = ["contain", "aws", "--target", iid, "--region", "us-east-1", "--case", case]
    refused_repeat = _run(*repeat)
    assert refused_repeat.exit_code == 2
    assert "(completed)" in _one_line_error(refused_repeat.output)
    rechecked = _run(*repeat, "--resume")
    assert rechecked.exit_code == 0, rechecked.output
    assert "resumed" in rechecked.output
    assert "   done" not in rechecked.output
    verified = _run("verify", case)
    assert verified.exit_code == 0
    assert "OK" in verified.output


def test_failure_exits_3_and_resume_finishes(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path):
    iid, case = aws_incident.extra["instance_id"], str(tmp_path / "case")
    with aws_sandbox.fail_next("CreateSnapshots", "UnauthorizedOperation"):  # not transient: the tool does not resend
        failed = _run("acquire", "aws", "--instance", iid, "--region", "us-east-1", "--case", case)
    assert failed.exit_code == 3
    assert "snapshot.create failed" in failed.output
    assert "--resume" in failed.output
    blocked = _run("contain", "aws", "--instance", iid, "--region", "us-east-1", "--case", case)
    assert blocked.exit_code == 2
    resumed = _run("acquire", "aws", "--instance", iid, "--region", "us-east-1", "--case", case, "--resume")
    assert resumed.exit_code == 0, resumed.output
    case_id = (Path(case) / "case.json").read_text().split('"case_id": "')[1].split('"')[0]
    assert len(aws_sandbox.snapshots_for_case(case_id)) == 2


def test_contain_with_force_skips_the_precondition(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    result = _run(
        "contain", "aws", "--access-key", aws_incident.access_key or "", "--case", str(tmp_path / "k"), "--force"
    )
    assert result.exit_code == 0, result.output
    keys = aws_sandbox.client("iam").list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"]
    assert {k["Status"] for k in keys} == {"Inactive"}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--instance", "i-0123456789abcdef0"], None, "no EC2 instance matches i-0123456789abcdef0"),
        (["--instance", "i-1", "--ip", "10.0.0.1"], None, "exactly one target"),
        (["--instance", "{iid}"], "UnauthorizedOperation", "access denied calling DescribeInstances"),
        (
            [
                "--instance",
                "{iid}",
                "--kms-key",
                "arn:aws:kms:us-east-1:123456789012:key/nope",
                "--forensic-account",
                FORENSIC_ACCOUNT,
            ],
            None,
            "kms:DescribeKey",
        ),
    ],
)
def test_one_line_errors(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path, args, code, needle):
    args = [a.replace("{iid}", aws_incident.extra["instance_id"]) for a in args]
    command = ["acquire", "aws", *args, "--region", "us-east-1", "--case", str(tmp_path / "c"), "--dry-run"]
    if code:
        with aws_sandbox.fail_next("DescribeInstances", code):
            result = _run(*command)
    else:
        result = _run(*command)
    assert result.exit_code == 2
    assert needle in _one_line_error(result.output)


def test_missing_credentials_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    case = str(tmp_path / "case")
    result = _run("acquire", "aws", "--target", "i-0123456789abcdef0", "--region", "us-east-1", "--case", case)
    assert result.exit_code == 2
    assert "no AWS credentials" in _one_line_error(result.output)


def test_evidence_bucket_mirrors_artifacts_and_custody(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    s3 = aws_sandbox.client("s3")
    s3.create_bucket(Bucket="ir-evidence", ObjectLockEnabledForBucket=True)
    iid, case = aws_incident.extra["instance_id"], tmp_path / "case"
    acquired = _run(
        "acquire",
        "aws",
        "--instance",
        iid,
        "--region",
        "us-east-1",
        "--case",
        str(case),
        "--evidence-bucket",
        "ir-evidence",
        "--retention-mode",
        "GOVERNANCE",
        "--retain-days",
        "7",
    )
    assert acquired.exit_code == 0, acquired.output
    contained = _run("contain", "aws", "--instance", iid, "--region", "us-east-1", "--case", str(case))
    assert contained.exit_code == 0, contained.output
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ir-evidence")["Contents"]]
    case_id = keys[0].split("/")[0]
    assert f"{case_id}/case.json" in keys
    assert f"{case_id}/artifacts/aws/{iid}/instance.json" in keys
    checkpoints = [k for k in keys if "/custody/custody-" in k]
    assert len(checkpoints) == 2  # one after acquire, one after contain
    head = s3.head_object(Bucket="ir-evidence", Key=checkpoints[-1])
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_every_call_made_is_in_the_permission_table(
    aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path
):
    aws_sandbox.client("s3").create_bucket(Bucket="ir-evidence", ObjectLockEnabledForBucket=True)
    west = aws_sandbox.client("kms", "us-west-2").describe_key(KeyId="alias/cloudir-forensics")["KeyMetadata"]["Arn"]
    iid, case = aws_incident.extra["instance_id"], tmp_path / "case"
    acquired = _run(
        "acquire",
        "aws",
        "--instance",
        iid,
        "--region",
        "us-east-1",
        "--case",
        str(case),
        "--asg-mode",
        "standby",
        "--forensic-account",
        FORENSIC_ACCOUNT,
        "--forensic-region",
        "us-west-2",
        "--kms-key",
        west,
        "--evidence-bucket",
        "ir-evidence",
    )
    assert acquired.exit_code == 0, acquired.output
    assert _run("contain", "aws", "--instance", iid, "--region", "us-east-1", "--case", str(case)).exit_code == 0
    made = {(c["service"], c["operation"]) for r in read_records(case / "custody.jsonl") for c in r["api_calls"]}
    assert ("ec2", "CopySnapshot") in made
    assert ("s3", "PutObject") in made
    assert made <= set(API_CALLS)
    permissions = set(aws_sandbox.provider().required_permissions())
    assert {action for call in made for action in API_CALLS[call]} <= permissions


def test_key_compromise_acquire_then_contain(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident, tmp_path: Path):
    key, case = aws_incident.access_key or "", str(tmp_path / "key")
    acquired = _run("acquire", "aws", "--access-key", key, "--case", case)
    assert acquired.exit_code == 0, acquired.output
    assert (Path(case) / "artifacts/aws/iam-user/ci-deployer/user.json").is_file()
    contained = _run("contain", "aws", "--access-key", key, "--case", case)
    assert contained.exit_code == 0, contained.output
    iam = aws_sandbox.client("iam")
    assert {k["Status"] for k in iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"]} == {"Inactive"}
    assert _run("verify", case).exit_code == 0
