"""Seal copies in an S3 bucket with Object Lock: COMPLIANCE retention, never overwritten (cloudir.sealstore)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cloudir.errors import CloudirError
from cloudir.sealstore import WRITE_ONCE_MODE, StoredCopy
from cloudir.textsafe import visible
from providers.aws.session import AwsClients, aws_errors

if TYPE_CHECKING:
    from cloudir.case import Case


class S3SealStore:
    """``s3://bucket/prefix``: each seal one object version under COMPLIANCE Object Lock, created only if absent."""

    write_once_mode = WRITE_ONCE_MODE

    def __init__(self, url: str, *, retain_days: int, case: Case | None = None) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise CloudirError(f"seal store {visible(url)} names no bucket", hint="use s3://BUCKET[/PREFIX]")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retain_days = retain_days
        self.clients = AwsClients()
        self.clients.bind(case)

    def _s3(self) -> Any:
        return self.clients.client("s3")

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store the seal under COMPLIANCE retention; refused when the bucket has no Object Lock or it exists."""
        key = self.prefix + name
        with aws_errors(f"read the Object Lock configuration of s3://{self.bucket}"):
            try:
                config = self._s3().get_object_lock_configuration(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                    raise
                config = {}
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise CloudirError(
                f"s3://{self.bucket} has no Object Lock: a seal stored there could be deleted or replaced",
                hint="create the seal bucket with Object Lock enabled (aws s3api create-bucket "
                "--object-lock-enabled-for-bucket)",
            )
        until = datetime.now(UTC) + timedelta(days=self.retain_days)
        with aws_errors(f"store the seal as s3://{self.bucket}/{key}"):
            response = self._s3().put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                ObjectLockMode=WRITE_ONCE_MODE,
                ObjectLockRetainUntilDate=until,
                IfNoneMatch="*",
            )
        return {
            "version": response.get("VersionId"),
            "mode": WRITE_ONCE_MODE,
            "retain_until": until.isoformat(),
            "location": f"s3://{self.bucket}/{key}",
        }

    def copies(self, prefix: str) -> Iterator[StoredCopy]:
        """Every version of every object under the case's seal prefix, with its retention."""
        s3 = self._s3()
        with aws_errors(f"list the stored seals in s3://{self.bucket}/{self.prefix}{prefix}"):
            pages = s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                for version in page.get("Versions", []):
                    got = s3.get_object(Bucket=self.bucket, Key=version["Key"], VersionId=version["VersionId"])
                    yield StoredCopy(
                        name=version["Key"].removeprefix(self.prefix),
                        version=version["VersionId"],
                        data=got["Body"].read(),
                        mode=got.get("ObjectLockMode"),
                        retain_until=got.get("ObjectLockRetainUntilDate"),
                    )
