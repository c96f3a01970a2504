"""Streaming SHA-256 helpers shared by the evidence store and verification."""

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


def sha256_stream(stream: BinaryIO) -> tuple[str, int]:
    """Hash a binary stream in chunks; return (hex digest, byte count)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK_SIZE):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    """Hash a file without reading it whole into memory."""
    with path.open("rb") as stream:
        return sha256_stream(stream)


def sha256_chunks(chunks: Iterable[bytes]) -> str:
    """Hash an iterable of byte chunks."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()
