"""An S3 evidence bucket mirroring every artifact, with its SHA-256 checksum and Object Lock retention."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from cloudir.case import Case
from cloudir.errors import CloudirError
from cloudir.hashing import sha256_file
from providers.aws.session import AwsClients, aws_errors

RETENTION_MODES = ("COMPLIANCE", "GOVERNANCE")
PART_SIZE = 64 * 1024 * 1024


class S3EvidenceMirror:
    """Uploads each finished artifact to ``s3://bucket/<case id>/<path>`` (implements cloudir.case.ArtifactMirror).

    S3 checks the SHA-256 sent with each object and refuses a corrupted upload. When the bucket has
    Object Lock enabled, each object gets a retention (COMPLIANCE by default) for ``retain_days``.
    """

    def __init__(
        self,
        clients: AwsClients,
        bucket: str,
        case_id: str,
        *,
        retention_mode: str = "COMPLIANCE",
        retain_days: int = 365,
    ) -> None:
        if retention_mode not in RETENTION_MODES:
            raise CloudirError(f"unknown Object Lock mode {retention_mode!r}", hint="use COMPLIANCE or GOVERNANCE")
        self.clients = clients
        self.bucket = bucket
        self.prefix = case_id
        self.retention_mode = retention_mode
        self.retain_days = retain_days
        self.part_size = PART_SIZE
        self.object_lock = self._object_lock_enabled()

    def _s3(self) -> Any:
        return self.clients.client("s3")

    def _object_lock_enabled(self) -> bool:
        with aws_errors(f"read the Object Lock configuration of s3://{self.bucket}"):
            try:
                config = self._s3().get_object_lock_configuration(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ObjectLockConfigurationNotFoundError":
                    return False
                raise
        return bool(config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def upload(self, local_path: Path, rel_path: str, sha256: str) -> None:
        """Upload one artifact with its SHA-256 (verified by S3) and, with Object Lock, a retention date.

        Files larger than ``part_size`` (disk images) go up in parts, each with its own SHA-256 checksum;
        the whole file's SHA-256 is kept in the object's ``sha256`` metadata either way.
        """
        key = f"{self.prefix}/{rel_path}"
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Metadata": {"sha256": sha256}}
        if self.object_lock:
            params["ObjectLockMode"] = self.retention_mode
            params["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.retain_days)
        with aws_errors(f"upload {rel_path} to s3://{self.bucket}"), local_path.open("rb") as body:
            if local_path.stat().st_size <= self.part_size:
                self._s3().put_object(
                    Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(bytes.fromhex(sha256)), **params
                )
            else:
                self._upload_parts(body, params)

    def upload_custody(self, case: Case) -> str:
        """Upload a checkpoint copy of custody.jsonl named after its length and head hash; returns the key."""
        rel_path = f"custody/custody-{case.custody.length:06d}-{case.custody.head[:16]}.jsonl"
        self.upload(case.custody.path, rel_path, sha256_file(case.custody.path)[0])
        return f"{self.prefix}/{rel_path}"

    def _upload_parts(self, body: BinaryIO, params: dict[str, Any]) -> None:
        s3, target = self._s3(), {"Bucket": params["Bucket"], "Key": params["Key"]}
        upload_id = s3.create_multipart_upload(ChecksumAlgorithm="SHA256", **params)["UploadId"]
        parts = []
        try:
            for number, chunk in enumerate(iter(lambda: body.read(self.part_size), b""), start=1):
                checksum = _b64(hashlib.sha256(chunk).digest())
                etag = s3.upload_part(
                    **target,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )["ETag"]
                parts.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
            s3.complete_multipart_upload(**target, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            s3.abort_multipart_upload(**target, UploadId=upload_id)
            raise
        if "ObjectLockMode" in params and "ObjectLockMode" not in s3.head_object(**target):
            retention = {"Mode": params["ObjectLockMode"], "RetainUntilDate": params["ObjectLockRetainUntilDate"]}
            s3.put_object_retention(**target, Retention=retention)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def attach_evidence_bucket(
    clients: AwsClients, case: Case, bucket: str | None, *, retention_mode: str | None, retain_days: int | None
) -> S3EvidenceMirror | None:
    """Mirror the case's artifacts to ``bucket`` (or the bucket an earlier run chose); uploads what exists already.

    Retention settings left as None reuse the earlier run's (default COMPLIANCE, 365 days).
    """
    state = case.load_state()
    earlier: dict[str, Any] = state.get("aws_evidence_bucket") or {}
    chosen = bucket or earlier.get("bucket")
    if not chosen:
        return None
    mode = retention_mode or earlier.get("mode") or "COMPLIANCE"
    days = retain_days or earlier.get("days") or 365
    with case.action("evidence-bucket.attach", target=f"s3://{chosen}/{case.case_id}") as act:
        mirror = S3EvidenceMirror(clients, chosen, case.case_id, retention_mode=mode, retain_days=days)
        act.details |= {"object_lock": mirror.object_lock, "mode": mode, "retain_days": days}
        if earlier.get("bucket") != chosen:
            recorded = case.recorded_artifacts()
            for rel_path, sha256 in sorted(recorded.items()):
                mirror.upload(case.root / rel_path, rel_path, sha256)
            act.details["uploaded_existing"] = sorted(recorded)
    case.mirrors.append(mirror)
    case.save_state({**case.load_state(), "aws_evidence_bucket": {"bucket": chosen, "mode": mode, "days": days}})
    return mirror
