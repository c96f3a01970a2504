"""An S3 evidence bucket mirroring every artifact, with its SHA-256 checksum and Object Lock retention."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cloudir.case import Case
from cloudir.custody import read_records
from cloudir.errors import CloudirError
from providers.aws.session import AwsClients, aws_errors

RETENTION_MODES = ("COMPLIANCE", "GOVERNANCE")


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
        """Upload one artifact with its SHA-256 (verified by S3) and, with Object Lock, a retention date."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": f"{self.prefix}/{rel_path}",
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode(),
            "Metadata": {"sha256": sha256},
        }
        if self.object_lock:
            params["ObjectLockMode"] = self.retention_mode
            params["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.retain_days)
        with aws_errors(f"upload {rel_path} to s3://{self.bucket}"), local_path.open("rb") as body:
            self._s3().put_object(Body=body, **params)


def attach_evidence_bucket(
    clients: AwsClients, case: Case, bucket: str | None, *, retention_mode: str, retain_days: int
) -> S3EvidenceMirror | None:
    """Mirror the case's artifacts to ``bucket`` (or the bucket an earlier run chose); uploads what exists already."""
    state = case.load_state()
    chosen = bucket or state.get("aws_evidence_bucket")
    if not chosen:
        return None
    with case.action("evidence-bucket.attach", target=f"s3://{chosen}/{case.case_id}") as act:
        mirror = S3EvidenceMirror(clients, chosen, case.case_id, retention_mode=retention_mode, retain_days=retain_days)
        act.details |= {"object_lock": mirror.object_lock, "mode": retention_mode, "retain_days": retain_days}
        if state.get("aws_evidence_bucket") != chosen:
            recorded = {a["path"]: a["sha256"] for r in read_records(case.custody.path) for a in r["artifacts"]}
            for rel_path, sha256 in sorted(recorded.items()):
                mirror.upload(case.root / rel_path, rel_path, sha256)
            act.details["uploaded_existing"] = sorted(recorded)
    case.mirrors.append(mirror)
    case.save_state({**case.load_state(), "aws_evidence_bucket": chosen})
    return mirror
