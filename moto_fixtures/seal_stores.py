"""Sandboxed write-once seal stores for the demo: the store a ``[seals] store`` URL names, provisioned locally.

``s3://`` gets a moto bucket with Object Lock, ``azblob://`` the fake Blob service with a container that has
version-level immutability, ``gs://`` the fake Cloud Storage with a bucket whose retention policy is locked;
the environment points cloudir's store clients at them while the context is open. Nothing outlives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from unittest import mock

RETENTION_SECONDS = 365 * 86400  # cloudir's default retain_days


@contextmanager
def seal_store_sandbox(url: str | None) -> Iterator[None]:
    """Provision the store ``url`` names in a sandbox (nothing when None or not a scheme cloudir serves)."""
    scheme, _, rest = (url or "").partition("://")
    parts = rest.split("/")
    with ExitStack() as stack:
        if scheme == "s3" and parts[0]:
            import boto3
            from moto import mock_aws

            stack.enter_context(mock_aws())
            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=parts[0], ObjectLockEnabledForBucket=True)
        elif scheme == "azblob" and len(parts) > 1 and parts[1]:
            from moto_fixtures.blob_server import FakeBlobService

            blob = stack.enter_context(FakeBlobService())
            blob.add_container(parts[0], parts[1], version_level_worm=True)
            environment = {
                "CLOUDIR_AZURE_BLOB_ENDPOINT": blob.base_url + "/{account}",
                "AZURE_STORAGE_ACCESS_TOKEN": "sandbox-storage-token",
                "REQUESTS_CA_BUNDLE": blob.ca_file,
            }
            stack.enter_context(mock.patch.dict("os.environ", environment))
        elif scheme == "gs" and parts[0]:
            from moto_fixtures.gcs_server import FakeGcs

            gcs = stack.enter_context(FakeGcs())
            gcs.add_bucket(parts[0], retention_seconds=RETENTION_SECONDS, locked=True)
            stack.enter_context(mock.patch.dict("os.environ", {"STORAGE_EMULATOR_HOST": gcs.host}))
        yield
