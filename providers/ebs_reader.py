"""The reader process of AWS raw images (started by ``providers.aws.raw_image.BlockReaders``).

It lives outside ``providers.aws`` so that starting it imports only what a read needs (botocore, hashlib, the socket
protocol): importing that package imports the whole adapter, about a second of CPU for every reader.

The protocol on ``control``, plain values only (nothing of this project is unpickled on either side):

- the parent sends first ``(client arguments, threads, credentials)``, the arguments of botocore's
  ``create_client`` with ``config`` as ``Config`` keyword arguments; the reader makes its one client and answers
  ``READY``;
- ``(task, snapshot id, block index, block token)``: one GetSnapshotBlock, ``threads`` at a time, each answered as it
  ends with ``(task, request id, HTTP status, outcome, payload, re-sent)``: outcome ``ok`` with the block's data (its
  checksum verified), ``checksum`` with the mismatch, the AWS error code with its message, or ``SDK_ERROR`` /
  ``READER_ERROR`` with the exception's name and text; ``re-sent``: the direct sends of this read that were not a
  clean answer, each ``(request id, HTTP status, why)``, before it was sent again through botocore;
- ``(CREDENTIALS, access key, secret key, session token)``: later reads use a client with these;
- ``None``: the reads in flight end, then the process.

The hot path (:class:`DirectReads`): every read, the first ones too, is a task of the reader's event loop (one
thread for all its reads in flight: a thread each cost the reader several times the read's own CPU in switches),
sent by this module over a kept-open connection to the endpoint botocore's rules resolve (the client builds and
signs one probe request, stopped before it is sent): the documented request (``GET
/snapshots/{snapshotId}/blocks/{blockIndex}?blockToken=``) from the botocore service model, its parameters checked
by botocore's ``ParamValidator`` and the model's patterns, signed with SigV4 (a signing key cached per day). Only a
clean answer is taken: status 200, ``Content-Length`` equal to ``x-amz-Data-Length`` and at most the 512 KiB block
size (else its body is not read), a SHA-256 ``x-amz-Checksum`` that the data matches. Anything else (an error
status, throttling, a connection error, a missing or odd header, a bad checksum) is sent again through the botocore
client (in a thread of the loop's executor), whose error parsing and retries decide.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import get_cert_path
from botocore.validate import ParamValidator

READY = "ready"
CREDENTIALS = "credentials"
OK, CHECKSUM, SDK_ERROR, READER_ERROR = "ok", "checksum", "sdk-error", "reader-error"
Resent = tuple[str | None, int | None, str]  # a direct send not taken: its request id, HTTP status, why
Answer = tuple[int, str | None, int | None, str, Any, tuple[Resent, ...]]
OPERATION = "GetSnapshotBlock"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,63}")  # an AWS error code as x-amzn-ErrorType starts with it
_MAX_HEADERS = 64  # an answer with more header lines is not clean
BLOCK_BYTES = 512 * 1024  # EBS direct's block size (BlockSize of ListSnapshotBlocks): a longer answer is not clean
# A valid request the reader's client builds (and does not send) to learn where botocore sends GetSnapshotBlock.
_PROBE = {"SnapshotId": "snap-0", "BlockIndex": 0, "BlockToken": "probe"}


def make_client(arguments: dict[str, Any], credentials: tuple[str, str, str | None]) -> Any:
    """A botocore client made from ``arguments`` (see the module's protocol) with these frozen credentials."""
    access_key, secret_key, token = credentials
    options = {**arguments, "config": Config(**arguments["config"])}
    return botocore.session.get_session().create_client(
        **options, aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=token
    )


def block_checksum(data: bytes) -> str:
    """A block's checksum as EBS sends it (``x-amz-Checksum``): its SHA-256, base64."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def checksum_problem(snapshot_id: str, index: int, response: dict[str, Any], data: bytes) -> str | None:
    """Why a block does not match the checksum EBS sent with it (None when it does)."""
    algorithm = response.get("ChecksumAlgorithm") or "SHA256"
    if algorithm != "SHA256":
        return f"block {index} of {snapshot_id}: unsupported checksum algorithm {algorithm}"
    actual = block_checksum(data)
    if response.get("Checksum") != actual:
        return (
            f"block {index} of {snapshot_id}: checksum mismatch (EBS sent {response.get('Checksum')}, "
            f"data hashes to {actual})"
        )
    return None


def sigv4_signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The SigV4 signing key of a day (``YYYYMMDD``): the same for every request of that day."""
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class NotClean(Exception):  # noqa: N818 - not an error of the read: the botocore client sends it again
    """A direct send whose answer is not a clean 200: why, and the request id and status when there was an answer."""

    def __init__(self, why: str, request_id: str | None = None, status: int | None = None) -> None:
        super().__init__(why)
        self.resent: Resent = (request_id, status, why)


_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass
class DirectReads:
    """GetSnapshotBlock sent by this module where botocore would send it (see the module's docstring).

    ``endpoint`` is the URL botocore resolved for GetSnapshotBlock (without path); ``credentials`` the frozen ones
    (access key, secret key, session token) of the reader's client.
    """

    endpoint: str
    region: str
    credentials: tuple[str, str, str | None]
    model: Any  # botocore's OperationModel of GetSnapshotBlock
    user_agent: str = "cloudir"
    _keys: dict[str, bytes] = field(default_factory=dict)  # day -> signing key
    _idle: list[_Stream] = field(default_factory=list)  # kept-open connections no read uses now

    def __post_init__(self) -> None:
        url = urlsplit(self.endpoint)
        self._https = url.scheme == "https"
        default_port = 443 if self._https else 80
        hostname = url.hostname or ""
        self._address = (hostname, url.port or default_port)
        self.host = hostname if url.port in {None, default_port} else f"{hostname}:{url.port}"
        self._service = self.model.service_model.signing_name
        members = self.model.input_shape.members
        self._patterns = {
            name: re.compile(shape.metadata["pattern"])
            for name, shape in members.items()
            if "pattern" in shape.metadata
        }
        self._validator = ParamValidator()

    def request(self, snapshot_id: str, index: int, token: str) -> tuple[str, str] | None:
        """The path and query of this read, or None when a parameter is not one the model allows (botocore then
        validates, encodes and sends it)."""
        params = {"SnapshotId": snapshot_id, "BlockIndex": index, "BlockToken": token}
        if self._validator.validate(params, self.model.input_shape).has_errors():
            return None
        if not all(pattern.fullmatch(str(params[name])) for name, pattern in self._patterns.items()):
            return None
        path = self.model.http["requestUri"].replace("{snapshotId}", snapshot_id)
        return path.replace("{blockIndex}", str(index)), "blockToken=" + quote(token, safe="-_.~")

    def sign(self, path: str, query: str, amz_date: str) -> dict[str, str]:
        """The headers of a GET of ``path?query`` at ``amz_date`` (``YYYYMMDDTHHMMSSZ``), its SigV4 Authorization
        among them (botocore's SigV4Auth signs the same request alike)."""
        access_key, secret_key, token = self.credentials
        headers = {"host": self.host, "x-amz-date": amz_date}
        if token:
            headers["x-amz-security-token"] = " ".join(token.split())
        signed = ";".join(headers)
        canonical = "\n".join(
            ["GET", quote(path, safe="/~"), query, *(f"{k}:{v}" for k, v in headers.items()), "", signed, _EMPTY_SHA256]
        )
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self._service}/aws4_request"
        string_to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = self._keys.get(day)
        if key is None:
            key = self._keys[day] = sigv4_signing_key(secret_key, day, self.region, self._service)
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        )
        return headers

    async def read(self, path: str, query: str) -> tuple[str | None, bytes, str]:
        """Send one read (in the reader's event loop); its request id, data and checksum, or :class:`NotClean`."""
        headers = self.sign(path, query, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        lines = [f"GET {path}?{query} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        request = ("\r\n".join([*lines, f"user-agent: {self.user_agent}", "", ""])).encode("latin-1")
        stream: _Stream | None = self._idle.pop() if self._idle else None
        try:
            if stream is None:
                async with asyncio.timeout(10):  # botocore's connect timeout
                    stream = await self._connect()
            async with asyncio.timeout(60):  # and its read timeout
                stream[1].write(request)
                status, answer = _answer_head(await stream[0].readuntil(b"\r\n\r\n"))
                length = _body_length(status, answer)
                data = await stream[0].readexactly(length) if length is not None else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            self._drop(stream)
            raise NotClean("ConnectionError") from None
        except (OSError, ValueError, TimeoutError, asyncio.LimitOverrunError) as exc:
            self._drop(stream)
            raise NotClean(type(exc).__name__) from None
        request_id = answer.get("x-amzn-requestid")
        if answer.get("connection", "").lower() == "close" or length is None:
            self._drop(stream)  # its body was not read: the connection is not reused
        else:
            self._idle.append(stream)
        if status != 200:
            code = _ERROR_CODE.match(answer.get("x-amzn-errortype", ""))
            raise NotClean(code.group() if code else "UnknownError", request_id, status)
        if length is None:
            raise NotClean("MalformedResponse", request_id, status)
        if answer.get("x-amz-checksum-algorithm") != "SHA256" or "x-amz-checksum" not in answer:
            raise NotClean("MalformedResponse", request_id, status)
        checksum = answer["x-amz-checksum"]
        if block_checksum(data) != checksum:
            raise NotClean("ChecksumMismatch", request_id, status)
        return request_id, data, checksum

    async def _connect(self) -> _Stream:
        if not self._https:
            return await asyncio.open_connection(*self._address)
        context = ssl.create_default_context(cafile=get_cert_path(True))
        return await asyncio.open_connection(*self._address, ssl=context, server_hostname=self._address[0])

    @staticmethod
    def _drop(stream: _Stream | None) -> None:
        if stream is not None:
            stream[1].close()

    async def close(self) -> None:
        """Close the kept-open connections (in the event loop that opened them)."""
        while self._idle:
            writer = self._idle.pop()[1]
            writer.close()
            await writer.wait_closed()


def _body_length(status: int, answer: dict[str, str]) -> int | None:
    """The bytes of an answer's body to read: a 200's only when its ``Content-Length`` equals ``x-amz-Data-Length``
    and is at most a block; an error's up to 64 KiB; else None (the body is not read)."""
    length = answer.get("content-length", "")
    if not length.isdigit():
        return None
    if status != 200:
        return int(length) if int(length) <= 65536 else None
    if answer.get("x-amz-data-length") != length or int(length) > BLOCK_BYTES:
        return None
    return int(length)


def _answer_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers (lower-case names) of an answer's head; ValueError when it is not HTTP/1.1."""
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    version, status, _ = (status_line + " ").split(" ", 2)
    if version != "HTTP/1.1" or not status.isdigit():
        raise ValueError("not an HTTP/1.1 answer")
    if len(lines) > _MAX_HEADERS:
        raise ValueError("too many header lines")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers


def read_block(ebs: Any, task: int, snapshot_id: str, index: int, token: str) -> Answer:
    """One GetSnapshotBlock through the botocore client and its answer to the parent (see the module's protocol);
    never raises."""
    try:
        response = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
        data: bytes = response["BlockData"].read()  # the body streams: a broken connection fails here
    except ClientError as exc:
        meta, error = exc.response.get("ResponseMetadata", {}), exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        return task, meta.get("RequestId"), meta.get("HTTPStatusCode"), code, str(error.get("Message") or ""), ()
    except BotoCoreError as exc:
        return task, None, None, SDK_ERROR, (type(exc).__name__, str(exc)), ()
    except Exception as exc:  # noqa: BLE001 - unanswered, the parent would wait for this block
        return task, None, None, READER_ERROR, (type(exc).__name__, str(exc)), ()
    meta = response.get("ResponseMetadata", {})
    request_id, status = meta.get("RequestId"), meta.get("HTTPStatusCode")
    problem = checksum_problem(snapshot_id, index, response, data)
    return (task, request_id, status, CHECKSUM, problem, ()) if problem else (task, request_id, status, OK, data, ())


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Resolved(Exception):  # noqa: N818 - not an error: it stops the probe before it is sent
    """The request botocore built for the probe (endpoint resolved, signed): it is never sent."""

    def __init__(self, request: Any) -> None:
        super().__init__(request.url)
        self.request = request


def _stop_probe(request: Any, **_: Any) -> None:
    raise _Resolved(request)


class Reader:
    """A reader's client and its direct path, which sends every read (the first ones too) where botocore would."""

    def __init__(self, arguments: dict[str, Any], credentials: tuple[str, str, str | None]) -> None:
        self.ebs, self.credentials = make_client(arguments, credentials), credentials
        self.direct = self._resolve()

    def _resolve(self) -> DirectReads | None:
        """The direct path, at the endpoint botocore's rules resolve for GetSnapshotBlock: a probe request is built
        and signed by the client and stopped before it is sent (None when that fails: every read goes through
        botocore)."""
        event = f"before-send.ebs.{OPERATION}"
        self.ebs.meta.events.register_first(event, _stop_probe)
        try:
            self.ebs.get_snapshot_block(**_PROBE)
        except _Resolved as resolved:
            url, headers = urlsplit(resolved.request.url), resolved.request.headers
            meta = self.ebs.meta
            return DirectReads(
                f"{url.scheme}://{url.netloc}",
                meta.region_name,
                self.credentials,
                meta.service_model.operation_model(OPERATION),
                _text(headers.get("User-Agent", "cloudir")),
            )
        except Exception:  # noqa: BLE001 - no direct path: botocore reads every block, as it decides
            return None
        finally:
            self.ebs.meta.events.unregister(event, _stop_probe)
        return None

    async def read(self, task: int, snapshot_id: str, index: int, token: str) -> Answer:
        """One read: direct when it can be, else (or when its answer is not clean) through botocore in a thread of
        the event loop's executor; never raises."""
        direct = self.direct
        request = direct.request(snapshot_id, index, token) if direct is not None else None
        resent: tuple[Resent, ...] = ()
        try:
            if direct is not None and request is not None:
                request_id, data, _ = await direct.read(*request)
                return task, request_id, 200, OK, data, ()
        except NotClean as not_clean:
            resent = (not_clean.resent,)
        except Exception as exc:  # noqa: BLE001 - unanswered, the parent would wait for this block
            return task, None, None, READER_ERROR, (type(exc).__name__, str(exc)), ()
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(None, read_block, self.ebs, task, snapshot_id, index, token)
        return (*answer[:5], resent)


def reader_process(control: Connection) -> None:
    """Serve reads on ``control`` until it sends ``None`` (see the module's protocol)."""
    arguments, threads, credentials = control.recv()
    reader = Reader(arguments, credentials)
    control.send(READY)
    asyncio.run(_serve(control, arguments, threads, reader))


async def _serve(control: Connection, arguments: dict[str, Any], threads: int, reader: Reader) -> None:
    """The reads, each a task of this event loop, ``threads`` at most at once (the direct ones on kept-open
    connections, in this one thread; botocore's in a pool of ``threads`` threads)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ebs-read"))
    messages: asyncio.Queue[Any] = asyncio.Queue()

    def receive() -> None:
        try:
            while control.poll():
                messages.put_nowait(control.recv())
        except (EOFError, OSError):
            messages.put_nowait(None)

    in_flight = asyncio.Semaphore(threads)  # the parent's bound on this reader's reads at once

    async def read(client: Reader, message: tuple[int, str, int, str]) -> None:
        async with in_flight:
            answer = await client.read(*message)
        control.send(answer)

    tasks: set[asyncio.Task[None]] = set()
    loop.add_reader(control.fileno(), receive)
    while (message := await messages.get()) is not None:
        if message[0] == CREDENTIALS:
            reader = Reader(arguments, message[1:])
        else:
            task = asyncio.create_task(read(reader, message))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    loop.remove_reader(control.fileno())
    await asyncio.gather(*tasks)
