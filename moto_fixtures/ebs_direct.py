"""The EBS direct read APIs (ListSnapshotBlocks, GetSnapshotBlock) served on 127.0.0.1 from a process of their own.

A real service answers from elsewhere: in its own process the sandbox costs the client's process nothing per read,
so a benchmark of concurrent reads measures the client, and readers in other processes reach it as they reach AWS
(``AWS_ENDPOINT_URL_EBS``). Each GetSnapshotBlock waits ``latency`` seconds while counted in flight; blocks, their
checksums and tokens are stored as the sandbox registers them (precomputed), answered without parsing beyond the
request line. Refusals as documented: a snapshot not completed, a wrong block token, a missing block or snapshot, a
caller whose account does not own the snapshot.
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

_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/")  # access key and region of a SigV4 request
_STATUS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error"}


@dataclass
class _Snapshot:
    account: str
    status: str
    volume_size: int  # GiB
    block_size: int
    blocks: dict[int, tuple[bytes, str, str]]  # index -> data, base64 SHA-256, block token


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
        elif command == "cut":
            self.cut.add((args[0], args[1], args[2]))
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
            self.peak, self.window, self.read = 0, [], []
        return {"peak": self.peak, "window": list(self.window), "read": list(self.read)}


_CUT = "cloudir-cut"  # between answer and connection only: never sent


def block_checksum(data: bytes) -> str:
    """The base64 SHA-256 the EBS direct APIs send with a block."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"x-amzn-ErrorType": code, "Content-Type": "application/json"},
        json.dumps({"Message": message}).encode(),
    )


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
                status, extra, body = await self.answer(method, target, headers)
                cut = extra.pop(_CUT, None) is not None
                reply = [f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}", f"Content-Length: {len(body)}"]
                reply += [f"{k}: {v}" for k, v in {"x-amzn-RequestId": str(uuid.uuid4()), **extra}.items()]
                writer.write(("\r\n".join(reply) + "\r\n\r\n").encode() + (body[: len(body) // 2] if cut else body))
                await writer.drain()
                if cut:
                    return  # the connection breaks with half the block sent
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """ListSnapshotBlocks (GET /snapshots/{id}/blocks) or GetSnapshotBlock (GET /snapshots/{id}/blocks/{index})."""
        url = urlsplit(target)
        parts, query = url.path.split("/"), parse_qs(url.query)
        if method != "GET" or len(parts) not in {4, 5} or parts[1] != "snapshots" or parts[3] != "blocks":
            return _error(400, "ValidationException", f"no EBS direct read at {method} {url.path}")
        if len(parts) == 5 and not await self._latency():
            return _error(400, "ValidationException", "the sandbox held this read past its timeout")
        credential = _CREDENTIAL.search(headers.get("authorization", ""))
        if credential is None:
            return _error(403, "AccessDeniedException", "the request is not signed (SigV4)")
        account = self.state.accounts.get(credential.group(1))
        snapshot = self.state.snapshots.get((credential.group(2), parts[2]))
        if snapshot is None or account != snapshot.account:
            return _error(404, "ResourceNotFoundException", f"snapshot {parts[2]} not found")
        if snapshot.status != "completed":
            return _error(400, "ValidationException", f"snapshot {parts[2]} is {snapshot.status}, not completed")
        if len(parts) == 4:
            return self._list(snapshot, query)
        block = snapshot.blocks.get(int(parts[4])) if parts[4].isdigit() else None
        if block is None:
            return _error(404, "ResourceNotFoundException", f"block {parts[4]} of {parts[2]} not found")
        data, checksum, token = block
        if query.get("blockToken") != [token]:
            return _error(400, "ValidationException", "The block token is not valid for this block")
        self.state.read.append(parts[2])
        headers = {
            "x-amz-Data-Length": str(len(data)),
            "x-amz-Checksum": checksum,
            "x-amz-Checksum-Algorithm": "SHA256",
        }
        if (credential.group(2), parts[2], int(parts[4])) in self.state.cut:
            headers[_CUT] = ""
        return 200, headers, data

    @staticmethod
    def _list(snapshot: _Snapshot, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
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
        return 200, {"Content-Type": "application/json"}, json.dumps(page).encode()

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
