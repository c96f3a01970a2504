"""The key that seals custody chains: an Ed25519 file outside every case (created on first use), or a KMS key.

The file key lives at ``$CLOUDIR_SIGNING_KEY`` when set, else at ``[signing] key`` of the configuration file
(:mod:`cloudir.config`), else ``$XDG_CONFIG_HOME/cloudir/signing-key.pem`` (``~/.config/cloudir/signing-key.pem``).
With ``[signing] kms`` (``$CLOUDIR_SIGNING_KMS``) set to an AWS KMS asymmetric key ARN (ECC_NIST_P256 with
ECDSA_SHA_256), an Azure Key Vault key identifier (EC P-256, ES256) or a Cloud KMS key version
(EC_SIGN_P256_SHA256), that service signs the seals and the private key never leaves it.
A fingerprint is ``SHA256:`` and the hex SHA-256 of the public key as seals carry it (the raw 32 bytes for
Ed25519, the DER SubjectPublicKeyInfo otherwise); verification needs only that public key.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cloudir.config import load_config
from cloudir.errors import CloudirError

if TYPE_CHECKING:  # cryptography is imported by the functions that use it (fast start of every command)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloudir.custody import ApiCall

KEY_ENV = "CLOUDIR_SIGNING_KEY"
KMS_ENV = "CLOUDIR_SIGNING_KMS"
ALGORITHM = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
ALGORITHMS = (ALGORITHM, ECDSA_P256)


def default_key_path() -> Path:
    """Where the signing key is read from (and created when missing)."""
    configured = load_config().signing_key  # $CLOUDIR_SIGNING_KEY or the config file's [signing] key
    if configured is not None:
        return configured
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "cloudir" / "signing-key.pem"


def fingerprint(public_raw: bytes) -> str:
    """The printed identity of a public key."""
    return "SHA256:" + hashlib.sha256(public_raw).hexdigest()


class SealSigner(Protocol):
    """Whatever signs seals: the Ed25519 key file, or a KMS key."""

    @property
    def algorithm(self) -> str:
        """The seal algorithm name (one of ``ALGORITHMS``)."""

    @property
    def key_id(self) -> str | None:
        """The KMS key ARN; None for a key file."""

    @property
    def created(self) -> bool:
        """Whether this process created the key (first use)."""

    @property
    def path(self) -> Path | None:
        """The key file, when the key is one."""

    @property
    def location(self) -> str:
        """Where the key is, as printed."""

    @property
    def public_raw(self) -> bytes:
        """The public key as seals carry it."""

    @property
    def fingerprint(self) -> str:
        """``SHA256:<hex>`` of the public key."""

    def public_pem(self) -> str:
        """The public key as PEM (what ``cloudir verify --public-key`` reads)."""

    def sign(self, data: bytes) -> bytes:
        """A signature over ``data``."""

    def take_calls(self) -> list[ApiCall]:
        """The cloud calls made since the last call (recorded in the next custody record)."""


@dataclass(frozen=True)
class Signer:
    """A loaded private Ed25519 signing key file."""

    key: Ed25519PrivateKey
    path: Path
    created: bool  # made by this process (first use)
    algorithm: str = ALGORITHM
    key_id: str | None = None

    @property
    def location(self) -> str:
        """The key file."""
        return str(self.path)

    @property
    def public_raw(self) -> bytes:
        """The raw 32-byte public key."""
        from cryptography.hazmat.primitives import serialization

        return self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def fingerprint(self) -> str:
        """``SHA256:<hex>`` of the public key."""
        return fingerprint(self.public_raw)

    def public_pem(self) -> str:
        """The public key as PEM (what ``cloudir verify --public-key`` reads)."""
        from cryptography.hazmat.primitives import serialization

        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature over ``data``."""
        return self.key.sign(data)

    def take_calls(self) -> list[ApiCall]:
        """A key file makes no cloud call."""
        return []


class CloudKeySigner:
    """What the signers of cloud-held keys share: a DER ECDSA P-256 public key, the key's id, the calls made.

    A subclass sets ``service`` (as printed), ``key_id`` and ``_public`` and implements ``sign``, appending each
    cloud call it makes to ``_calls``.
    """

    created = False
    path: Path | None = None
    algorithm = ECDSA_P256
    service = "cloud key"

    def __init__(self) -> None:
        self._calls: list[ApiCall] = []
        self._public = b""
        self.key_id: str | None = None

    @property
    def location(self) -> str:
        """The service and the key's id."""
        return f"{self.service} {self.key_id}"

    @property
    def public_raw(self) -> bytes:
        """The DER SubjectPublicKeyInfo of the key."""
        return self._public

    @property
    def fingerprint(self) -> str:
        """``SHA256:<hex>`` of the DER public key."""
        return fingerprint(self._public)

    def public_pem(self) -> str:
        """The public key as PEM."""
        return public_pem(self.algorithm, self._public)

    def take_calls(self) -> list[ApiCall]:
        """The calls made since the last take (recorded in the next custody record)."""
        calls, self._calls = self._calls, []
        return calls


def load_seal_signer() -> SealSigner:
    """The configured KMS key when ``[signing] kms`` / ``$CLOUDIR_SIGNING_KMS`` is set, else the key file."""
    kms = load_config().signing_kms
    if kms is None:
        return load_signer()
    from cloudir.registry import seal_signer_class

    if kms.startswith("arn:aws") and ":kms:" in kms:
        service = "aws-kms"
    elif kms.startswith("https://") and "/keys/" in kms:
        service = "azure-keyvault"
    elif kms.startswith("projects/") and "/cryptoKeys/" in kms:
        service = "gcp-kms"
    else:
        raise CloudirError(
            f"signing key {kms} is not supported",
            hint="supported: an AWS KMS asymmetric key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID or alias/NAME), an "
            "Azure Key Vault key (https://VAULT.vault.azure.net/keys/NAME[/VERSION]) or a Cloud KMS key version "
            "(projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N)",
        )
    signer: SealSigner = seal_signer_class(service)(kms)
    return signer


def load_signer(path: Path | None = None) -> Signer:
    """Load the signing key, creating it (mode 0600, folder 0700) when it does not exist yet."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = path or default_key_path()
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_signer(path)  # another process created it first
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        return Signer(key, path, created=True)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CloudirError(
            f"cannot read the signing key {path}: {exc}", hint=f"point {KEY_ENV} at an Ed25519 PEM key"
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise CloudirError(f"the signing key {path} is not an Ed25519 key")
    return Signer(loaded, path, created=False)


def load_public_key(path: Path) -> bytes:
    """The public key from a PEM file (``cloudir key show --public-out``), in the form seals carry it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise CloudirError(f"cannot read the public key {path}: {exc}") from None
    if isinstance(loaded, Ed25519PublicKey):
        return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        return loaded.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raise CloudirError(f"{path} is not an Ed25519 or EC public key")


def public_pem(algorithm: str, public: bytes) -> str:
    """PEM of a public key in the form seals carry it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = (
        Ed25519PublicKey.from_public_bytes(public)
        if algorithm == ALGORITHM
        else serialization.load_der_public_key(public)
    )
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def signature_valid(algorithm: str, public: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid ``algorithm`` signature of ``data`` by the public key ``public``."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        if algorithm == ALGORITHM:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
            return True
        key = serialization.load_der_public_key(public)
        if algorithm == ECDSA_P256 and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return False
