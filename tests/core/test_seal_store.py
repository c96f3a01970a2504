"""Write-once seal copies in S3 (Object Lock, COMPLIANCE): every command stores its seal; verify --remote compares."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import line_hash, read_records
from cloudir.seal import append_seal, make_seal
from cloudir.signing import load_signer
from moto_fixtures.aws import AwsSandbox

runner = CliRunner()
BUCKET = "forensic-seals"


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "300"})
    return result.exit_code, result.output


@pytest.fixture
def store(aws_sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch) -> AwsSandbox:
    """An Object Lock bucket in the sandbox, configured as the seal store."""
    aws_sandbox.client("s3").create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", f"s3://{BUCKET}/cases")
    return aws_sandbox


def _stored(sandbox: AwsSandbox) -> list[dict]:
    return sandbox.client("s3").list_object_versions(Bucket=BUCKET, Prefix="cases/").get("Versions", [])


def test_every_command_stores_its_seal_write_once_and_verify_remote_compares(store: AwsSandbox, tmp_path: Path):
    with Case.create(tmp_path / "case", case_id="cir-anchored") as case:
        case.write_json("artifacts/aws/instance.json", {"InstanceId": "i-1"})
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 0, output
    assert f"stored write-once in s3://{BUCKET}/cases" in output
    versions = _stored(store)
    assert len(versions) == 2  # case creation, then the report
    s3 = store.client("s3")
    stored_records = [r for r in read_records(tmp_path / "case" / "custody.jsonl") if r["action"] == "seal.store"]
    assert [r["outcome"] for r in stored_records] == ["ok", "ok"]
    assert {c["operation"] for c in stored_records[-1]["api_calls"]} >= {"GetObjectLockConfiguration", "PutObject"}
    for version in versions:
        got = s3.get_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])
        assert got["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])
    local = (tmp_path / "case" / "seals.jsonl").read_bytes().splitlines()
    last = stored_records[-1]["details"]
    assert s3.get_object(Bucket=BUCKET, Key="cases/" + last["object"])["Body"].read() == local[last["seal_records"] - 1]
    code, output = _cli("verify", str(tmp_path / "case"))
    assert code == 0, output
    assert "add --remote to compare" in output
    code, output = _cli("verify", str(tmp_path / "case"), "--remote")
    assert code == 0, output
    assert "2 stored seal(s)" in output


def test_local_rollback_resealed_with_the_key_is_caught_by_the_stored_seal(store: AwsSandbox, tmp_path: Path):
    with Case.create(tmp_path / "case", case_id="cir-rollback") as case:
        case.write_json("artifacts/aws/instance.json", {"InstanceId": "i-1"})
    root = tmp_path / "case"
    keep = len(root.joinpath("custody.jsonl").read_bytes().splitlines())
    assert _cli("report", str(root))[0] == 0
    # Someone holding the signing key drops the report's records, deletes the report and re-seals the shorter chain.
    lines = root.joinpath("custody.jsonl").read_bytes().splitlines()[:keep]
    root.joinpath("custody.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    root.joinpath("seals.jsonl").write_bytes(b"")
    (root / "reports" / "report.html").unlink()
    signer = load_signer()
    append_seal(root, make_seal(signer, case_id="cir-rollback", records=keep, head=line_hash(lines[-1]), time="now"))
    assert _cli("verify", str(root))[0] == 0  # offline, the rewritten case is self-consistent
    code, output = _cli("verify", str(root), "--remote")
    assert code == 1
    assert f"but the local chain holds {keep}: records were removed from the local chain" in output


def test_bucket_without_object_lock_is_refused_and_recorded(aws_sandbox: AwsSandbox, tmp_path, monkeypatch):
    with Case.create(tmp_path / "case"):
        pass
    aws_sandbox.client("s3").create_bucket(Bucket="plain-seals")
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", "s3://plain-seals")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2, output
    lines = output.strip().splitlines()
    assert lines[0].startswith("custody head ")
    assert lines[1].startswith("error: s3://plain-seals has no Object Lock")
    assert len(lines) == 2, output
    failed = read_records(tmp_path / "case" / "custody.jsonl")[-1]
    assert (failed["action"], failed["outcome"]) == ("seal.store", "failed")
    assert _cli("verify", str(tmp_path / "case"))[0] == 0  # the failure is itself recorded and sealed locally


def test_unsupported_store_names_what_is_supported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with Case.create(tmp_path / "case"):
        pass
    monkeypatch.setenv("CLOUDIR_SEAL_STORE", "ftp://example/seals")
    code, output = _cli("report", str(tmp_path / "case"))
    assert code == 2
    assert "seal store ftp://example/seals is not supported" in output
    assert "s3://BUCKET" in output
