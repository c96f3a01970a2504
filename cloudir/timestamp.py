"""RFC 3161 timestamps of seals: a time-stamp authority's signed statement that a seal existed at a time.

With ``[timestamp] url`` (``CLOUDIR_TSA_URL``) configured, every command that appended to a case ends by
asking the TSA to timestamp the SHA-256 of its newest seal line; the token (DER ``TimeStampToken``) is kept
as ``timestamps/<records>-<head>.tsr`` and recorded in a ``seal.timestamp`` record. Verify checks each token:
its imprint is the seal's hash, its CMS signature is valid, and, when ``--tsa-cert`` or ``[timestamp] cert``
names the TSA's certificate, it was signed by that certificate.
"""

from __future__ import annotations

import hashlib
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asn1crypto import algos, cms, core, tsp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from cloudir.config import load_config
from cloudir.custody import ApiCall, VerifyResult
from cloudir.errors import CloudirError
from cloudir.seal import SEALS_FILE, parse_seal
from cloudir.sealstore import TIMESTAMP_ACTION, local_seal_lines
from cloudir.textsafe import visible

if TYPE_CHECKING:
    from cloudir.case import Case

TIMESTAMPS_DIR = "timestamps"
_TIMEOUT_SECONDS = 20


@dataclass(frozen=True)
class TokenInfo:
    """What a valid token says."""

    gen_time: str
    serial: int
    tsa_cert_sha256: str
    tsa_subject: str


def load_certificate(path: Path) -> x509.Certificate:
    """A TSA certificate (PEM or DER) to pin."""
    try:
        data = path.read_bytes()
        return x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except (OSError, ValueError) as exc:
        raise CloudirError(f"cannot read the TSA certificate {path}: {exc}") from None


def request_token(url: str, digest: bytes) -> tuple[bytes, int, int]:
    """Ask the TSA at ``url`` to timestamp a SHA-256 digest: (DER token, nonce, HTTP status)."""
    nonce = secrets.randbits(63)
    request = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
            "nonce": nonce,
            "cert_req": True,
        }
    )
    if not url.startswith(("http://", "https://")):
        raise CloudirError(f"TSA URL {visible(url)} is not http(s)")
    post = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=request.dump(), headers={"Content-Type": "application/timestamp-query"}, method="POST"
    )
    try:
        with urllib.request.urlopen(post, timeout=_TIMEOUT_SECONDS) as answer:  # noqa: S310
            status, body = answer.status, answer.read()
    except (urllib.error.URLError, OSError) as exc:
        raise CloudirError(f"the time-stamp authority {visible(url)} did not answer: {exc}") from None
    try:
        response = tsp.TimeStampResp.load(body)
        granted = response["status"]["status"].native
        token = response["time_stamp_token"]
    except ValueError:
        raise CloudirError(f"the time-stamp authority {visible(url)} sent no RFC 3161 response") from None
    if granted not in {"granted", "granted_with_mods"} or not isinstance(token, cms.ContentInfo):
        raise CloudirError(f"the time-stamp authority {visible(url)} refused the request ({visible(granted)})")
    return token.dump(), nonce, status


def check_token(token: bytes, digest: bytes, pinned: x509.Certificate | None, nonce: int | None = None) -> TokenInfo:
    """Check a DER TimeStampToken over ``digest``; ``ValueError`` naming the problem when it does not hold."""
    try:
        signed = cms.ContentInfo.load(token)["content"]
        encap = signed["encap_content_info"]
        tst_der = encap["content"].contents if isinstance(encap["content"], core.ParsableOctetString) else b""
        tst = tsp.TSTInfo.load(tst_der)
        imprint = tst["message_imprint"]
        signer = signed["signer_infos"][0]
        attrs = {attr["type"].native: attr["values"][0].native for attr in signer["signed_attrs"]}
        certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"] or []]
        gen_time, serial = tst["gen_time"].native, tst["serial_number"].native
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"is not an RFC 3161 token ({exc})") from None
    if imprint["hash_algorithm"]["algorithm"].native != "sha256" or imprint["hashed_message"].native != digest:
        raise ValueError("its message imprint is not the SHA-256 of the seal it names")
    if nonce is not None and tst["nonce"].native != nonce:
        raise ValueError("its nonce is not the one sent")
    if encap["content_type"].native != "tst_info" or attrs.get("content_type") != "tst_info":
        raise ValueError("its signed content is not a TSTInfo")
    if attrs.get("message_digest") != hashlib.sha256(tst_der).digest():
        raise ValueError("its signed attributes do not cover its TSTInfo")
    cert = pinned or (certs[0] if certs else None)
    if cert is None:
        raise ValueError("it carries no TSA certificate and none was given (--tsa-cert)")
    _check_signature(cert, signer, signer["signed_attrs"].dump())
    return TokenInfo(
        gen_time=gen_time.isoformat(),
        serial=int(serial),
        tsa_cert_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        tsa_subject=cert.subject.rfc4514_string(),
    )


def _check_signature(cert: x509.Certificate, signer: Any, attrs_der: bytes) -> None:
    """The signer info's signature over its signed attributes (DER as a SET), by ``cert``'s key."""
    signed_bytes = b"\x31" + attrs_der[1:]  # [0] IMPLICIT -> SET OF, as RFC 5652 5.4 says they are signed
    algorithm: algos.SignedDigestAlgorithm = signer["signature_algorithm"]
    if signer["digest_algorithm"]["algorithm"].native != "sha256":
        raise ValueError("it is not signed over SHA-256")
    key = cert.public_key()
    signature = signer["signature"].native
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm.signature_algo == "ecdsa":
            key.verify(signature, signed_bytes, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pkcs1v15":
            key.verify(signature, signed_bytes, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise ValueError(f"its signature algorithm {algorithm.signature_algo} is not supported")
    except InvalidSignature:
        raise ValueError("its signature is not valid for the TSA certificate (altered, or another TSA)") from None


def timestamp_latest_seal(case: Case) -> str | None:
    """Timestamp the case's newest seal at the configured TSA and keep the token; the TSA URL, or None."""
    config = load_config()
    if config.tsa_url is None:
        return None
    line = (case.root / SEALS_FILE).read_bytes().splitlines()[-1]
    seal = parse_seal(line)
    digest = hashlib.sha256(line).digest()
    pinned = load_certificate(config.tsa_cert) if config.tsa_cert else None
    with case.action(TIMESTAMP_ACTION, target=config.tsa_url) as act:
        act.details |= {"tsa": config.tsa_url, "seal_records": seal.records, "seal_sha256": digest.hex()}
        token, nonce, status = request_token(config.tsa_url, digest)
        try:
            info = check_token(token, digest, pinned, nonce)
        except ValueError as exc:
            raise CloudirError(f"the timestamp from {visible(config.tsa_url)} {exc}") from None
        case.record_api_call(ApiCall("tsa", "TimeStampReq", None, str(info.serial), "ok", http_status=status))
        rel = f"{TIMESTAMPS_DIR}/{seal.records:08d}-{seal.head[:16]}.tsr"
        case.write_bytes(rel, token)
        act.details |= {"token": rel, "gen_time": info.gen_time, "tsa_cert_sha256": info.tsa_cert_sha256}
    return config.tsa_url


def check_timestamps(
    case_dir: Path, records: list[tuple[int, dict[str, Any]]], pinned: x509.Certificate | None, result: VerifyResult
) -> None:
    """Check the token each ``seal.timestamp`` record kept against the local seal it names."""
    local = local_seal_lines(case_dir)
    for seq, record in records:
        details = record.get("details")
        if record.get("outcome") != "ok" or not isinstance(details, dict):
            continue
        rel, count = details.get("token"), details.get("seal_records")
        where = f"timestamp of record {seq}"
        if (
            not (isinstance(rel, str) and rel.startswith(f"{TIMESTAMPS_DIR}/") and ".." not in rel)
            or type(count) is not int
        ):
            result.problems.append(f"{where}: the record does not name a token under {TIMESTAMPS_DIR}/")
            continue
        path, line = case_dir / rel, local.get(count)
        if line is None or path.is_symlink() or not path.is_file():
            missing = f"the seal of record {count}" if line is None else visible(rel)
            result.problems.append(f"{where}: {missing} is missing")
            continue
        try:
            info = check_token(path.read_bytes(), hashlib.sha256(line).digest(), pinned)
        except ValueError as exc:
            result.problems.append(f"timestamp {visible(rel)} (record {seq}): it {exc}")
            continue
        trust = "its certificate pinned" if pinned else "certificate not pinned: pass --tsa-cert to check who signed"
        result.notes.append(
            f"seal of record {count} timestamped at {info.gen_time} by {visible(info.tsa_subject)} ({trust})"
        )
