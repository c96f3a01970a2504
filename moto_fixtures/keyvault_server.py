"""A fake Azure Key Vault keys data plane for seal signing: Get Key and Sign, over HTTPS on 127.0.0.1.

As the Key Vault data-plane contract (azure-rest-api-specs, KeyVault keys) defines them: every request needs a
known ``api-version``; a request without a bearer token gets 401 with the ``WWW-Authenticate`` challenge the SDK
answers (``authorization`` and ``resource``); ``GET /keys/{name}[/{version}]`` returns the key bundle (a JSON Web
Key, public part only); ``POST /keys/{name}/{version}/sign`` takes ``{"alg", "value"}`` with ``value`` the
base64url digest, and answers the base64url signature (for ES256: R || S, 64 bytes). Refusals: unknown key or
version 404 KeyNotFound, a disabled key 403 Forbidden, an algorithm that does not fit the key or a digest of the
wrong length 400 BadParameter, a key without the ``sign`` operation 403 Forbidden.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from moto_fixtures.local_http import LocalService, Response

API_VERSIONS = frozenset({"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"})
# JWS algorithm -> (curve, digest length) a Key Vault EC key signs with
EC_ALGORITHMS = {"ES256": ("P-256", 32), "ES384": ("P-384", 48), "ES512": ("P-521", 64)}
TENANT = "00000000-0000-0000-0000-000000000000"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body


@dataclass
class VaultKey:
    """One version of a key held by the vault."""

    name: str
    version: str
    private: ec.EllipticCurvePrivateKey
    enabled: bool = True
    operations: tuple[str, ...] = ("sign", "verify")


class FakeKeyVault(LocalService):
    """Keys (EC P-256) served over HTTPS; use as a context manager."""

    tls = True
    name = "fake-keyvault"

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, list[VaultKey]] = {}
        self.requests: list[tuple[str, str]] = []

    def failure(self, exc: Exception) -> Response:
        """A fake bug, in the service's error envelope."""
        return _error(500, "InternalError", f"{type(exc).__name__}: {exc}")

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]:
        """A request id on every response."""
        return {"x-ms-request-id": str(uuid.uuid4())}

    def create_ec_key(self, name: str, *, operations: tuple[str, ...] = ("sign", "verify")) -> str:
        """Add a new P-256 version of key ``name``; its key id (URL with the version)."""
        with self._lock:
            key = VaultKey(name, uuid.uuid4().hex, ec.generate_private_key(ec.SECP256R1()), operations=operations)
            self.keys.setdefault(name, []).append(key)
            return self.kid(key)

    def kid(self, key: VaultKey) -> str:
        """The key identifier of a key version."""
        return f"{self.base_url}/keys/{key.name}/{key.version}"

    def disable(self, name: str) -> None:
        """Disable every version of a key."""
        with self._lock:
            for key in self.keys.get(name, []):
                key.enabled = False

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request."""
        url = urlsplit(raw_path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append((method, url.path))
            version = query.get("api-version")
            if version not in API_VERSIONS:
                return _error(400, "BadParameter", f"The specified version ({version}) is not recognized.")
            if not headers.get("authorization", "").startswith("Bearer "):
                challenge = (
                    f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                    f'resource="https://vault.azure.net"'
                )
                return _error(
                    401, "Unauthorized", "AKV10000: Request is missing a Bearer.", {"WWW-Authenticate": challenge}
                )
            parts = url.path.strip("/").split("/")
            if len(parts) in {2, 3} and parts[0] == "keys" and method == "GET":
                return self._get(parts[1], parts[2] if len(parts) == 3 else None)
            if len(parts) == 4 and parts[0] == "keys" and parts[3] == "sign" and method == "POST":
                return self._sign(parts[1], parts[2], body)
        return _error(404, "NotFound", f"{method} {url.path} is not served by this fake")

    def _find(self, name: str, version: str | None) -> VaultKey | Response:
        versions = self.keys.get(name, [])
        key = versions[-1] if versions and not version else next((k for k in versions if k.version == version), None)
        if key is None:
            return _error(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault.")
        return key

    def _get(self, name: str, version: str | None) -> Response:
        key = self._find(name, version)
        if not isinstance(key, VaultKey):
            return key
        numbers = key.private.public_key().public_numbers()
        bundle = {
            "key": {
                "kid": self.kid(key),
                "kty": "EC",
                "key_ops": list(key.operations),
                "crv": "P-256",
                "x": _b64url(numbers.x.to_bytes(32, "big")),
                "y": _b64url(numbers.y.to_bytes(32, "big")),
            },
            "attributes": {
                "enabled": key.enabled,
                "created": 1764547200,
                "updated": 1764547200,
                "recoveryLevel": "Recoverable",
            },
        }
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(bundle).encode()

    def _sign(self, name: str, version: str, body: bytes) -> Response:
        key = self._find(name, version)
        if not isinstance(key, VaultKey):
            return key
        if not key.enabled:
            return _error(403, "Forbidden", "Operation sign is not allowed on a disabled key.")
        if "sign" not in key.operations:
            return _error(403, "Forbidden", "Operation sign is not permitted on this key.")
        try:
            request = json.loads(body)
            algorithm, digest = request["alg"], _unb64url(request["value"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadParameter", "The request body must carry alg and a base64url value.")
        curve, length = EC_ALGORITHMS.get(algorithm, ("", 0))
        if curve != "P-256":
            return _error(400, "BadParameter", f"Algorithm {algorithm} is not valid for an EC P-256 key.")
        if len(digest) != length:
            return _error(400, "BadParameter", f"The digest for {algorithm} must be {length} bytes long.")
        der = key.private.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = utils.decode_dss_signature(der)
        result = {"kid": self.kid(key), "value": _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}
        return 200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(result).encode()
