"""Export a snapshot as a raw VHD through a read-only SAS: ranged reads, hashed while streaming, access revoked."""

from __future__ import annotations

import re
from collections import deque
from concurrent.futures import Future
from itertools import islice
from typing import Any

from azure.core.rest import HttpRequest

from cloudir.case import ActionPool, Case
from cloudir.errors import CloudAccessError
from providers.azure import calls
from providers.azure.session import AzureSession, azure_errors

SAS_SECONDS = 4 * 3600  # long enough to stream a large disk; revoked as soon as the copy ends
BLOB_API_VERSION = "2021-08-06"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def export_snapshot(
    session: AzureSession,
    compute: Any,
    case: Case,
    snapshot: tuple[str, str],
    rel_path: str,
    *,
    chunk_size: int,
    workers: int,
) -> dict[str, Any]:
    """Grant read access to ``snapshot`` (resource group, name), stream it into ``rel_path``, revoke access."""
    group, name = snapshot
    with azure_errors(f"grant read access to snapshot {name}", calls.permission("snapshot.grant")):
        access = compute.snapshots.begin_grant_access(
            group, name, {"access": "Read", "durationInSeconds": SAS_SECONDS}, polling=session.polling()
        ).result()
    try:
        result = _stream(session, str(access.access_sas), case, rel_path, chunk_size=chunk_size, workers=workers)
    finally:
        with azure_errors(f"revoke access to snapshot {name}", calls.permission("snapshot.revoke")):
            compute.snapshots.begin_revoke_access(group, name, polling=session.polling()).result()
    return {**result, "access_revoked": True}


def _stream(
    session: AzureSession, sas_url: str, case: Case, rel_path: str, *, chunk_size: int, workers: int
) -> dict[str, Any]:
    """Read the blob in ranges, ``workers`` at a time, and write them in order through the hashing writer."""
    client = session.blob_client()

    def read(offset: int) -> tuple[bytes, int]:
        request = HttpRequest(
            "GET",
            sas_url,
            headers={"x-ms-range": f"bytes={offset}-{offset + chunk_size - 1}", "x-ms-version": BLOB_API_VERSION},
        )
        response = client.send_request(request)
        if response.status_code not in {200, 206}:
            raise CloudAccessError(
                f"reading the snapshot through its SAS failed at byte {offset}: HTTP {response.status_code}",
                hint="the SAS may have expired or been revoked; re-run with --resume",
            )
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        return response.content, int(match.group(3)) if match else len(response.content)

    sparse = 0
    with case.open_artifact(rel_path) as writer, ActionPool(max_workers=workers) as pool:

        def put(offset: int, data: bytes) -> None:
            nonlocal sparse
            if offset != writer.size or not data:
                raise CloudAccessError(f"short read of the snapshot at byte {writer.size} of {total}")
            if data.count(0) == len(data):
                writer.write_zeros(len(data))
                sparse += len(data)
            else:
                writer.write(data)

        first, total = read(0)
        put(0, first)
        offsets = iter(range(len(first), total, chunk_size))
        pending: deque[tuple[int, Future[tuple[bytes, int]]]] = deque()
        while True:
            pending.extend((start, pool.submit(read, start)) for start in islice(offsets, 2 * workers - len(pending)))
            if not pending:
                break
            offset, future = pending.popleft()
            put(offset, future.result()[0])
        if writer.size != total:
            raise CloudAccessError(f"short read of the snapshot: {writer.size} of {total} bytes")
    artifact = writer.close()
    return {
        "path": artifact.path,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "ranges": -(-total // chunk_size) if total else 1,
        "sparse_bytes": sparse,
    }
