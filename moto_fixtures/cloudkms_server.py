"""A fake Cloud KMS v1 REST API for seal signing: getPublicKey and asymmetricSign of EC_SIGN_P256_SHA256 keys.

google-cloud-kms (REST transport) talks to it over HTTP on 127.0.0.1. As the Cloud KMS contract (discovery
document ``cloudkms.v1``) defines them: ``GET /v1/{cryptoKeyVersion}/publicKey`` answers ``pem``, ``algorithm``,
``pemCrc32c``, ``name``, ``protectionLevel``; ``POST /v1/{cryptoKeyVersion}:asymmetricSign`` takes
``digest.sha256`` (base64) and ``digestCrc32c``, and answers the DER ``signature`` with ``signatureCrc32c`` and
``verifiedDigestCrc32c``. Refusals: an unknown version 404 NOT_FOUND; a version that is not ENABLED 400
FAILED_PRECONDITION; a digest that is not SHA-256 or of the wrong length, or whose CRC32C does not match,
400 INVALID_ARGUMENT; a malformed resource name 400 INVALID_ARGUMENT. Every request is first held to the
cloudkms v1 discovery document (path pattern, query parameters, the body against ``AsymmetricSignRequest``: unknown
names, base64 bytes, int64 checksums; see :mod:`moto_fixtures.gcp_contract`) and every answer to its response
schema; errors are in Google's format with ``status`` and, for a 400, ``google.rpc.BadRequest`` details. Both
methods count against the cryptographic request quota (429 RESOURCE_EXHAUSTED over it).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import google_crc32c
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from moto_fixtures.gcp_contract import Contract, ContractError, contract, error_body, raise_refusals
from moto_fixtures.local_http import LocalService, Response

Answer = tuple[int, dict[str, Any]]  # status and JSON body
VERSION_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+/cryptoKeyVersions/\d+")
_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 403: "PERMISSION_DENIED"}


def _error(status: int, message: str, code: str | None = None) -> Answer:
    return status, error_body("cloudkms", status, code or _STATUS.get(status, "UNKNOWN"), message)


@dataclass
class KeyVersion:
    """One CryptoKeyVersion."""

    name: str
    private: ec.EllipticCurvePrivateKey
    state: str = "ENABLED"


class FakeCloudKms(LocalService):
    """Key versions served over HTTP on 127.0.0.1 (use as a context manager)."""

    name = "fake-cloudkms"

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, KeyVersion] = {}
        self.requests: list[tuple[str, str]] = []
        # what the discovery document refused, one line a request; any left when the fake closes fail the code that
        # opened it (the test or the demo), unless a test expected them (gcp_contract.expecting_refusals)
        self.refusals: list[str] = []
        # Every request is held to the cloudkms v1 discovery document first (None: no contract check, for a test
        # that shows what a lenient fake would let through).
        self.contract: Contract | None = contract(("cloudkms",))
        # Cloud KMS's cryptographic request quota (getPublicKey and asymmetricSign count; 60,000 a minute per calling
        # project by default), counted in synchronized intervals of ``rate_window`` seconds by ``clock``; a request
        # over it is refused with 429 RESOURCE_EXHAUSTED and does not count.
        self.crypto_quota = 60_000
        self.rate_window = 60.0
        self.clock: Callable[[], float] = time.monotonic
        self._crypto_counts: dict[int, int] = {}

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if exc[0] is None:  # an exception already on its way says more
            raise_refusals("the Cloud KMS fake", self.refusals)  # see gcp_contract.expecting_refusals

    @property
    def host(self) -> str:
        """``host:port``, what ``CLOUDIR_GCP_KMS_EMULATOR_HOST`` is set to."""
        return self.base_url.removeprefix("http://")

    def create_ec_key(self, project: str, ring: str, key: str) -> str:
        """A new EC_SIGN_P256_SHA256 key version; its resource name."""
        with self._lock:
            prefix = f"projects/{project}/locations/global/keyRings/{ring}/cryptoKeys/{key}/cryptoKeyVersions/"
            number = 1 + sum(name.startswith(prefix) for name in self.versions)
            name = f"{prefix}{number}"
            self.versions[name] = KeyVersion(name, ec.generate_private_key(ec.SECP256R1()))
            return name

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request, as JSON."""
        status, payload = self.answer(method, raw_path, body)
        return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(payload).encode()

    def failure(self, exc: Exception) -> Response:
        """A fake bug, in the API's error envelope."""
        status, payload = _error(500, f"{type(exc).__name__}: {exc}", "INTERNAL")
        return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(payload).encode()

    def answer(self, method: str, raw_path: str, body: bytes) -> Answer:
        """The status and JSON body of one request."""
        path = unquote(urlsplit(raw_path).path)
        with self._lock:
            self.requests.append((method, path))
            if self.contract is None:
                return self._route(method, path, body)
            try:
                documented = self.contract.check(method, raw_path, json.loads(body) if body.strip() else None)
            except ValueError as exc:  # not JSON (ContractError is not a ValueError)
                return 400, error_body("cloudkms", 400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}.")
            except ContractError as exc:
                self.refusals.append(f"{method} {path}: {exc.message}")
                return exc.status, error_body("cloudkms", exc.status, exc.reason, exc.message, field=exc.field)
            refused = self._charge_crypto()
            if refused is not None:
                return refused
            status, payload = self._route(method, path, body)
            if status == 200:
                try:
                    self.contract.check_response(documented, payload)
                except ContractError as exc:  # the fake's bug: answered 500
                    raise RuntimeError(
                        f"the fake's answer is not a documented {documented.id} response: {exc}"
                    ) from None
            return status, payload

    def _charge_crypto(self) -> Answer | None:
        """Count one cryptographic request, or Cloud KMS's refusal of it over the quota."""
        interval = int(self.clock() // self.rate_window)
        if self._crypto_counts.get(interval, 0) >= self.crypto_quota:
            message = (
                "Quota exceeded for quota metric 'Cryptographic requests' and limit 'Cryptographic requests per "
                "minute' of service 'cloudkms.googleapis.com' for consumer 'project_number:000000000000'."
            )
            return _error(429, message, "RESOURCE_EXHAUSTED")
        self._crypto_counts[interval] = self._crypto_counts.get(interval, 0) + 1
        return None

    def _route(self, method: str, path: str, body: bytes) -> Answer:
        if method == "GET" and path.startswith("/v1/") and path.endswith("/publicKey"):
            return self._public_key(path.removeprefix("/v1/").removesuffix("/publicKey"))
        if method == "POST" and path.startswith("/v1/") and path.endswith(":asymmetricSign"):
            return self._sign(path.removeprefix("/v1/").removesuffix(":asymmetricSign"), body)
        return _error(404, f"{method} {path} is not served by this fake")

    def _find(self, name: str) -> KeyVersion | Answer:
        if not VERSION_NAME.fullmatch(name):
            return _error(400, f"Resource name [{name}] does not match any known resource name pattern.")
        version = self.versions.get(name)
        if version is None:
            return _error(404, f"{name} not found.")
        if version.state != "ENABLED":
            return _error(400, f"{name} is not enabled, current state is: {version.state}.", "FAILED_PRECONDITION")
        return version

    def _public_key(self, name: str) -> Answer:
        version = self._find(name)
        if not isinstance(version, KeyVersion):
            return version
        pem = (
            version.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        return 200, {
            "pem": pem,
            "algorithm": "EC_SIGN_P256_SHA256",
            "pemCrc32c": str(google_crc32c.value(pem.encode())),
            "name": name,
            "protectionLevel": "SOFTWARE",
        }

    def _sign(self, name: str, body: bytes) -> Answer:
        version = self._find(name)
        if not isinstance(version, KeyVersion):
            return version
        try:
            request = json.loads(body)
            digest = base64.b64decode(request["digest"]["sha256"], validate=True)
        except (ValueError, KeyError, TypeError):
            return _error(400, "The request must carry digest.sha256 for an EC_SIGN_P256_SHA256 key.")
        if len(digest) != 32:
            return _error(400, "The digest must be 32 bytes long for SHA-256.")
        crc = request.get("digestCrc32c")
        if crc is not None and str(crc) != str(google_crc32c.value(digest)):
            return _error(400, "The checksum in field digest_crc32c did not match the data in field digest.")
        signature = version.private.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return 200, {
            "signature": base64.b64encode(signature).decode(),
            "signatureCrc32c": str(google_crc32c.value(signature)),
            "verifiedDigestCrc32c": crc is not None,
            "name": name,
            "protectionLevel": "SOFTWARE",
        }
