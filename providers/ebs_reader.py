"""The reader process of AWS raw images (started by ``providers.aws.raw_image.BlockReaders``).

It lives outside ``providers.aws`` so that starting it imports only what a read needs (botocore, hashlib, the socket
protocol): importing that package imports the whole adapter, about a second of CPU for every reader.

The protocol on ``control``, plain values only (nothing of this project is unpickled on either side):

- the parent sends first ``(client arguments, threads, credentials)``, the arguments of botocore's
  ``create_client`` with ``config`` as ``Config`` keyword arguments; the reader makes its one client and answers
  ``READY``;
- ``(task, snapshot id, block index, block token)``: one GetSnapshotBlock, ``threads`` at a time, each answered as it
  ends with ``(task, request id, HTTP status, outcome, payload)``: outcome ``ok`` with the block's data (its
  checksum verified), ``checksum`` with the mismatch, the AWS error code with its message, or ``SDK_ERROR`` /
  ``READER_ERROR`` with the exception's name and text;
- ``(CREDENTIALS, access key, secret key, session token)``: later reads use a client with these;
- ``None``: the reads in flight end, then the process.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

READY = "ready"
CREDENTIALS = "credentials"
OK, CHECKSUM, SDK_ERROR, READER_ERROR = "ok", "checksum", "sdk-error", "reader-error"
Answer = tuple[int, str | None, int | None, str, Any]


def make_client(arguments: dict[str, Any], credentials: tuple[str, str, str | None]) -> Any:
    """A botocore client made from ``arguments`` (see the module's protocol) with these frozen credentials."""
    access_key, secret_key, token = credentials
    options = {**arguments, "config": Config(**arguments["config"])}
    return botocore.session.get_session().create_client(
        **options, aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=token
    )


def checksum_problem(snapshot_id: str, index: int, response: dict[str, Any], data: bytes) -> str | None:
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


def read_block(ebs: Any, task: int, snapshot_id: str, index: int, token: str) -> Answer:
    """One GetSnapshotBlock and its answer to the parent (see the module's protocol); never raises."""
    try:
        response = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
        data: bytes = response["BlockData"].read()  # the body streams: a broken connection fails here
    except ClientError as exc:
        meta, error = exc.response.get("ResponseMetadata", {}), exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        return task, meta.get("RequestId"), meta.get("HTTPStatusCode"), code, str(error.get("Message") or "")
    except BotoCoreError as exc:
        return task, None, None, SDK_ERROR, (type(exc).__name__, str(exc))
    except Exception as exc:  # noqa: BLE001 - unanswered, the parent would wait for this block
        return task, None, None, READER_ERROR, (type(exc).__name__, str(exc))
    meta = response.get("ResponseMetadata", {})
    request_id, status = meta.get("RequestId"), meta.get("HTTPStatusCode")
    problem = checksum_problem(snapshot_id, index, response, data)
    return (task, request_id, status, CHECKSUM, problem) if problem else (task, request_id, status, OK, data)


def reader_process(control: Connection) -> None:
    """Serve reads on ``control`` until it sends ``None`` (see the module's protocol)."""
    arguments, threads, credentials = control.recv()
    ebs, sending = make_client(arguments, credentials), threading.Lock()
    control.send(READY)

    def read(client: Any, task: int, snapshot_id: str, index: int, token: str) -> None:
        answer = read_block(client, task, snapshot_id, index, token)
        with sending:
            control.send(answer)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ebs-read") as pool:
        while (message := control.recv()) is not None:
            if message[0] == CREDENTIALS:
                ebs = make_client(arguments, message[1:])
            else:
                pool.submit(read, ebs, *message)
