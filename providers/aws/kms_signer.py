"""Seals signed by an AWS KMS asymmetric key: the private key never leaves KMS (cloudir.signing.SealSigner)."""

from __future__ import annotations

import hashlib
from typing import Any

from cloudir.custody import ApiCall
from cloudir.errors import CloudirError
from cloudir.signing import ECDSA_P256, CloudKeySigner
from providers.aws.session import AwsClients, aws_errors

# KMS key spec -> (KMS signing algorithm, the seal's algorithm name)
_SIGNING = {"ECC_NIST_P256": ("ECDSA_SHA_256", ECDSA_P256)}
MAX_RAW_MESSAGE = 4096  # KMS Sign takes RAW messages up to 4096 bytes; longer ones are sent as their digest


class KmsSigner(CloudKeySigner):
    """An AWS KMS key with KeyUsage SIGN_VERIFY and key spec ECC_NIST_P256 (signing with ECDSA_SHA_256)."""

    service = "AWS KMS"

    def __init__(self, key_arn: str) -> None:
        parts = key_arn.split(":")
        self._region = parts[3] if len(parts) > 5 and parts[3] else None
        self._clients = AwsClients(region=self._region)
        super().__init__()
        response = self._call("GetPublicKey", f"read the public key of {key_arn}", KeyId=key_arn)
        spec = str(response.get("KeySpec") or response.get("CustomerMasterKeySpec"))
        if response.get("KeyUsage") != "SIGN_VERIFY":
            raise CloudirError(f"KMS key {key_arn} is not a signing key (KeyUsage {response.get('KeyUsage')})")
        chosen = _SIGNING.get(spec)
        if chosen is None or chosen[0] not in response.get("SigningAlgorithms", []):
            raise CloudirError(
                f"KMS key {key_arn} has key spec {spec}",
                hint="supported: ECC_NIST_P256 (ECDSA_SHA_256); RSA and other curves are not implemented",
            )
        self._kms_algorithm, self.algorithm = chosen
        returned = str(response.get("KeyId") or "")
        self.key_id = returned if returned.startswith("arn:") else key_arn  # AWS returns the key ARN
        self._public: bytes = response["PublicKey"]

    def sign(self, data: bytes) -> bytes:
        """KMS Sign over ``data`` (RAW; as its SHA-256 DIGEST when longer than KMS takes)."""
        message, kind = (data, "RAW") if len(data) <= MAX_RAW_MESSAGE else (hashlib.sha256(data).digest(), "DIGEST")
        response = self._call(
            "Sign",
            f"sign a seal with {self.key_id}",
            KeyId=self.key_id,
            Message=message,
            MessageType=kind,
            SigningAlgorithm=self._kms_algorithm,
        )
        signature: bytes = response["Signature"]
        return signature

    def _call(self, operation: str, action: str, **params: Any) -> Any:
        client = self._clients.client("kms")
        method = {"GetPublicKey": client.get_public_key, "Sign": client.sign}[operation]
        try:
            with aws_errors(action):
                response = method(**params)
        except CloudirError as exc:
            self._calls.append(ApiCall("kms", operation, self._clients.default_region, None, str(exc)[:200]))
            raise
        meta = response.get("ResponseMetadata", {})
        self._calls.append(
            ApiCall(
                "kms",
                operation,
                self._clients.default_region,
                meta.get("RequestId"),
                "ok",
                http_status=meta.get("HTTPStatusCode"),
            )
        )
        return response
