"""Durable JSON Lines: canonical encoding, whole-line appends that reach the disk, torn-tail detection."""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, no whitespace, UTF-8): the exact bytes a record is stored as."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def append_line(path: Path, line: bytes) -> None:
    """Append ``line`` (ending in a newline) in one write and fsync it.

    On any failure (a full disk, an I/O error) the file is cut back to its previous length and the error
    raised, so a half-written line is left behind only when even that fails.
    """
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        before = os.fstat(fd).st_size
        try:
            _write_all_or_fail(fd, line)
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, before)
            raise
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _write_all_or_fail(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(errno.EIO, f"short write: {written} of {len(data)} bytes")


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``data`` (without their newline) and the torn tail after the last newline."""
    complete, _, torn = data.rpartition(b"\n")
    return (complete.split(b"\n") if complete or data.startswith(b"\n") else []), torn
