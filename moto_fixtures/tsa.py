"""A local RFC 3161 time-stamp authority on 127.0.0.1: parses TimeStampReq and answers signed TimeStampResp.

Like a real TSA it refuses a request that is not ``application/timestamp-query`` DER, or whose imprint is not
SHA-256 of the right length (status ``rejection``), echoes the nonce, and includes its certificate on ``certReq``.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from asn1crypto import algos, cms, core, tsp, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _certificate(key: ec.EllipticCurvePrivateKey, name: str) -> cx509.Certificate:
    subject = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        cx509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(cx509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(key, hashes.SHA256())
    )


class LocalTsa:
    """Context manager: ``url`` answers RFC 3161 requests; ``cert_pem`` is the TSA certificate to pin."""

    def __init__(self, name: str = "cloudir test TSA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = _certificate(self.key, name)
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.requests = 0
        self._serial = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/tsa"

    def __enter__(self) -> LocalTsa:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def respond(self, body: bytes) -> bytes:
        """The DER TimeStampResp for a DER TimeStampReq."""
        try:
            request = tsp.TimeStampReq.load(body)
            imprint = request["message_imprint"]
            ok = (
                imprint["hash_algorithm"]["algorithm"].native == "sha256"
                and len(imprint["hashed_message"].native) == 32
            )
        except ValueError:
            ok = False
        if not ok:
            return tsp.TimeStampResp({"status": {"status": "rejection"}}).dump()
        self._serial += 1
        tst = tsp.TSTInfo(
            {
                "version": "v1",
                "policy": "1.3.6.1.4.1.99999.1",
                "message_imprint": imprint,
                "serial_number": self._serial,
                "gen_time": datetime.now(UTC).replace(microsecond=0),
                "nonce": request["nonce"].native,
            }
        )
        return tsp.TimeStampResp(
            {"status": {"status": "granted"}, "time_stamp_token": self._token(tst, bool(request["cert_req"].native))}
        ).dump()

    def _token(self, tst: tsp.TSTInfo, with_cert: bool) -> cms.ContentInfo:
        tst_der = tst.dump()
        cert = x509.Certificate.load(self.cert.public_bytes(serialization.Encoding.DER))
        attrs = cms.CMSAttributes(
            [
                cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
                cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]}),
            ]
        )
        signature = self.key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256()))
        signer = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {
                        "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                            {"issuer": cert.issuer, "serial_number": cert.serial_number}
                        )
                    }
                ),
                "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "signed_attrs": attrs,
                "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
                "signature": signature,
            }
        )
        signed: dict[str, Any] = {
            "version": "v3",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(tst_der)},
            "signer_infos": [signer],
        }
        if with_cert:
            signed["certificates"] = [cert]
        return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(signed)})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_response(415)
                    self.end_headers()
                    return
                tsa.requests += 1
                answer = tsa.respond(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return

        return Handler
