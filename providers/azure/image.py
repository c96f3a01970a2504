"""Export a snapshot as a raw VHD through a read-only SAS: ranged reads, hashed while streaming, access revoked."""

from __future__ import annotations

import re
from typing import Any

from azure.core.rest import HttpRequest

from cloudir.case import Case
from cloudir.errors import CloudAccessError
from providers.azure import calls
from providers.azure.session import AzureSession, azure_errors

SAS_SECONDS = 3600
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
) -> dict[str, Any]:
    """Grant read access to ``snapshot`` (resource group, name), stream it into ``rel_path``, revoke access."""
    group, name = snapshot
    with azure_errors(f"grant read access to snapshot {name}", calls.permission("snapshot.grant")):
        access = compute.snapshots.begin_grant_access(
            group, name, {"access": "Read", "durationInSeconds": SAS_SECONDS}
        ).result()
    try:
        result = _stream(session, str(access.access_sas), case, rel_path, chunk_size)
    finally:
        with azure_errors(f"revoke access to snapshot {name}", calls.permission("snapshot.revoke")):
            compute.snapshots.begin_revoke_access(group, name).result()
    return {**result, "snapshot": name, "access_revoked": True}


def _stream(session: AzureSession, sas_url: str, case: Case, rel_path: str, chunk_size: int) -> dict[str, Any]:
    client = session.blob_client()
    offset, total, ranges, zero_bytes = 0, None, 0, 0
    with case.open_artifact(rel_path) as writer:
        while total is None or offset < total:
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
            data = response.content
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            total = int(match.group(3)) if match else len(data)
            if not data:
                break
            if data.count(0) == len(data):
                writer.write_zeros(len(data))
                zero_bytes += len(data)
            else:
                writer.write(data)
            offset += len(data)
            ranges += 1
    artifact = writer.close()
    return {
        "path": artifact.path,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "ranges": ranges,
        "sparse_bytes": zero_bytes,
    }
