"""Seal copies as objects in a GCS bucket whose retention policy is locked: never deleted early (cloudir.sealstore).

``gs://BUCKET[/PREFIX]``, through google-cloud-storage with Application Default Credentials (``STORAGE_EMULATOR_HOST``
points it at a local emulator, without credentials). A locked retention policy cannot be removed or shortened,
and GCS refuses to delete or overwrite an object younger than its retention period.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from google.api_core.exceptions import GoogleAPIError, PreconditionFailed
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import storage  # type: ignore[attr-defined]

from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.sealstore import StoredCopy
from cloudir.textsafe import visible
from providers.gcp.session import credentials_found

if TYPE_CHECKING:
    from cloudir.case import Case

LOCKED = "locked-retention"  # what a copy reports while its bucket's locked retention holds it


def _operation(method: str, url: str) -> str:
    """The JSON API method name of a Cloud Storage request."""
    parts = urlsplit(url)
    path, query = parts.path, parts.query
    if path.startswith("/upload/"):
        return "objects.insert"
    if path.startswith("/download/") or "alt=media" in query:
        return "objects.get"
    if path.rstrip("/").endswith("/o"):
        return "objects.list"
    if "/o/" in path:
        return {"DELETE": "objects.delete"}.get(method, "objects.get")
    return "buckets.get"


class GcsSealStore:
    """``gs://bucket/prefix``: each seal one object created only if absent, held by the bucket's locked retention."""

    write_once_mode = LOCKED

    def __init__(self, url: str, *, retain_days: int, case: Case | None = None) -> None:
        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        if not bucket:
            raise CloudirError(f"seal store {visible(url)} names no bucket", hint="use gs://BUCKET[/PREFIX]")
        self.url = url
        self.retain_days = retain_days
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._case = case
        self._where = f"gs://{bucket}"
        if not os.environ.get("STORAGE_EMULATOR_HOST") and not credentials_found():
            raise CloudAccessError(
                f"no Google credentials for {self._where}",
                hint="run 'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS",
            )
        try:
            self._client = storage.Client()
        except GoogleAPIError as exc:
            raise CloudAccessError(f"cannot reach Cloud Storage for {self._where}: {exc}") from None
        except DefaultCredentialsError as exc:
            raise CloudAccessError(
                f"no Google credentials for {self._where}: {type(exc).__name__}",
                hint="run 'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS",
            ) from None
        self._client._http.hooks["response"].append(self._record)  # the client's own session
        self._bucket = self._client.bucket(bucket)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Record one Cloud Storage call into the case."""
        if self._case is None:
            return
        request = response.request
        status = response.status_code
        reason = None
        if status >= 400:
            try:
                reason = response.json()["error"]["errors"][0]["reason"]
            except (ValueError, KeyError, IndexError, TypeError):
                reason = None
        self._case.record_api_call(
            ApiCall(
                "storage",
                _operation(request.method or "GET", request.url or ""),
                None,
                response.headers.get("X-GUploader-UploadID"),
                "ok" if status < 400 else reason or f"HTTP {status}",
                http_status=status,
            )
        )

    def _locked(self) -> bool:
        try:
            self._bucket.reload()
        except (GoogleAPIError, requests.RequestException) as exc:
            raise CloudAccessError(f"cannot read the retention policy of {self._where}: {_message(exc)}") from None
        return bool(self._bucket.retention_policy_locked) and bool(self._bucket.retention_period)

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store the seal once; refused unless the bucket's locked retention lasts at least ``retain_days``."""
        hint = (
            f"set and lock a retention policy (gcloud storage buckets update {self._where} "
            f"--retention-period={self.retain_days}d, then --lock-retention-period)"
        )
        if not self._locked():
            raise CloudirError(
                f"{self._where} has no locked retention policy: a seal stored there could be deleted or replaced",
                hint=hint,
            )
        period = int(self._bucket.retention_period)
        if period < self.retain_days * 86400:
            raise CloudirError(
                f"{self._where} holds objects for {period // 86400} day(s) ({period} s), less than the "
                f"{self.retain_days} days seals must be kept (retain_days)",
                hint=f"lower [seals] retain_days, or use a bucket whose locked retention is longer; {hint}",
            )
        blob = self._bucket.blob(self.prefix + name)
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=0, checksum="crc32c")
        except PreconditionFailed:
            blob = self._stored_already(name, data)
        except (GoogleAPIError, requests.RequestException) as exc:
            raise CloudAccessError(f"cannot store the seal as {self._where}/{blob.name}: {_message(exc)}") from None
        until = blob.retention_expiration_time
        return {
            "version": str(blob.generation),
            "mode": LOCKED,
            "retain_until": until.isoformat() if until else None,
            "retention_period_seconds": self._bucket.retention_period,
            "location": f"{self._where}/{blob.name}",
        }

    def _stored_already(self, name: str, data: bytes) -> Any:
        """The object a refused create-once upload met: this seal when a lost answer's resend found its own write."""
        blob = self._bucket.blob(self.prefix + name)
        try:
            blob.reload()
            stored = blob.download_as_bytes(if_generation_match=blob.generation)
        except (GoogleAPIError, requests.RequestException) as exc:
            where = f"{self._where}/{blob.name}"
            raise CloudAccessError(f"cannot read the seal already at {where}: {_message(exc)}") from None
        if stored != data:
            raise CloudirError(
                f"{self._where}/{blob.name} already holds a different seal; the stored copy is kept as it is",
                hint="run cloudir verify --remote to compare the case with its stored seals",
            )
        return blob

    def copies(self, prefix: str) -> Iterator[StoredCopy]:
        """Every generation of every object under the case's seal prefix; held while the locked retention lasts."""
        locked = self._locked()
        try:
            for blob in self._client.list_blobs(self._bucket, prefix=self.prefix + prefix, versions=True):
                yield StoredCopy(
                    name=blob.name.removeprefix(self.prefix),
                    version=str(blob.generation),
                    data=blob.download_as_bytes(),
                    mode=LOCKED if locked and blob.retention_expiration_time else None,
                    retain_until=blob.retention_expiration_time,
                )
        except (GoogleAPIError, requests.RequestException) as exc:
            raise CloudAccessError(f"cannot read the stored seals in {self._where}: {_message(exc)}") from None


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0][:200]
