"""Seals signed by a Cloud KMS key version (EC_SIGN_P256_SHA256): the private key never leaves Cloud KMS.

The key is named by its version, ``projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N``, and
reached with Application Default Credentials; ``CLOUDIR_GCP_KMS_EMULATOR_HOST`` (``host:port``) points the client
at a local emulator over HTTP, without credentials, as ``STORAGE_EMULATOR_HOST`` does for Cloud Storage. A call
its cryptographic request quota refuses (429) is sent again as every GCP call is
(:func:`providers.gcp.session.send_until_quota_allows`), each refusal in custody.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import requests
from google.api_core.exceptions import GoogleAPIError
from google.auth.exceptions import DefaultCredentialsError

from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.signing import CloudKeySigner
from cloudir.textsafe import visible
from providers.gcp.session import anonymous_credentials, send_until_quota_allows

EMULATOR_ENV = "CLOUDIR_GCP_KMS_EMULATOR_HOST"
VERSION_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/\d+")
ALGORITHM = "EC_SIGN_P256_SHA256"


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(data))


class CloudKmsSigner(CloudKeySigner):
    """A Cloud KMS asymmetric signing key version with algorithm EC_SIGN_P256_SHA256 (DER ECDSA signatures)."""

    service = "Cloud KMS"

    def __init__(self, name: str) -> None:
        if not VERSION_NAME.fullmatch(name):
            raise CloudirError(
                f"signing key {visible(name)} is not a Cloud KMS key version",
                hint="use projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N",
            )
        from google.cloud import kms_v1

        super().__init__()
        emulator = os.environ.get(EMULATOR_ENV)
        transport_class = kms_v1.KeyManagementServiceClient.get_transport_class("rest")
        try:
            if emulator:
                transport = transport_class(host=emulator, credentials=anonymous_credentials(), url_scheme="http")
            else:
                transport = transport_class()
        except DefaultCredentialsError:
            raise CloudAccessError(
                f"no Google credentials for Cloud KMS key {visible(name)}",
                hint="run 'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS",
            ) from None
        session = transport._session  # type: ignore[attr-defined]  # its own session
        session.hooks["response"].append(self._record)
        send = session.request
        session.request = lambda *args, **kwargs: send_until_quota_allows(lambda: send(*args, **kwargs), 1.0)
        self._client = kms_v1.KeyManagementServiceClient(transport=transport)
        self.key_id = name
        try:
            response = self._client.get_public_key(name=name)
        except (GoogleAPIError, requests.RequestException) as exc:
            raise self._failed(exc, f"read the public key of {visible(name)}") from None
        algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm(response.algorithm).name
        if algorithm != ALGORITHM:
            raise CloudirError(
                f"Cloud KMS key {visible(name)} has algorithm {algorithm}",
                hint=f"supported: {ALGORITHM} (gcloud kms keys create --purpose asymmetric-signing "
                "--default-algorithm ec-sign-p256-sha256)",
            )
        if response.pem_crc32c is not None and _crc32c(response.pem.encode()) != int(response.pem_crc32c):
            raise CloudAccessError(f"the public key of {visible(name)} was corrupted in transit (CRC32C mismatch)")
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_public_key(response.pem.encode())
        self._public = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        """asymmetricSign over the SHA-256 of ``data``, with CRC32C integrity checks both ways."""
        digest = hashlib.sha256(data).digest()
        try:
            response = self._client.asymmetric_sign(
                request={"name": self.key_id, "digest": {"sha256": digest}, "digest_crc32c": _crc32c(digest)}
            )
        except (GoogleAPIError, requests.RequestException) as exc:
            raise self._failed(exc, f"sign a seal with {self.key_id}") from None
        if not response.verified_digest_crc32c or _crc32c(response.signature) != int(response.signature_crc32c or 0):
            raise CloudAccessError(f"the signature of {self.key_id} was corrupted in transit (CRC32C mismatch)")
        signature: bytes = response.signature
        return signature

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        url = response.request.url or ""
        operation = "asymmetricSign" if url.partition("?")[0].endswith(":asymmetricSign") else "getPublicKey"
        status = response.status_code
        self._calls.append(
            ApiCall(
                "cloudkms",
                f"cryptoKeyVersions.{operation}",
                self.key_id.split("/")[3] if self.key_id else None,
                response.headers.get("x-goog-request-id"),
                "ok" if status < 400 else f"HTTP {status}",
                http_status=status,
            )
        )

    def _failed(self, exc: Exception, action: str) -> CloudirError:
        if isinstance(exc, requests.RequestException):
            self._calls.append(ApiCall("cloudkms", action, None, None, "no-response"))
        response = getattr(exc, "response", None)
        try:  # the service's own error (status and message), without the request URL the client puts first
            error: Any = response.json()["error"] if isinstance(response, requests.Response) else None
            message = f"{error['status']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = f"{type(exc).__name__}: {str(getattr(exc, 'message', None) or exc).splitlines()[0][:200]}"
        return CloudAccessError(f"cannot {action}: {message}")
