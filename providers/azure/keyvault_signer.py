"""Seals signed by an Azure Key Vault EC P-256 key (ES256): the private key never leaves the vault.

The key is named by its identifier, ``https://VAULT.vault.azure.net/keys/NAME[/VERSION]`` (without a version: the
current one, pinned at first use by its fingerprint in the case). The token is ``AZURE_KEYVAULT_ACCESS_TOKEN`` when
set (``az account get-access-token --resource https://vault.azure.net``), else DefaultAzureCredential.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.signing import CloudKeySigner
from cloudir.textsafe import visible
from providers.azure.session import StaticTokenCredential

if TYPE_CHECKING:
    from azure.core.pipeline import PipelineResponse

TOKEN_ENV = "AZURE_KEYVAULT_ACCESS_TOKEN"  # noqa: S105 - the name of a variable, not a secret
SERVICE = "Microsoft.KeyVault"


def _is_loopback(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1"}


class KeyVaultSigner(CloudKeySigner):
    """A Key Vault key of type EC (P-256) with the ``sign`` operation; seals are ES256, DER-encoded as verify reads."""

    service = "Azure Key Vault"

    def __init__(self, key_id: str) -> None:
        parts = urlsplit(key_id)
        segments = parts.path.strip("/").split("/")
        if parts.scheme != "https" or len(segments) not in {2, 3} or segments[0] != "keys":
            raise CloudirError(
                f"signing key {visible(key_id)} is not a Key Vault key identifier",
                hint="use https://VAULT.vault.azure.net/keys/NAME[/VERSION]",
            )
        super().__init__()
        token = os.environ.get(TOKEN_ENV)
        if token:
            credential: Any = StaticTokenCredential(token)
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        options: dict[str, Any] = {
            "raw_response_hook": self._record,
            "retry_total": 2,
            # The SDK checks that the vault's challenge names a Key Vault domain; a vault on this machine cannot.
            "verify_challenge_resource": not _is_loopback(parts.hostname or ""),
        }
        vault = f"{parts.scheme}://{parts.netloc}"
        try:
            key = KeyClient(vault, credential, **options).get_key(
                segments[1], segments[2] if len(segments) > 2 else None
            )
        except (AzureError, OSError) as exc:
            raise self._failed(exc, f"read the public key of {visible(key_id)}") from None
        jwk: Any = key.key  # JsonWebKey sets its fields at run time
        if jwk.kty not in {"EC", "EC-HSM"} or jwk.crv != "P-256" or "sign" not in (jwk.key_ops or []):
            raise CloudirError(
                f"Key Vault key {visible(key_id)} is {jwk.kty} {jwk.crv or ''} with operations {jwk.key_ops}",
                hint="supported: an EC P-256 key with the sign operation (az keyvault key create --kty EC "
                "--curve P-256 --ops sign verify)",
            )
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(jwk.x or b"", "big"), int.from_bytes(jwk.y or b"", "big"), ec.SECP256R1()
        ).public_key()
        self._public = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.key_id = str(key.id)
        self._crypto = CryptographyClient(str(key.id), credential, **options)

    def sign(self, data: bytes) -> bytes:
        """Key Vault Sign (ES256) over the SHA-256 of ``data``, as a DER ECDSA signature."""
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        try:
            result = self._crypto.sign(SignatureAlgorithm.es256, hashlib.sha256(data).digest())
        except (AzureError, OSError) as exc:
            raise self._failed(exc, f"sign a seal with {self.key_id}") from None
        raw = result.signature
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    def _record(self, response: PipelineResponse[Any, Any]) -> None:
        request, reply = response.http_request, response.http_response
        status = reply.status_code
        if status == 401 and "WWW-Authenticate" in reply.headers:
            return  # the authentication challenge the SDK answers before the call itself
        operation = "keys/sign/action" if request.url.partition("?")[0].endswith("/sign") else "keys/read"
        self._calls.append(
            ApiCall(
                SERVICE,
                operation,
                None,
                reply.headers.get("x-ms-request-id"),
                "ok" if status < 400 else f"HTTP {status}",
                http_status=status,
                client_request_id=request.headers.get("x-ms-client-request-id"),
            )
        )

    def _failed(self, exc: AzureError | OSError, action: str) -> CloudirError:
        if isinstance(exc, HttpResponseError):
            code = exc.error.code if exc.error else exc.status_code
            message = (exc.error.message if exc.error else exc.reason) or ""
            return CloudAccessError(f"cannot {action}: {code}: {message.splitlines()[0] if message else ''}")
        self._calls.append(ApiCall(SERVICE, action, None, None, "no-response"))
        return CloudAccessError(f"cannot {action}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
