"""Seal copies as Azure blobs under a Locked version-level immutability policy, never overwritten (cloudir.sealstore).

``azblob://ACCOUNT/CONTAINER[/PREFIX]``; the endpoint is ``https://ACCOUNT.blob.core.windows.net`` unless
``CLOUDIR_AZURE_BLOB_ENDPOINT`` gives another account URL (``{account}`` is replaced by the account name).
The token is ``AZURE_STORAGE_ACCESS_TOKEN`` when set (e.g. ``az account get-access-token --resource
https://storage.azure.com``), else DefaultAzureCredential.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.blob import BlobImmutabilityPolicyMode, ContainerClient, ImmutabilityPolicy

from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.sealstore import StoredCopy
from cloudir.textsafe import visible
from providers.azure.session import RESPONDER_USER_AGENT, StaticTokenCredential

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineResponse

    from cloudir.case import Case

ENDPOINT_ENV = "CLOUDIR_AZURE_BLOB_ENDPOINT"
TOKEN_ENV = "AZURE_STORAGE_ACCESS_TOKEN"  # noqa: S105 - the name of a variable, not a secret
LOCKED = "locked"  # the policy mode the service reports for a policy no one can shorten or remove


def _operation(method: str, url: str) -> str:
    """The Blob service operation name of a request."""
    query = url.partition("?")[2]
    if "restype=container" in query:
        return "ListBlobs" if "comp=list" in query else "GetContainerProperties"
    return {"PUT": "PutBlob", "GET": "GetBlob", "HEAD": "GetBlobProperties", "DELETE": "DeleteBlob"}.get(method, method)


def blob_call(response: PipelineResponse[Any, Any]) -> ApiCall:
    """One Blob service call (an attempt, as a ``raw_response_hook`` sees it) as custody records it."""
    request, reply = response.http_request, response.http_response
    status = reply.status_code
    return ApiCall(
        "Storage.Blob",
        _operation(request.method, request.url),
        None,
        reply.headers.get("x-ms-request-id"),
        "ok" if status < 400 else reply.headers.get("x-ms-error-code") or f"HTTP {status}",
        http_status=status,
        client_request_id=request.headers.get("x-ms-client-request-id"),
    )


class BlobSealStore:
    """``azblob://account/container/prefix``: each seal one blob under a Locked immutability policy, created once."""

    write_once_mode = LOCKED

    def __init__(self, url: str, *, retain_days: int, case: Case | None = None) -> None:
        account, _, rest = url.removeprefix("azblob://").partition("/")
        container, _, prefix = rest.partition("/")
        if not account or not container:
            raise CloudirError(
                f"seal store {visible(url)} names no account or container",
                hint="use azblob://ACCOUNT/CONTAINER[/PREFIX]",
            )
        self.url = url
        self.retain_days = retain_days
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._case = case
        template = os.environ.get(ENDPOINT_ENV) or "https://{account}.blob.core.windows.net"
        self._where = f"azblob://{account}/{container}"
        token = os.environ.get(TOKEN_ENV)
        if token:
            credential: Any = StaticTokenCredential(token)
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        self._container = ContainerClient(
            template.replace("{account}", account),
            container,
            credential=credential,
            user_agent=RESPONDER_USER_AGENT,
            raw_response_hook=self._record,
            retry_total=2,
        )

    def _record(self, response: PipelineResponse[Any, Any]) -> None:
        """Record one Blob service call (each attempt) into the case."""
        if self._case is not None:
            self._case.record_api_call(blob_call(response))

    def _failed(self, exc: AzureError | OSError, action: str) -> CloudirError:
        if isinstance(exc, HttpResponseError):
            headers: Any = getattr(exc.response, "headers", {})
            code = headers.get("x-ms-error-code") or exc.status_code
            return CloudAccessError(f"cannot {action}: {code}: {exc.reason}")
        if self._case is not None:  # no response: nothing reached the hook
            self._case.record_api_call(ApiCall("Storage.Blob", action, None, None, "no-response"))
        return CloudAccessError(f"cannot {action}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    def put(self, name: str, data: bytes) -> dict[str, Any]:
        """Store the seal under a Locked policy; refused when the container has no version-level immutability."""
        try:
            properties = self._container.get_container_properties()
        except (AzureError, OSError) as exc:
            raise self._failed(exc, f"read the properties of {self._where}") from None
        if not properties.immutable_storage_with_versioning_enabled:
            raise CloudirError(
                f"{self._where} has no version-level immutability: a seal stored there could be deleted or replaced",
                hint="enable version-level immutability on the container (az storage container-rm create --enable-vlw)",
            )
        until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=self.retain_days)
        blob = self.prefix + name
        try:
            response = self._container.get_blob_client(blob).upload_blob(
                data,
                overwrite=False,
                immutability_policy=ImmutabilityPolicy(
                    expiry_time=until, policy_mode=BlobImmutabilityPolicyMode.LOCKED
                ),
                validate_content=True,
            )
        except (AzureError, OSError) as exc:
            raise self._failed(exc, f"store the seal as {self._where}/{blob}") from None
        return {
            "version": response.get("version_id"),
            "mode": LOCKED,
            "retain_until": until.isoformat(),
            "location": f"{self._where}/{blob}",
        }

    def copies(self, prefix: str) -> Iterator[StoredCopy]:
        """Every version of every blob under the case's seal prefix, with its immutability policy."""
        try:
            items = list(self._container.list_blobs(self.prefix + prefix, include=["versions", "immutabilitypolicy"]))
            for item in items:
                data = self._container.download_blob(item.name, version_id=item.version_id).readall()
                policy = item.immutability_policy
                yield StoredCopy(
                    name=item.name.removeprefix(self.prefix),
                    version=item.version_id,
                    data=data,
                    mode=(policy.policy_mode or "").lower() or None,
                    retain_until=policy.expiry_time,
                )
        except (AzureError, OSError) as exc:
            raise self._failed(exc, f"read the stored seals in {self._where}/{self.prefix}{prefix}") from None
