"""The S3 evidence bucket mirror: SHA-256 checksums and Object Lock retention."""

import base64
import hashlib

from cloudir.case import Case
from moto_fixtures.aws import AwsSandbox
from providers.aws.evidence_bucket import attach_evidence_bucket


def test_artifacts_land_in_an_object_lock_bucket_with_checksum_and_retention(aws_sandbox: AwsSandbox, tmp_path):
    s3 = aws_sandbox.client("s3")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    mirror = attach_evidence_bucket(provider.clients, case, "evidence", retention_mode="GOVERNANCE", retain_days=30)
    assert mirror is not None
    assert mirror.object_lock
    artifact = case.write_bytes("artifacts/aws/note.txt", b"evidence bytes")
    key = f"{case.case_id}/artifacts/aws/note.txt"
    head = s3.head_object(Bucket="evidence", Key=key, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(b"evidence bytes").digest()).decode()
    assert head["Metadata"]["sha256"] == artifact.sha256
    assert s3.head_object(Bucket="evidence", Key=f"{case.case_id}/case.json")  # existing artifacts were synced
    reopened = Case.open(case.root)
    assert attach_evidence_bucket(provider.clients, reopened, None, retention_mode="COMPLIANCE", retain_days=1)


def test_plain_bucket_gets_no_retention(aws_sandbox: AwsSandbox, tmp_path):
    s3 = aws_sandbox.client("s3")
    s3.create_bucket(Bucket="plain")
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    mirror = attach_evidence_bucket(provider.clients, case, "plain", retention_mode="COMPLIANCE", retain_days=1)
    assert mirror is not None
    assert not mirror.object_lock
    case.write_bytes("a.txt", b"x")
    assert "ObjectLockMode" not in s3.head_object(Bucket="plain", Key=f"{case.case_id}/a.txt")


def test_large_artifacts_go_up_in_checksummed_parts(aws_sandbox: AwsSandbox, tmp_path):
    s3 = aws_sandbox.client("s3")
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    case = Case.create(tmp_path / "c")
    provider = aws_sandbox.provider()
    provider.bind(case)
    mirror = attach_evidence_bucket(provider.clients, case, "evidence", retention_mode="COMPLIANCE", retain_days=1)
    assert mirror is not None
    mirror.part_size = 5 * 1024 * 1024
    data = bytes(range(256)) * (44 * 1024)  # 11 MiB: three parts
    artifact = case.write_bytes("images/aws/snap-1.raw", data)
    key = f"{case.case_id}/images/aws/snap-1.raw"
    head = s3.head_object(Bucket="evidence", Key=key)
    assert head["Metadata"]["sha256"] == artifact.sha256
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ContentLength"] == len(data)
    assert s3.get_object(Bucket="evidence", Key=key)["Body"].read() == data
    assert not s3.list_multipart_uploads(Bucket="evidence").get("Uploads")
