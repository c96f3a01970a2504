"""Read an EBS snapshot through the EBS direct APIs into a sparse raw image, checking every block's checksum.

The GetSnapshotBlock calls run in a few reader processes, each with its own client and an event loop holding its
reads in flight on kept-open connections (a read costs its reader about 0.35 ms of CPU on the direct path of
:mod:`providers.ebs_reader`, 1.5 ms through botocore's client: one process would cap the reads however many wait on
the network); each block is verified against its checksum there, and sent back with the call's custody facts. This
process records every call (the clean reads of a snapshot as batches naming each block and request id, every other
call alone) and writes and hashes each volume in block order, consecutive blocks as one chunk.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.connection import Connection
from types import TracebackType
from typing import IO, Any

from botocore.exceptions import ClientError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from cloudir.case import ActionPool, Case, in_actions
from cloudir.child import start_child
from cloudir.custody import ApiCall, CallBatch, utc_time
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.textsafe import esc
from providers.aws.session import AwsClients, aws_errors
from providers.ebs_reader import CHECKSUM, CREDENTIALS, OK, READER_ERROR, READY, SDK_ERROR, Answer

GIB = 1024**3
# GetSnapshotBlock calls queued or in flight per volume: its reorder window, the most blocks it holds in memory.
READ_CONCURRENCY = 32
# Reads in flight across every volume at once: at 100 ms a read, about the 5,000 GetSnapshotBlock requests per
# second that EBS direct allows an account by default, so 16 volumes read as fast as one.
READ_TOTAL = 512
# Reader processes: one a core, at most 4 (beyond that the parent's hashing and writing is the bound).
READ_PROCESSES = max(1, min(4, os.cpu_count() or 1))
RESUME_HINT = "the image was discarded; re-run with --resume to read it again"
READER_MODULE = "providers.ebs_reader"  # the reader processes' entry module: it imports only what a read needs
READER_START_SECONDS = 120.0  # a reader not ready by then is an error (it imports botocore and makes one client)
# A read not answered by then has a reader that stopped answering: it is killed. botocore gives up on a read well
# before (10 attempts of at most 10 s to connect and 60 s to read, with its back-off between them).
READ_ANSWER_SECONDS = 1200.0
UNANSWERED = "unanswered: reader process ended"  # custody outcome of a read its reader did not answer
# A read whose reader process ended before answering is sent again to a live one, at most this many times.
READ_RESENDS = 1
# Clean reads of one snapshot recorded in custody as one entry (a CallBatch naming each block and request id).
CUSTODY_BATCH = 1024
# Consecutive blocks written and hashed as one chunk, at most this many bytes.
WRITE_CHUNK = 8 * 1024 * 1024


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


class ReaderProcessError(CloudirError):
    """A reader process could not start, or ended with reads of it unanswered."""


@dataclass
class _Reader:
    """One reader process: its socket, the tasks sent to it and not yet answered, its standard error (a file)."""

    number: int
    control: Connection
    process: subprocess.Popen[bytes]
    stderr: IO[bytes]
    pending: set[int] = field(default_factory=set)
    alive: bool = True
    unresponsive: bool = False  # killed by the parent: a read of it went unanswered for READ_ANSWER_SECONDS

    def end_reason(self) -> str:
        """How the process ended (it is killed if only its socket broke) and the last line it wrote."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self.unresponsive:
            how = f"stopped after it left a read unanswered for {READ_ANSWER_SECONDS:.0f} s"
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 4096))
        lines = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        said = f": {lines[-1].strip()}" if lines else ""
        return f"reader process {self.number} (pid {self.process.pid}) ended, {how}{said}"

    def stop(self) -> None:
        """Kill the process (it has not started, or another one could not) and release its files."""
        self.process.kill()
        self.process.wait()
        self.control.close()
        self.stderr.close()


@dataclass
class _Read:
    """One block read: its future, what to send, and how often it was sent again after its reader ended."""

    future: Future[tuple[int, bytes]]
    snapshot_id: str
    index: int
    token: str
    resends: int = 0
    sent: float = field(default_factory=time.time)


@dataclass
class _Batch:
    """The clean reads of one snapshot answered since its last custody entry."""

    first: float
    last: float = 0.0
    items: list[int] = field(default_factory=list)
    request_ids: list[str | None] = field(default_factory=list)
    size: int = 0

    def call(self, region: str) -> ApiCall:
        """The custody entry of these reads."""
        batch = CallBatch(
            tuple(self.items), tuple(self.request_ids), self.size, utc_time(self.first), utc_time(self.last)
        )
        return ApiCall("ebs", "GetSnapshotBlock", region, None, "ok", utc_time(self.first), 200, batch=batch)


class BlockReaders:
    """GetSnapshotBlock calls run by ``processes`` reader processes (:mod:`providers.ebs_reader`), ``in_flight`` at
    most at once in all.

    :meth:`submit` gives a future of one block's index and verified data; every call is recorded in the case of
    ``clients`` (also when its future was cancelled meanwhile): each one not answered cleanly as its answer arrives,
    the clean ones of a snapshot as one batch of at most CUSTODY_BATCH (see :meth:`flush`). A reader that does not start
    raises :class:`ReaderProcessError`; when one ends, every read it held is recorded as unanswered and sent again
    to a live reader (at most READ_RESENDS times each; then, or with none left, it fails), and later reads go to the
    others.
    """

    def __init__(self, clients: AwsClients, region: str, *, in_flight: int, processes: int | None = None) -> None:
        count = max(1, min(processes or READ_PROCESSES, in_flight))
        self.threads = -(-in_flight // count)
        self.spec = clients.spec("ebs", region, connections=self.threads)
        self._clients, self._credentials = clients, clients.frozen_credentials()
        self._reads: dict[int, _Read] = {}
        self._batches: dict[str, _Batch] = {}  # snapshot id -> its clean reads not yet recorded
        self._tasks, self._lock = itertools.count(), threading.Lock()
        self._closing = False  # close() began: the readers end, a read they held is not sent again
        self.readers: list[_Reader] = []
        for number in range(count):
            stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the reader
            control, process = start_child(READER_MODULE, "reader_process", stderr=stderr)
            self.readers.append(_Reader(number, control, process, stderr))
        try:
            for reader in self.readers:
                self._start(reader)
        except BaseException:
            for reader in self.readers:
                reader.stop()
            raise
        self._receivers = [
            threading.Thread(target=in_actions(self._receive), args=(reader,), name=f"ebs-receive-{reader.number}")
            for reader in self.readers
        ]
        for receiver in self._receivers:
            receiver.start()

    def _start(self, reader: _Reader) -> None:
        """Send the reader its client and wait until it says it is ready (at most READER_START_SECONDS)."""
        try:
            reader.control.send((self.spec.client_arguments(), self.threads, self._credentials))
            if not reader.control.poll(READER_START_SECONDS):
                raise ReaderProcessError(
                    f"reader process {reader.number} (pid {reader.process.pid}) did not start within "
                    f"{READER_START_SECONDS:.0f} s"
                )
            ready = reader.control.recv()
        except (EOFError, OSError):
            raise ReaderProcessError(f"{reader.end_reason()} before it could read", hint=RESUME_HINT) from None
        if ready != READY:
            raise ReaderProcessError(f"reader process {reader.number} answered {ready!r} instead of {READY!r}")

    def submit(self, snapshot_id: str, block: dict[str, Any]) -> Future[tuple[int, bytes]]:
        """Read one block (``BlockIndex``, ``BlockToken`` of ListSnapshotBlocks) of ``snapshot_id``."""
        read = _Read(Future(), snapshot_id, int(block["BlockIndex"]), block["BlockToken"])
        credentials = self._clients.frozen_credentials()
        with self._lock:
            if credentials != self._credentials:
                self._credentials = credentials
                for reader in self.readers:
                    self._send(reader, (CREDENTIALS, *credentials))
            sent = self._dispatch(read)
        if not sent:
            read.future.set_exception(
                ReaderProcessError(f"block {read.index} of {snapshot_id}: every reader process ended")
            )
        return read.future

    def _dispatch(self, read: _Read) -> bool:
        """Send ``read`` to a live reader, in turn (call holding the lock); False when none is left."""
        task = next(self._tasks)
        live = [reader for reader in self.readers if reader.alive]
        for reader in live[task % len(live) :] + live[: task % len(live)] if live else []:
            if self._send(reader, (task, read.snapshot_id, read.index, read.token)):
                reader.pending.add(task)
                self._reads[task] = read
                return True
        return False

    @staticmethod
    def _send(reader: _Reader, message: Any) -> bool:
        """Send to a live reader; False when its socket is broken (its receiver then fails what it held)."""
        if reader.alive:
            try:
                reader.control.send(message)
            except OSError:
                reader.alive = False
        return reader.alive

    def _receive(self, reader: _Reader) -> None:
        """Answer each read as the reader sends it; when the reader ends, fail every read it still held."""
        while True:
            try:
                answer: Answer = reader.control.recv()
            except (EOFError, OSError):
                break
            task, _, _, outcome, payload, _ = answer
            with self._lock:
                reader.pending.discard(task)
                read = self._reads.pop(task)
            self._record(read, answer)
            if not read.future.set_running_or_notify_cancel():
                continue
            if outcome == OK:
                read.future.set_result((read.index, payload))
            else:
                read.future.set_exception(_failure(read.snapshot_id, read.index, answer))
        with self._lock:
            reader.alive = False
            held = [self._reads.pop(task) for task in sorted(reader.pending)]
            reader.pending.clear()
        if not held:
            return
        reason = reader.end_reason()
        for read in held:
            self._clients.record(ApiCall("ebs", "GetSnapshotBlock", self.spec.region, None, UNANSWERED))
            if read.future.cancelled():
                continue
            with self._lock:
                if not self._closing and read.resends < READ_RESENDS:
                    read.resends += 1
                    if self._dispatch(read):
                        continue
            if read.future.set_running_or_notify_cancel():
                read.future.set_exception(
                    ReaderProcessError(
                        f"block {read.index} of {read.snapshot_id} was not read: {reason}", hint=RESUME_HINT
                    )
                )

    def _record(self, read: _Read, answer: Answer) -> None:
        """Record one answered read: a clean one in its snapshot's batch (recorded when full), any other alone, with
        the direct sends of it that were not taken."""
        _, request_id, status, outcome, payload, resent = answer
        if outcome == OK and status == 200 and not resent:
            with self._lock:
                batch = self._batches.setdefault(read.snapshot_id, _Batch(read.sent))
                batch.first = min(batch.first, read.sent)
                batch.items.append(read.index)
                batch.request_ids.append(request_id)
                batch.size += len(payload)
                batch.last = time.time()
                full = len(batch.items) >= CUSTODY_BATCH
            if full:
                self.flush(read.snapshot_id)
            return
        for resent_id, resent_status, why in resent:
            self._clients.record(
                ApiCall("ebs", "GetSnapshotBlock", self.spec.region, resent_id, why, http_status=resent_status)
            )
        outcome_in_custody = _custody_outcome(outcome, payload)
        self._clients.record(
            ApiCall("ebs", "GetSnapshotBlock", self.spec.region, request_id, outcome_in_custody, http_status=status)
        )

    def flush(self, snapshot_id: str) -> None:
        """Record the clean reads of ``snapshot_id`` not recorded yet, as one entry."""
        with self._lock:
            batch = self._batches.pop(snapshot_id, None)
        if batch is not None:
            self._clients.record(batch.call(self.spec.region))

    def stop_reader_of(self, future: Future[tuple[int, bytes]]) -> None:
        """Kill the reader holding ``future``'s read (it stopped answering): its receiver then fails what it held."""
        with self._lock:
            held = [
                reader
                for reader in self.readers
                for task in reader.pending
                if task in self._reads and self._reads[task].future is future
            ]
        for reader in held:
            reader.unresponsive = True
            reader.process.kill()

    def close(self) -> None:
        """Let the reads in flight end (each recorded), then stop the reader processes (one that does not end within
        READ_ANSWER_SECONDS is killed)."""
        with self._lock:
            self._closing = True
        for reader in self.readers:
            self._send(reader, None)
        for reader in self.readers:
            try:
                reader.process.wait(timeout=READ_ANSWER_SECONDS)
            except subprocess.TimeoutExpired:  # it stopped answering: what it held is recorded as unanswered
                reader.unresponsive = True
                reader.process.kill()
                reader.process.wait()
        for receiver in self._receivers:
            receiver.join()
        for snapshot_id in list(self._batches):
            self.flush(snapshot_id)
        for reader in self.readers:
            reader.control.close()
            reader.stderr.close()


def _custody_outcome(outcome: str, payload: Any) -> str:
    """A read's outcome in custody: ``ok`` when AWS answered the block (even with a wrong checksum), else the AWS
    error code or the exception's name."""
    if outcome in {OK, CHECKSUM}:
        return "ok"
    return str(payload[0]) if outcome in {SDK_ERROR, READER_ERROR} else outcome


def _failure(snapshot_id: str, index: int, answer: Answer) -> Exception:
    """The exception of a read not answered ``ok`` (see :mod:`providers.ebs_reader`)."""
    _, request_id, status, outcome, payload, _ = answer
    if outcome == CHECKSUM:
        return BlockChecksumError(payload, hint=RESUME_HINT)
    if outcome == SDK_ERROR:
        return CloudAccessError(f"AWS SDK error reading block {index} of {snapshot_id}: {payload[0]}: {payload[1]}")
    if outcome == READER_ERROR:
        return CloudirError(f"block {index} of {snapshot_id}: the reader failed: {payload[0]}: {payload[1]}")
    response: Any = {"Error": {"Code": outcome, "Message": payload}, "ResponseMetadata": {"RequestId": request_id}}
    response["ResponseMetadata"]["HTTPStatusCode"] = status
    return ClientError(response, "GetSnapshotBlock")


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
            first = pending.popleft()
            while True:
                try:
                    done = first.result(timeout=READ_ANSWER_SECONDS)
                    break
                except TimeoutError:
                    readers.stop_reader_of(first)  # its receiver sends the read again or fails it
            pending.extend(readers.submit(snapshot_id, block) for block in islice(remaining, 1))
            yield done
    finally:
        for future in pending:
            future.cancel()
        readers.flush(snapshot_id)


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
        self._pipelines = ActionPool(max_workers=max(1, volumes), thread_name_prefix="ebs-image")
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
                position = 0  # where the chunk being gathered ends
                chunk: list[bytes] = []
                for index, data in _read_in_order(self.readers, snapshot_id, blocks, self._window):
                    offset = index * block_size
                    if chunk and (offset > position or len(chunk) * block_size >= WRITE_CHUNK):
                        writer.write(b"".join(chunk))
                        chunk.clear()
                        self._progress.update(task, completed=writer.size)
                    if offset > position:
                        writer.write_zeros(offset - position)
                    chunk.append(data)
                    position = offset + len(data)
                writer.write(b"".join(chunk))
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
