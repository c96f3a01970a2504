"""Read an EBS snapshot through the EBS direct APIs into a sparse raw image, checking every block's checksum."""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import islice
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudir.case import Case
from cloudir.errors import CloudirError
from cloudir.textsafe import esc
from providers.aws.session import aws_errors

GIB = 1024**3
# GetSnapshotBlock calls queued or in flight per volume: its reorder window, the most blocks it holds in memory.
READ_CONCURRENCY = 32
# Reads in flight across every volume at once: at 100 ms a read, about the 5,000 GetSnapshotBlock requests per
# second that EBS direct allows an account by default, so 16 volumes read as fast as one.
READ_TOTAL = 512


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
    ebs: Any, snapshot_id: str, blocks: list[dict[str, Any]], reads: ThreadPoolExecutor, window: int
) -> Iterator[tuple[int, bytes]]:
    """Each block's index and verified data, in block order, read through the shared pool ``reads``.

    At most ``window`` reads of this snapshot are queued or in flight, so at most that many blocks wait in memory for
    their turn; the first failed read cancels the ones still queued.
    """

    def fetch(block: dict[str, Any]) -> tuple[int, bytes]:
        index = int(block["BlockIndex"])
        response = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=block["BlockToken"])
        return index, _verified(snapshot_id, index, response)

    remaining = iter(blocks)
    pending: deque[Future[tuple[int, bytes]]] = deque(reads.submit(fetch, block) for block in islice(remaining, window))
    try:
        while pending:
            done = pending.popleft().result()
            pending.extend(reads.submit(fetch, block) for block in islice(remaining, 1))
            yield done
    finally:
        for future in pending:
            future.cancel()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("image {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    )


class RawImager:
    """Images EBS snapshots into sparse raw files, each started as soon as its snapshot is ready.

    Every volume's reads go through one pool of at most ``total`` GetSnapshotBlock calls in flight, taken in turn
    from each volume (each keeps ``concurrency`` queued or in flight and adds one as it writes one), so the wall
    time of N volumes is about that of the largest while N x ``concurrency`` stays within ``total``. Each volume is
    written and hashed in block order by its own pipeline; holes stay sparse.
    """

    def __init__(
        self,
        ebs: Any,
        case: Case,
        console: Console,
        *,
        volumes: int,
        concurrency: int = READ_CONCURRENCY,
        total: int = READ_TOTAL,
    ) -> None:
        self._ebs, self._case, self._window = ebs, case, concurrency
        self._reads = ThreadPoolExecutor(
            max_workers=max(1, min(total, concurrency * volumes)), thread_name_prefix="ebs"
        )
        self._pipelines = ThreadPoolExecutor(max_workers=max(1, volumes), thread_name_prefix="ebs-image")
        self._progress = _progress(console)
        self._images: dict[str, Future[dict[str, Any]]] = {}

    def __enter__(self) -> RawImager:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pipelines.shutdown(wait=True, cancel_futures=True)
        self._reads.shutdown(wait=True, cancel_futures=True)
        self._progress.stop()

    def start(self, snapshot_id: str, rel_path: str) -> None:
        """Begin imaging ``snapshot_id`` (completed) into ``rel_path`` of the case."""
        self._images[snapshot_id] = self._pipelines.submit(self._image, snapshot_id, rel_path)

    def results(self) -> dict[str, dict[str, Any]]:
        """Path, SHA-256, size and block count of every image; the first failure is raised once the others ended."""
        wait(self._images.values())
        return {snapshot_id: future.result() for snapshot_id, future in self._images.items()}

    def _image(self, snapshot_id: str, rel_path: str) -> dict[str, Any]:
        with aws_errors(f"read snapshot {snapshot_id} through the EBS direct APIs"):
            blocks, volume_bytes, block_size = _list_blocks(self._ebs, snapshot_id)
            task = self._progress.add_task(esc(snapshot_id), total=volume_bytes)
            with self._case.open_artifact(rel_path) as writer:
                position = 0
                for index, data in _read_in_order(self._ebs, snapshot_id, blocks, self._reads, self._window):
                    offset = index * block_size
                    if offset > position:
                        writer.write_zeros(offset - position)
                    position = offset + writer.write(data)
                    self._progress.update(task, completed=position)
                if volume_bytes > position:
                    writer.write_zeros(volume_bytes - position)
                self._progress.update(task, completed=volume_bytes)
        artifact = writer.close()
        return {"path": artifact.path, "sha256": artifact.sha256, "size": artifact.size, "blocks": len(blocks)}


def write_raw_images(
    ebs: Any,
    images: dict[str, str],
    case: Case,
    console: Console,
    *,
    concurrency: int = READ_CONCURRENCY,
    total: int = READ_TOTAL,
) -> dict[str, dict[str, Any]]:
    """Every completed snapshot of ``images`` (snapshot id -> image path) imaged at once by a :class:`RawImager`."""
    with RawImager(ebs, case, console, volumes=len(images), concurrency=concurrency, total=total) as imager:
        for snapshot_id, rel_path in images.items():
            imager.start(snapshot_id, rel_path)
        return imager.results()


def write_raw_image(
    ebs: Any, snapshot_id: str, case: Case, rel_path: str, console: Console, *, concurrency: int = READ_CONCURRENCY
) -> dict[str, Any]:
    """Write ``snapshot_id`` as a raw disk image at ``rel_path``; holes stay sparse; return path, SHA-256, size.

    Blocks are read ``concurrency`` at a time and written (and hashed) in order as they arrive.
    """
    return write_raw_images(ebs, {snapshot_id: rel_path}, case, console, concurrency=concurrency)[snapshot_id]
