"""CloudTrail log file integrity validation, at acquisition time, from the files stored in the case.

Follows the documented scheme (and aws-cli ``cloudtrail validate-logs``): each digest file is signed
SHA256withRSA (hex signature in the S3 object metadata ``signature``) over the string
``digestEndTime\\ndigestS3Bucket/digestS3Object\\nhex(SHA-256(uncompressed digest))\\npreviousDigestSignature``
(``null`` for the first digest); each log file's ``hashValue`` is the SHA-256 of the uncompressed log file;
``previousDigestSignature``/``previousDigestHashValue`` chain each digest to the one before it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# Per log file, strongest finding first.
VERIFIED = "verified"
NO_DIGEST = "no_digest"
HASH_MISMATCH = "hash_mismatch"
BAD_SIGNATURE = "bad_signature"
CHAIN_BROKEN = "chain_broken"
MISSING = "missing"  # named by a valid digest, but not in the bucket listing or not downloaded
LOG_STATUSES = (VERIFIED, NO_DIGEST, HASH_MISMATCH, BAD_SIGNATURE, CHAIN_BROKEN, MISSING)

_REQUIRED = ("digestS3Bucket", "digestS3Object", "digestEndTime", "digestStartTime", "digestPublicKeyFingerprint")


@dataclass
class StoredDigest:
    """A digest file as stored: gzipped bytes and the signature from its S3 object metadata."""

    bucket: str
    key: str
    raw: bytes
    signature: str | None
    algorithm: str | None


@dataclass
class _Digest:
    stored: StoredDigest
    content: bytes
    data: dict[str, Any]
    status: str  # valid | bad_signature
    reason: str | None
    chain: str = "ok"  # ok | start | gap | broken | anchor (collected only to check the next digest's link)
    chain_reason: str | None = None


def public_keys_from_pages(pages: list[bytes]) -> dict[str, bytes]:
    """Fingerprint -> DER public key, from raw ListPublicKeys response bodies."""
    keys: dict[str, bytes] = {}
    for page in pages:
        for entry in json.loads(page).get("PublicKeyList", []):
            keys[entry["Fingerprint"]] = base64.b64decode(entry["Value"])
    return keys


def uncompressed_sha256(raw: bytes) -> str | None:
    """SHA-256 hex of a gzip file's content, or None when it is not valid gzip."""
    try:
        return hashlib.sha256(gzip.decompress(raw)).hexdigest()
    except (OSError, EOFError, zlib.error):
        return None


def signing_string(data: dict[str, Any], content: bytes) -> bytes:
    """The documented data signing string of a digest."""
    previous = data.get("previousDigestSignature") or "null"
    return (
        f"{data['digestEndTime']}\n{data['digestS3Bucket']}/{data['digestS3Object']}\n"
        f"{hashlib.sha256(content).hexdigest()}\n{previous}"
    ).encode()


def _load_key(der: bytes) -> rsa.RSAPublicKey:
    key = serialization.load_der_public_key(der)
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("not an RSA key")
    return key


def _check(stored: StoredDigest, public_keys: dict[str, bytes]) -> _Digest:
    try:
        content = gzip.decompress(stored.raw)
        data = json.loads(content)
    except (OSError, EOFError, zlib.error, ValueError):
        return _Digest(stored, b"", {}, BAD_SIGNATURE, "digest is not gzipped JSON")
    if any(name not in data for name in _REQUIRED):
        return _Digest(stored, content, data, BAD_SIGNATURE, "digest lacks required fields")
    if (data["digestS3Bucket"], data["digestS3Object"]) != (stored.bucket, stored.key):
        return _Digest(stored, content, data, BAD_SIGNATURE, "digest was moved from its original location")
    if not stored.signature or stored.algorithm != "SHA256withRSA":
        return _Digest(stored, content, data, BAD_SIGNATURE, "no SHA256withRSA signature in the object metadata")
    der = public_keys.get(data["digestPublicKeyFingerprint"])
    if der is None:
        reason = f"no CloudTrail public key with fingerprint {data['digestPublicKeyFingerprint']}"
        return _Digest(stored, content, data, BAD_SIGNATURE, reason)
    try:
        _load_key(der).verify(
            bytes.fromhex(stored.signature), signing_string(data, content), padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError, TypeError):
        return _Digest(stored, content, data, BAD_SIGNATURE, "signature does not verify")
    return _Digest(stored, content, data, "valid", None)


def _link(digests: dict[tuple[str, str], _Digest]) -> None:
    """Check each digest's link to its predecessor."""
    chains: dict[tuple[str, ...], list[_Digest]] = {}
    for digest in digests.values():
        if digest.data:
            name = digest.stored.key.rsplit("/", 1)[-1]
            chains.setdefault((digest.stored.bucket, name.rsplit("_", 1)[0]), []).append(digest)
    for chain in chains.values():
        chain.sort(key=lambda d: d.data["digestEndTime"])
        for position, digest in enumerate(chain):
            if digest.chain == "anchor":
                continue
            data = digest.data
            previous_key = data.get("previousDigestS3Object")
            if not previous_key:
                digest.chain = "gap" if position else "start"
                if position:
                    digest.chain_reason = "no previous digest named: logging or validation was off before it"
                continue
            previous = digests.get((data.get("previousDigestS3Bucket") or digest.stored.bucket, previous_key))
            if previous is None:
                digest.chain, digest.chain_reason = "broken", f"previous digest {previous_key} is missing"
            elif previous.stored.signature != data.get("previousDigestSignature"):
                digest.chain, digest.chain_reason = "broken", f"previous digest {previous_key} signature differs"
            elif hashlib.sha256(previous.content).hexdigest() != data.get("previousDigestHashValue"):
                digest.chain, digest.chain_reason = "broken", f"previous digest {previous_key} content differs"


def validate(
    digests: list[StoredDigest],
    log_hashes: dict[tuple[str, str], str | None],
    public_keys: dict[str, bytes],
    listed_prefixes: set[tuple[str, str]] | None = None,
    anchors: list[StoredDigest] | None = None,
) -> dict[str, Any]:
    """Validate digests and the log files they name.

    ``log_hashes`` maps each collected log file (bucket, key) to its uncompressed SHA-256 (None when it is
    not gzip). ``listed_prefixes`` are the (bucket, folder) pairs that were listed completely; a log file a
    valid digest names in such a folder but that is not collected is reported ``missing``. ``anchors`` are
    the digests just before the window, collected only so that the first digest's link can be checked.
    """
    checked = {(d.bucket, d.key): _check(d, public_keys) for d in anchors or []}
    for anchor in checked.values():
        anchor.chain = "anchor"
    checked.update({(d.bucket, d.key): _check(d, public_keys) for d in digests})
    _link(checked)
    named: dict[tuple[str, str], tuple[_Digest, dict[str, Any]]] = {}
    for digest in checked.values():
        if digest.chain == "anchor":
            continue
        for entry in digest.data.get("logFiles") or []:
            named[(entry["s3Bucket"], entry["s3Object"])] = (digest, entry)
    logs: list[dict[str, Any]] = []
    for (bucket, key), actual in sorted(log_hashes.items()):
        found = named.get((bucket, key))
        reason: str | None
        if found is None:
            status, reason, via = NO_DIGEST, "no digest in the collected range names this file", None
        else:
            digest, entry = found
            via = digest.stored.key
            if digest.status != "valid":
                status, reason = BAD_SIGNATURE, digest.reason
            elif actual != entry.get("hashValue"):
                status, reason = HASH_MISMATCH, "content differs from the hash in its signed digest"
            elif digest.chain == "broken":
                status, reason = CHAIN_BROKEN, digest.chain_reason
            else:
                status, reason = VERIFIED, None
        logs.append({"bucket": bucket, "key": key, "status": status, "reason": reason, "digest": via})
    for (bucket, key), (digest, _) in sorted(named.items(), key=lambda item: item[0]):
        folder = key.rsplit("/", 1)[0] + "/"
        if (
            (bucket, key) not in log_hashes
            and digest.status == "valid"
            and listed_prefixes is not None
            and (bucket, folder) in listed_prefixes
        ):
            reason = "named by a valid digest but not collected: deleted from the bucket, or its download failed"
            logs.append(
                {"bucket": bucket, "key": key, "status": MISSING, "reason": reason, "digest": digest.stored.key}
            )
    digest_rows = [
        {
            "bucket": d.stored.bucket,
            "key": d.stored.key,
            "status": d.status,
            "reason": d.reason,
            "chain": d.chain,
            "chain_reason": d.chain_reason,
            "start": d.data.get("digestStartTime"),
            "end": d.data.get("digestEndTime"),
            "log_files": len(d.data.get("logFiles") or []),
        }
        for d in sorted(checked.values(), key=lambda d: (d.stored.bucket, d.stored.key))
    ]
    counts = {status: sum(1 for row in logs if row["status"] == status) for status in LOG_STATUSES}
    in_window = [d for d in digest_rows if d["chain"] != "anchor"]
    digest_counts = {
        "valid": sum(1 for d in in_window if d["status"] == "valid"),
        "bad_signature": sum(1 for d in in_window if d["status"] != "valid"),
        "chain_broken": sum(1 for d in in_window if d["chain"] == "broken"),
        "chain_gaps": sum(1 for d in in_window if d["chain"] == "gap"),
    }
    return {"log_files": logs, "digests": digest_rows, "counts": counts, "digest_counts": digest_counts}
