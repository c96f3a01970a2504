"""Read an EBS snapshot through the EBS direct APIs into a sparse raw image, checking every block's checksum."""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudir.case import Case
from cloudir.errors import CloudirError
from cloudir.textsafe import esc
from providers.aws.session import aws_errors

GIB = 1024**3
READ_CONCURRENCY = 32  # GetSnapshotBlock calls in flight per image (EBS direct allows many parallel reads)


class BlockChecksumError(CloudirError):
    """A block read from a snapshot does not match the checksum EBS sent with it."""


def _list_blocks(ebs: Any, snapshot_id: str) -> tuple[list[dict[str, Any]], int, int]:
    """Every written block of a snapshot (sorted), the volume size in bytes and the block size."""
    blocks: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        blocks.extend(page.get("Blocks", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    return sorted(blocks, key=lambda b: int(b["BlockIndex"])), int(page["VolumeSize"]) * GIB, int(page["BlockSize"])


def _verified(snapshot_id: str, index: int, response: dict[str, Any]) -> bytes:
    data: bytes = response["BlockData"].read()
    algorithm = response.get("ChecksumAlgorithm") or "SHA256"
    if algorithm != "SHA256":
        raise BlockChecksumError(f"block {index} of {snapshot_id}: unsupported checksum algorithm {algorithm}")
    actual = base64.b64encode(hashlib.sha256(data).digest()).decode()
    if response.get("Checksum") != actual:
        raise BlockChecksumError(
            f"block {index} of {snapshot_id}: checksum mismatch (EBS sent {response.get('Checksum')}, "
            f"data hashes to {actual})",
            hint="the image was discarded; re-run with --resume to read it again",
        )
    return data


def _read_in_order(
    ebs: Any, snapshot_id: str, blocks: list[dict[str, Any]], concurrency: int
) -> Iterator[tuple[int, bytes]]:
    """Each block's index and verified data, in block order, with up to ``concurrency`` reads in flight.

    At most ``concurrency`` blocks are held in memory; the first failed read stops the rest (cancelled).
    """

    def fetch(block: dict[str, Any]) -> tuple[int, bytes]:
        index = int(block["BlockIndex"])
        response = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=block["BlockToken"])
        return index, _verified(snapshot_id, index, response)

    remaining = iter(blocks)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"ebs-{snapshot_id}")
    try:
        pending: deque[Future[tuple[int, bytes]]] = deque(
            pool.submit(fetch, block) for block in islice(remaining, concurrency)
        )
        while pending:
            done = pending.popleft().result()
            pending.extend(pool.submit(fetch, block) for block in islice(remaining, 1))
            yield done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("image {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    )


def _image(
    ebs: Any, snapshot_id: str, case: Case, rel_path: str, *, progress: Progress, concurrency: int
) -> dict[str, Any]:
    """One snapshot into ``rel_path``: blocks read ``concurrency`` at a time, written and hashed in order."""
    with aws_errors(f"read snapshot {snapshot_id} through the EBS direct APIs"):
        blocks, volume_bytes, block_size = _list_blocks(ebs, snapshot_id)
        task = progress.add_task(esc(snapshot_id), total=volume_bytes)
        with case.open_artifact(rel_path) as writer:
            position = 0
            for index, data in _read_in_order(ebs, snapshot_id, blocks, concurrency):
                offset = index * block_size
                if offset > position:
                    writer.write_zeros(offset - position)
                position = offset + writer.write(data)
                progress.update(task, completed=position)
            if volume_bytes > position:
                writer.write_zeros(volume_bytes - position)
            progress.update(task, completed=volume_bytes)
    artifact = writer.close()
    return {"path": artifact.path, "sha256": artifact.sha256, "size": artifact.size, "blocks": len(blocks)}


def write_raw_image(
    ebs: Any, snapshot_id: str, case: Case, rel_path: str, console: Console, *, concurrency: int = READ_CONCURRENCY
) -> dict[str, Any]:
    """Write ``snapshot_id`` as a raw disk image at ``rel_path``; holes stay sparse; return path, SHA-256, size.

    Blocks are read ``concurrency`` at a time and written (and hashed) in order as they arrive.
    """
    with _progress(console) as progress:
        return _image(ebs, snapshot_id, case, rel_path, progress=progress, concurrency=concurrency)


def write_raw_images(
    ebs: Any, images: dict[str, str], case: Case, console: Console, *, concurrency: int = READ_CONCURRENCY
) -> dict[str, dict[str, Any]]:
    """Every snapshot of ``images`` (snapshot id -> image path) imaged at once, each as :func:`write_raw_image` does.

    One pipeline per volume, each with its own ``concurrency`` reads in flight, so the wall time of N volumes is
    about that of the largest one; the first failure is raised once the others have stopped.
    """
    with _progress(console) as progress, ThreadPoolExecutor(max_workers=max(1, len(images))) as pool:
        futures = {
            snapshot_id: pool.submit(
                _image, ebs, snapshot_id, case, rel_path, progress=progress, concurrency=concurrency
            )
            for snapshot_id, rel_path in images.items()
        }
        return {snapshot_id: future.result() for snapshot_id, future in futures.items()}
