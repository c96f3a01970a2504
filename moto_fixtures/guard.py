"""Fake credentials and a network guard: nothing in a test or the demo may reach a real cloud."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "cloudir-sandbox",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_CLIENT_SECRET": "sandbox",
    "GOOGLE_CLOUD_PROJECT": "cloudir-sandbox",
}
DROP_ENV = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")


class RealCloudAccessError(AssertionError):
    """Raised when code under test tries to open a connection that is not to this machine."""


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like
    host = address[0]
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextmanager
def sandbox_environment() -> Iterator[None]:
    """Set fake credentials, and refuse every socket connection that is not to loopback."""
    saved = {key: os.environ.get(key) for key in (*FAKE_ENV, *DROP_ENV)}
    os.environ.update(FAKE_ENV)
    for key in DROP_ENV:
        os.environ.pop(key, None)
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo
    own_names = {socket.gethostname(), socket.getfqdn()}

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in own_names and not _is_local((name,)):
            raise RealCloudAccessError(f"blocked a name lookup of {name!r}: tests and the demo must not reach a cloud")
        return original_getaddrinfo(host, *args, **kwargs)

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if not _is_local(address):
            raise RealCloudAccessError(
                f"blocked a connection to {address!r}: tests and the demo must not reach a cloud"
            )
        original_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_local(address):
            raise RealCloudAccessError(
                f"blocked a connection to {address!r}: tests and the demo must not reach a cloud"
            )
        return original_connect_ex(self, address)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = original_getaddrinfo
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
