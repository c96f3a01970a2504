"""What the local HTTP fakes (ARM, Graph, Blob, Cloud Storage, Key Vault, Cloud KMS) share: serving, TLS, hand-off.

A :class:`LocalService` is served on an ephemeral 127.0.0.1 port in a daemon thread while it is open as a
context manager, over HTTPS with a self-signed certificate (its own CA, ``ca_file``) when ``tls`` is set.
Each request is handed whole to :meth:`LocalService.handle`; a bug in a fake answers 500 instead of dropping
the connection.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Response = tuple[int, dict[str, str], bytes]


class ServedFake(Protocol):
    """What :class:`FakeHandler` needs of a fake: an answer per request, an answer to its own failure, headers."""

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response: ...

    def failure(self, exc: Exception) -> Response: ...

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]: ...


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (it is its own CA); returns (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudir local fake")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fake-ca.pem", folder / "fake-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def serve_https(
    fake: object, handler: type[BaseHTTPRequestHandler], cert: Path, key: Path, name: str
) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``fake`` through ``handler`` over HTTPS on an ephemeral 127.0.0.1 port in a daemon thread."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.fake = fake  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True).start()
    return server, f"https://127.0.0.1:{server.server_address[1]}"


class LocalService:
    """A fake HTTP service; subclasses implement :meth:`handle` and may add response headers."""

    tls = False
    name = "fake"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.base_url = ""
        self.ca_file = ""
        self.certificate: tuple[Path, Path] | None = None  # (cert, key) to serve with instead of a new one

    def __enter__(self) -> Any:
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"cloudir-{self.name}-")
            cert, key = self.certificate or make_certificate(Path(self._tmp.name))
            self._server, self.base_url = serve_https(self, FakeHandler, cert, key, self.name)
            self.ca_file = str(cert)
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHandler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name=self.name, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request (headers with lower-case names)."""
        raise NotImplementedError

    def failure(self, exc: Exception) -> Response:
        """The answer to a request the fake itself failed on."""
        return 500, {"Content-Type": "text/plain"}, f"{type(exc).__name__}: {exc}".encode()

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]:
        """Headers the service sends with every response."""
        return {}


class FakeHandler(BaseHTTPRequestHandler):
    """Hands each request whole to the server's fake; its per-service headers fill what a response leaves out."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        fake: ServedFake = self.server.fake  # type: ignore[attr-defined]
        try:
            status, response_headers, payload = fake.handle(self.command, self.path, headers, body)
        except Exception as exc:  # a fake bug must surface as a 500, not a dropped connection
            status, response_headers, payload = fake.failure(exc)
        self.send_response(status)
        for key, value in {**fake.response_headers(headers), **response_headers}.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = do_HEAD = _serve  # noqa: N815 - names fixed by the base class

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        """Stay quiet."""
