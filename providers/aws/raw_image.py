"""Read an EBS snapshot through the EBS direct APIs into a sparse raw image, checking every block's checksum.

The GetSnapshotBlock calls run in a few reader processes, each with its own client and a thread per read in flight
(a call costs its client about 1.5 ms of CPU in botocore: one process would cap the reads at some 600 a second
however many wait on the network); each block is verified against its checksum there, and sent back with the call's
custody facts. This process records every call and writes and hashes each volume in block order.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import islice
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudir.case import Case
from cloudir.child import start_child
from cloudir.custody import ApiCall
from cloudir.errors import CloudirError
from cloudir.textsafe import esc
from providers.aws.session import AwsClients, aws_errors

GIB = 1024**3
# GetSnapshotBlock calls queued or in flight per volume: its reorder window, the most blocks it holds in memory.
READ_CONCURRENCY = 32
# Reads in flight across every volume at once: at 100 ms a read, about the 5,000 GetSnapshotBlock requests per
# second that EBS direct allows an account by default, so 16 volumes read as fast as one.
READ_TOTAL = 512
# Reader processes: one a core, at most 4 (beyond that the parent's hashing and writing is the bound).
READ_PROCESSES = max(1, min(4, os.cpu_count() or 1))
CHECKSUM_HINT = "the image was discarded; re-run with --resume to read it again"


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


def _checksum_problem(snapshot_id: str, index: int, response: dict[str, Any], data: bytes) -> str | None:
    """Why a block does not match the checksum EBS sent with it (None when it does)."""
    algorithm = response.get("ChecksumAlgorithm") or "SHA256"
    if algorithm != "SHA256":
        return f"block {index} of {snapshot_id}: unsupported checksum algorithm {algorithm}"
    actual = base64.b64encode(hashlib.sha256(data).digest()).decode()
    if response.get("Checksum") != actual:
        return (
            f"block {index} of {snapshot_id}: checksum mismatch (EBS sent {response.get('Checksum')}, "
            f"data hashes to {actual})"
        )
    return None


def _read_block(ebs: Any, snapshot_id: str, index: int, token: str) -> tuple[ApiCall, str, Any]:
    """One GetSnapshotBlock in a reader process: its custody record, and ``ok`` with the index and verified data,
    ``checksum`` with the mismatch, or ``error`` with the SDK's exception."""
    region = str(ebs.meta.region_name)
    try:
        response = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
        data: bytes = response["BlockData"].read()  # the body streams: a broken connection fails here
    except ClientError as exc:
        meta, code = exc.response.get("ResponseMetadata", {}), str(exc.response.get("Error", {}).get("Code"))
        call = ApiCall(
            "ebs", "GetSnapshotBlock", region, meta.get("RequestId"), code, http_status=meta.get("HTTPStatusCode")
        )
        return call, "error", exc
    except BotoCoreError as exc:
        return ApiCall("ebs", "GetSnapshotBlock", region, None, type(exc).__name__), "error", exc
    meta = response.get("ResponseMetadata", {})
    call = ApiCall(
        "ebs", "GetSnapshotBlock", region, meta.get("RequestId"), "ok", http_status=meta.get("HTTPStatusCode")
    )
    problem = _checksum_problem(snapshot_id, index, response, data)
    return (call, "checksum", problem) if problem else (call, "ok", (index, data))


def reader_process(control: Connection) -> None:
    """A reader process (see :func:`cloudir.child.start_child`): reads asked for on ``control``, ``threads`` at a
    time, each answer sent back as it ends.

    Messages: first ``(spec, threads, credentials)``; then ``("read", task, snapshot id, index, token)``;
    ``("credentials", frozen)`` (the client is remade with them); ``None`` (finish the reads in flight, then end).
    """
    spec, threads, credentials = control.recv()
    ebs, sending = spec.client(credentials), threading.Lock()

    def read(client: Any, task: int, snapshot_id: str, index: int, token: str) -> None:
        try:
            answer = _read_block(client, snapshot_id, index, token)
        except Exception as exc:  # noqa: BLE001 - unanswered, the parent would wait for this block forever
            failure = CloudirError(f"block {index} of {snapshot_id}: the reader failed: {type(exc).__name__}: {exc}")
            answer = (
                ApiCall("ebs", "GetSnapshotBlock", str(client.meta.region_name), None, type(exc).__name__),
                "error",
                failure,
            )
        with sending:
            control.send((task, *answer))

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ebs-read") as pool:
        while (message := control.recv()) is not None:
            if message[0] == "credentials":
                ebs = spec.client(message[1])
            else:
                pool.submit(read, ebs, *message[1:])


class BlockReaders:
    """GetSnapshotBlock calls run by ``processes`` reader processes, ``in_flight`` at most at once in all.

    :meth:`submit` gives a future of one block's index and verified data; every call is recorded in the case of
    ``clients`` as its answer arrives (also when its future was cancelled meanwhile).
    """

    def __init__(self, clients: AwsClients, region: str, *, in_flight: int, processes: int = READ_PROCESSES) -> None:
        count = max(1, min(processes, in_flight))
        threads = -(-in_flight // count)
        self.spec = clients.spec("ebs", region, connections=threads)
        self._clients, self._credentials = clients, clients.frozen_credentials()
        self._futures: dict[int, Future[tuple[int, bytes]]] = {}
        self._tasks, self._lock = itertools.count(), threading.Lock()
        self._controls: list[Connection] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        self._receivers: list[threading.Thread] = []
        for number in range(count):
            control, process = start_child(__name__, reader_process.__name__)
            control.send((self.spec, threads, self._credentials))
            receiver = threading.Thread(target=self._receive, args=(control,), name=f"ebs-receive-{number}")
            receiver.start()
            self._controls.append(control)
            self._processes.append(process)
            self._receivers.append(receiver)
        self.threads = threads

    def submit(self, snapshot_id: str, block: dict[str, Any]) -> Future[tuple[int, bytes]]:
        """Read one block (``BlockIndex``, ``BlockToken`` of ListSnapshotBlocks) of ``snapshot_id``."""
        future: Future[tuple[int, bytes]] = Future()
        credentials = self._clients.frozen_credentials()
        with self._lock:
            if credentials != self._credentials:
                self._credentials = credentials
                for control in self._controls:
                    control.send(("credentials", credentials))
            task = next(self._tasks)
            self._futures[task] = future
            control = self._controls[task % len(self._controls)]
            control.send(("read", task, snapshot_id, int(block["BlockIndex"]), block["BlockToken"]))
        return future

    def _receive(self, control: Connection) -> None:
        while True:
            try:
                task, call, kind, payload = control.recv()
            except EOFError:
                return
            self._clients.record(call)
            with self._lock:
                future = self._futures.pop(task)
            if not future.set_running_or_notify_cancel():
                continue
            if kind == "ok":
                future.set_result(payload)
            elif kind == "checksum":
                future.set_exception(BlockChecksumError(payload, hint=CHECKSUM_HINT))
            else:
                future.set_exception(payload)

    def close(self) -> None:
        """Let the reads in flight end (each recorded), then stop the reader processes."""
        for control in self._controls:
            control.send(None)
        for process in self._processes:
            process.wait()
        for receiver in self._receivers:
            receiver.join()
        for control in self._controls:
            control.close()


def _read_in_order(
    readers: BlockReaders, snapshot_id: str, blocks: list[dict[str, Any]], window: int
) -> Iterator[tuple[int, bytes]]:
    """Each block's index and verified data, in block order, read by the shared ``readers``.

    At most ``window`` reads of this snapshot are queued or in flight, so at most that many blocks wait in memory for
    their turn; the first failed read cancels the ones still queued.
    """
    remaining = iter(blocks)
    pending: deque[Future[tuple[int, bytes]]] = deque(
        readers.submit(snapshot_id, block) for block in islice(remaining, window)
    )
    try:
        while pending:
            done = pending.popleft().result()
            pending.extend(readers.submit(snapshot_id, block) for block in islice(remaining, 1))
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

    Every volume's reads go through one set of :class:`BlockReaders` with at most ``total`` GetSnapshotBlock calls in
    flight, taken in turn from each volume (each keeps ``concurrency`` queued or in flight and adds one as it writes
    one), so the wall time of N volumes is about that of the largest while N x ``concurrency`` stays within ``total``.
    Each volume is written and hashed in block order by its own pipeline; holes stay sparse.
    """

    def __init__(
        self,
        clients: AwsClients,
        region: str,
        case: Case,
        console: Console,
        *,
        volumes: int,
        concurrency: int = READ_CONCURRENCY,
        total: int = READ_TOTAL,
    ) -> None:
        self._ebs, self._case, self._window = clients.client("ebs", region), case, concurrency
        self.readers = BlockReaders(clients, region, in_flight=max(1, min(total, concurrency * volumes)))
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
        self.readers.close()
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
                for index, data in _read_in_order(self.readers, snapshot_id, blocks, self._window):
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
    clients: AwsClients,
    images: dict[str, str],
    case: Case,
    console: Console,
    *,
    region: str | None = None,
    concurrency: int = READ_CONCURRENCY,
    total: int = READ_TOTAL,
) -> dict[str, dict[str, Any]]:
    """Every completed snapshot of ``images`` (snapshot id -> image path, in ``region``, by default the clients')
    imaged at once by a :class:`RawImager`."""
    where = region or clients.default_region
    with RawImager(clients, where, case, console, volumes=len(images), concurrency=concurrency, total=total) as imager:
        for snapshot_id, rel_path in images.items():
            imager.start(snapshot_id, rel_path)
        return imager.results()


def write_raw_image(
    clients: AwsClients,
    snapshot_id: str,
    case: Case,
    rel_path: str,
    console: Console,
    *,
    concurrency: int = READ_CONCURRENCY,
) -> dict[str, Any]:
    """Write ``snapshot_id`` (in the clients' default region) as a raw disk image at ``rel_path``; holes stay sparse;
    return path, SHA-256, size.

    Blocks are read ``concurrency`` at a time and written (and hashed) in order as they arrive.
    """
    return write_raw_images(clients, {snapshot_id: rel_path}, case, console, concurrency=concurrency)[snapshot_id]
