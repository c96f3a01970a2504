"""The EBS direct read APIs (ListSnapshotBlocks, GetSnapshotBlock) served on 127.0.0.1 from a process of their own.

A real service answers from elsewhere: in its own process the sandbox costs the client's process nothing per read,
so a benchmark of concurrent reads measures the client, and readers in other processes reach it as they reach AWS
(``AWS_ENDPOINT_URL_EBS``). Each GetSnapshotBlock waits ``latency`` seconds while counted in flight; blocks, their
checksums, tokens and the head of their answer are stored as the sandbox registers them (precomputed). Every request
must carry a well-formed SigV4 Authorization (scope of this service, its day that of ``x-amz-date``, ``host`` and
``x-amz-date`` signed, and ``x-amz-security-token`` when sent), else it is refused as AWS refuses it. Refusals as
documented: a snapshot not completed, a wrong block token, a missing block or snapshot, a caller whose account does
not own the snapshot; and injected faults (:meth:`_State.apply` ``fault``): an error status, a header left out, the
connection closed before the answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cloudir.child import start_child

# A well-formed SigV4 Authorization of this service: access key, day, region, signed headers
_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([A-Za-z0-9]{1,128})/([0-9]{8})/([a-z0-9-]{1,32})/ebs/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]{1,1024}), Signature=[0-9a-f]{64}"
)
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_STATUS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_REFUSED_KEPT = 100  # the request lines of the last refused requests kept for the tests


@dataclass
class _Snapshot:
    account: str
    status: str
    volume_size: int  # GiB
    block_size: int
    blocks: dict[int, tuple[bytes, str, str]]  # index -> data, base64 SHA-256, block token
    heads: dict[int, bytes] = field(default_factory=dict)  # index -> its 200 answer's status line and headers

    def __post_init__(self) -> None:
        for index in self.blocks:
            self.prepare(index)

    def prepare(self, index: int) -> None:
        """Build the head of a block's answer (all but its request id) from its data and checksum."""
        data, checksum, _ = self.blocks[index]
        self.heads[index] = (
            f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\nx-amz-Data-Length: {len(data)}\r\n"
            f"x-amz-Checksum: {checksum}\r\nx-amz-Checksum-Algorithm: SHA256\r\n"
        ).encode()


@dataclass
class _State:
    """What the server holds: snapshots by (region, id), access keys' accounts, the latency model and its counters."""

    snapshots: dict[tuple[str, str], _Snapshot] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)  # access key -> account
    latency: float = 0.0
    barrier: asyncio.Barrier | None = None
    barrier_timeout: float = 30.0
    gate: asyncio.Event | None = None  # while set (closed), each read waits for it to open
    gate_timeout: float = 30.0
    in_flight: int = 0
    peak: int = 0
    window: list[float] = field(default_factory=list)  # monotonic: the first read's start, the last read's end
    read: list[str] = field(default_factory=list)  # the snapshot of every block served, in order
    cut: set[tuple[str, str, int]] = field(default_factory=set)  # blocks whose answer breaks off mid-body
    # block -> the faults its next reads get, one each: ("status", status, code), ("drop", header), ("close",),
    # ("length", body bytes, x-amz-Data-Length)
    faults: dict[tuple[str, str, int], list[tuple[Any, ...]]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # request lines of the last refused requests
    sdk_sends: int = 0  # GetSnapshotBlock requests that carry botocore's amz-sdk-invocation-id
    generation: int = 0  # counts resets: a read still in flight across one is not counted against the new state

    def apply(self, message: tuple[Any, ...]) -> Any:
        """One control message from the sandbox (see :class:`EbsDirectServer`); its answer."""
        command, *args = message
        if command == "reset":
            generation = self.generation + 1
            self.__init__()  # type: ignore[misc]
            self.generation = generation
        elif command == "snapshot":
            account, region, snapshot_id, status, volume_size, block_size, blocks = args
            self.snapshots[(region, snapshot_id)] = _Snapshot(account, status, volume_size, block_size, blocks)
        elif command == "status":
            region, snapshot_id, status = args
            self.snapshots[(region, snapshot_id)].status = status
        elif command == "tamper":
            region, snapshot_id, index = args
            data, _, token = self.snapshots[(region, snapshot_id)].blocks[index]
            self.snapshots[(region, snapshot_id)].blocks[index] = (data, block_checksum(data + b"tampered"), token)
            self.snapshots[(region, snapshot_id)].prepare(index)
        elif command == "cut":
            self.cut.add((args[0], args[1], args[2]))
        elif command == "fault":
            region, snapshot_id, index, *faults = args
            self.faults.setdefault((region, snapshot_id, index), []).extend(faults)
        elif command == "key":
            self.accounts[args[0]] = args[1]
        elif command == "latency":
            self.latency = args[0]
        elif command == "barrier":
            parties, self.barrier_timeout = args
            self.barrier = asyncio.Barrier(parties) if parties else None
        elif command == "gate":
            closed, self.gate_timeout = args
            if closed:
                self.gate = self.gate or asyncio.Event()
            elif self.gate is not None:
                self.gate.set()
                self.gate = None
        elif command == "clear-stats":
            self.peak, self.window, self.read, self.refused, self.sdk_sends = 0, [], [], [], 0
        return {
            "peak": self.peak,
            "window": list(self.window),
            "read": list(self.read),
            "refused": list(self.refused),
            "sdk_sends": self.sdk_sends,
            "cpu": time.process_time(),
        }


def block_checksum(data: bytes) -> str:
    """The base64 SHA-256 the EBS direct APIs send with a block."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


_Answer = tuple[int, bytes, bool]  # an answer's status, its bytes, and whether the connection closes after it
_NO_ANSWER = 0  # the status of a connection closed with no answer


def _reply(status: int, headers: dict[str, str], body: bytes) -> _Answer:
    """An answer with its request id (the connection stays open)."""
    lines = [f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in {"x-amzn-RequestId": str(uuid.uuid4()), **headers}.items()]
    return status, ("\r\n".join(lines) + "\r\n\r\n").encode() + body, False


def _error(status: int, code: str, message: str) -> _Answer:
    return _reply(
        status,
        {"x-amzn-ErrorType": code, "Content-Type": "application/json"},
        json.dumps({"Message": message}).encode(),
    )


def _signed(headers: dict[str, str]) -> re.Match[str] | _Answer:
    """A request's well-formed SigV4 Authorization (its access key, day, region, signed headers), or the refusal AWS
    answers without one."""
    authorization = headers.get("authorization")
    if authorization is None:
        return _error(403, "MissingAuthenticationTokenException", "the request is not signed (SigV4)")
    sigv4 = _SIGV4.fullmatch(authorization)
    amz_date = headers.get("x-amz-date", "")
    if sigv4 is None or not _AMZ_DATE.fullmatch(amz_date) or amz_date[:8] != sigv4.group(2):
        return _error(400, "IncompleteSignatureException", "the Authorization header is not a well-formed SigV4 one")
    signed = sigv4.group(4).split(";")
    required = {"host", "x-amz-date"} | ({"x-amz-security-token"} & set(headers))
    if signed != sorted(set(signed)) or not required <= set(signed) or not set(signed) <= set(headers):
        return _error(
            400, "IncompleteSignatureException", "SignedHeaders must list host, x-amz-date and the token sent"
        )
    return sigv4


class _Handler:
    def __init__(self, state: _State) -> None:
        self.state = state

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one keep-alive connection, request after request."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                if int(headers.get("content-length") or 0):
                    await reader.readexactly(int(headers["content-length"]))
                status, reply, close = await self.route(method, target, headers)
                if status not in {200, _NO_ANSWER}:
                    self.state.refused[:] = [*self.state.refused[1 - _REFUSED_KEPT :], f"{method} {target}"]
                writer.write(reply)
                await writer.drain()
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, target: str, headers: dict[str, str]) -> _Answer:
        """ListSnapshotBlocks (GET /snapshots/{id}/blocks) or GetSnapshotBlock (GET /snapshots/{id}/blocks/{index})."""
        url = urlsplit(target)
        parts, query = url.path.split("/"), parse_qs(url.query)
        if method != "GET" or len(parts) not in {4, 5} or parts[1] != "snapshots" or parts[3] != "blocks":
            return _error(400, "ValidationException", f"no EBS direct read at {method} {url.path}")
        if len(parts) == 5 and not await self._latency():
            return _error(400, "ValidationException", "the sandbox held this read past its timeout")
        credential = _signed(headers)
        if not isinstance(credential, re.Match):
            return credential
        region = credential.group(3)
        account = self.state.accounts.get(credential.group(1))
        snapshot = self.state.snapshots.get((region, parts[2]))
        if snapshot is None or account != snapshot.account:
            return _error(404, "ResourceNotFoundException", f"snapshot {parts[2]} not found")
        if snapshot.status != "completed":
            return _error(400, "ValidationException", f"snapshot {parts[2]} is {snapshot.status}, not completed")
        if len(parts) == 4:
            return self._list(snapshot, query)
        index = int(parts[4]) if parts[4].isdigit() else -1
        block = snapshot.blocks.get(index)
        if block is None:
            return _error(404, "ResourceNotFoundException", f"block {parts[4]} of {parts[2]} not found")
        data, _, token = block
        if query.get("blockToken") != [token]:
            return _error(400, "ValidationException", "The block token is not valid for this block")
        self.state.sdk_sends += "amz-sdk-invocation-id" in headers
        faults = self.state.faults.get((region, parts[2], index))
        if faults:
            return self._fault(faults.pop(0), snapshot, index)
        self.state.read.append(parts[2])
        head = snapshot.heads[index] + f"x-amzn-RequestId: {uuid.uuid4()}\r\n\r\n".encode()
        if (region, parts[2], index) in self.state.cut:
            return 200, head + data[: len(data) // 2], True  # the connection breaks with half the block sent
        return 200, head + data, False

    @staticmethod
    def _fault(fault: tuple[Any, ...], snapshot: _Snapshot, index: int) -> _Answer:
        """A block's answer with an injected fault: an error status, a header left out, a body of ``length`` bytes
        (the block repeated) with the lengths given, or no answer at all."""
        kind, *args = fault
        if kind == "status":
            return _error(args[0], args[1], f"injected {args[1]}")
        if kind == "close":
            return _NO_ANSWER, b"", True
        data, checksum, _ = snapshot.blocks[index]
        headers = {
            "x-amz-Data-Length": str(len(data)),
            "x-amz-Checksum": checksum,
            "x-amz-Checksum-Algorithm": "SHA256",
        }
        if kind == "length":
            body_length, data_length = args
            body = (data * (body_length // max(1, len(data)) + 1))[:body_length]
            return _reply(200, {**headers, "x-amz-Data-Length": str(data_length)}, body)
        headers.pop(args[0])
        return _reply(200, headers, data)

    @staticmethod
    def _list(snapshot: _Snapshot, query: dict[str, list[str]]) -> _Answer:
        limit = int(query.get("maxResults", ["10000"])[0])
        if not 100 <= limit <= 10000:
            return _error(400, "ValidationException", "maxResults must be between 100 and 10000")
        start = int(query.get("pageToken", query.get("startingBlockIndex", ["0"]))[0])
        indices = sorted(i for i in snapshot.blocks if i >= start)
        page = {
            "Blocks": [{"BlockIndex": i, "BlockToken": snapshot.blocks[i][2]} for i in indices[:limit]],
            "ExpiryTime": time.time() + 600,
            "VolumeSize": snapshot.volume_size,
            "BlockSize": snapshot.block_size,
        }
        if len(indices) > limit:
            page["NextToken"] = str(indices[limit])
        return _reply(200, {"Content-Type": "application/json"}, json.dumps(page).encode())

    async def _latency(self) -> bool:
        """One GetSnapshotBlock's round trip: counted in flight while it waits (for the gate, the barrier, then the
        latency); False when the gate stayed closed past its timeout."""
        state = self.state
        generation = state.generation
        state.in_flight += 1
        state.peak = max(state.peak, state.in_flight)
        state.window[:1] = state.window[:1] or [time.monotonic()]
        try:
            if state.gate is not None:
                try:
                    await asyncio.wait_for(state.gate.wait(), state.gate_timeout)
                except TimeoutError:
                    return False
            if state.barrier is not None:
                await asyncio.wait_for(state.barrier.wait(), state.barrier_timeout)
            if state.latency:
                await asyncio.sleep(state.latency)
            return True
        finally:
            if state.generation == generation:
                state.in_flight -= 1
                state.window[1:] = [time.monotonic()]


def serve(control: Connection) -> None:
    """The server process: listen on 127.0.0.1, send the port, then apply control messages until the pipe closes."""
    state = _State()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(_Handler(state).connection, "127.0.0.1", 0))
    control.send(server.sockets[0].getsockname()[1])

    def control_loop() -> None:
        try:
            while True:
                message = control.recv()
                control.send(asyncio.run_coroutine_threadsafe(_apply(state, message), loop).result())
        except EOFError:
            loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=control_loop, daemon=True).start()
    loop.run_forever()


async def _apply(state: _State, message: tuple[Any, ...]) -> Any:
    return state.apply(message)  # in the event loop's thread: no lock against the requests it serves


class EbsDirectServer:
    """The sandbox's handle on the server process: its URL and its control messages (one at a time, answered)."""

    def __init__(self) -> None:
        self._control, self._process = start_child(__name__, serve.__name__)
        self.url = f"http://127.0.0.1:{self._control.recv()}"
        self._lock = threading.Lock()

    def call(self, *message: Any) -> Any:
        """Send one control message; its answer (the read counters)."""
        with self._lock:
            self._control.send(message)
            return self._control.recv()


_SERVER: list[EbsDirectServer] = []  # one per process, started on first use


def ebs_direct_server() -> EbsDirectServer:
    """This process's EBS direct server (started once; it ends when this process closes its end of the pipe)."""
    if not _SERVER:
        _SERVER.append(EbsDirectServer())
    return _SERVER[0]
