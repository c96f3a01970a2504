"""What the small local fakes (Blob, Cloud Storage, Key Vault, Cloud KMS) share: serving and request hand-off.

A :class:`LocalService` is served on an ephemeral 127.0.0.1 port in a daemon thread while it is open as a
context manager, over HTTPS with a self-signed certificate (its own CA, ``ca_file``) when ``tls`` is set.
Each request is handed whole to :meth:`LocalService.handle`; a bug in a fake answers 500 instead of dropping
the connection.
"""

from __future__ import annotations

import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from moto_fixtures.azure_server import make_certificate, serve_https

Response = tuple[int, dict[str, str], bytes]


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

    def __enter__(self) -> Any:
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"cloudir-{self.name}-")
            cert, key = make_certificate(Path(self._tmp.name))
            self._server, self.base_url = serve_https(self, _Handler, cert, key, self.name)
            self.ca_file = str(cert)
            return self
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        fake: LocalService = self.server.fake  # type: ignore[attr-defined]
        try:
            status, response_headers, payload = fake.handle(self.command, self.path, headers, body)
        except Exception as exc:  # a fake bug must surface as a 500, not a dropped connection
            status, response_headers, payload = fake.failure(exc)
        self.send_response(status)
        for key, value in {**response_headers, **fake.response_headers(headers)}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve  # noqa: N815 - names fixed by the base class

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed by the base class
        """Stay quiet."""
