"""The Ed25519 key that seals custody chains: one file outside every case, created on first use.

The key lives at ``$CLOUDIR_SIGNING_KEY`` when set, else at ``[signing] key`` of the configuration file
(:mod:`cloudir.config`), else ``$XDG_CONFIG_HOME/cloudir/signing-key.pem`` (``~/.config/cloudir/signing-key.pem``).
Its fingerprint is ``SHA256:`` and the hex SHA-256 of the raw 32-byte public key; verification needs only
the public key, which each seal carries.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cloudir.config import load_config
from cloudir.errors import CloudirError

if TYPE_CHECKING:  # cryptography is imported by the functions that use it (fast start of every command)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_ENV = "CLOUDIR_SIGNING_KEY"
ALGORITHM = "ed25519"


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


@dataclass(frozen=True)
class Signer:
    """A loaded private signing key."""

    key: Ed25519PrivateKey
    path: Path
    created: bool  # made by this process (first use)

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
    """The raw public key from a PEM public key file (``cloudir key show --public-out``)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise CloudirError(f"cannot read the public key {path}: {exc}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise CloudirError(f"{path} is not an Ed25519 public key")
    return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_valid(public_raw: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_raw``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
