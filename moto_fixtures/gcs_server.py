"""A fake of the Cloud Storage JSON API for write-once seal copies, served like the storage emulator (HTTP, 127.0.0.1).

It answers what google-cloud-storage sends (with ``STORAGE_EMULATOR_HOST`` pointing at it) for ``buckets.get``,
``objects.insert`` (``uploadType=media`` or ``multipart``), ``objects.list`` (``versions``), ``objects.get``
(metadata, or ``alt=media``), and ``objects.delete``. Every request is first held to the storage v1 discovery
document (path, query parameters and their types, the multipart upload's JSON metadata against ``Object``; see
:mod:`moto_fixtures.gcp_contract`) and every JSON answer to its documented response schema; refusals are in the
JSON API's error format (``errors[]`` with domain and reason).
A bucket may carry a ``retentionPolicy`` (``retentionPeriod`` seconds, ``effectiveTime``, ``isLocked``); as in
GCS, an object younger than the retention period cannot be deleted or overwritten (403 retentionPolicyNotMet,
"... is subject to bucket's retention policy ..."), and ``ifGenerationMatch=0`` on an existing object answers
412 conditionNotMet. One object name takes one write (create, overwrite or delete) a second: another within the
second answers 429 rateLimitExceeded, as GCS does.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import google_crc32c

from moto_fixtures.gcp_contract import Contract, ContractError, contract, error_body, raise_refusals
from moto_fixtures.local_http import LocalService, Response

UPLOAD_TYPES = ("media", "multipart")  # resumable uploads are not served by this fake


def _rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(status: int, reason: str, message: str) -> Response:
    body = error_body("storage", status, reason, message)
    return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(body).encode()


@dataclass
class StoredObject:
    """One generation of an object."""

    name: str
    data: bytes
    generation: int
    created: dt.datetime
    content_type: str


@dataclass
class Bucket:
    """A bucket: its retention policy and its objects' generations (live ones only; none can be overwritten)."""

    name: str
    retention_seconds: int | None
    locked: bool
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    objects: dict[str, StoredObject] = field(default_factory=dict)
    mutated: dict[str, float] = field(default_factory=dict)  # object name -> when it was last written (by the clock)

    def held_until(self, obj: StoredObject) -> dt.datetime | None:
        """When the object leaves the retention period (None without a policy)."""
        if self.retention_seconds is None:
            return None
        return obj.created + dt.timedelta(seconds=self.retention_seconds)


class FakeGcs(LocalService):
    """Buckets and objects served over HTTP on 127.0.0.1 (use as a context manager)."""

    name = "fake-gcs"

    def __init__(self) -> None:
        super().__init__()
        self.buckets: dict[str, Bucket] = {}
        self.requests: list[tuple[str, str]] = []
        # what the discovery document refused, one line a request; any left when the fake closes fail the code that
        # opened it (the test or the demo), unless a test expected them (gcp_contract.expecting_refusals)
        self.refusals: list[str] = []
        self._generations = itertools.count(1_700_000_000_000_001)
        self.clock: Callable[[], float] = time.monotonic  # what the per-object write rate is counted by
        # Every request is held to the storage v1 discovery document first (None: no contract check, for a test
        # that shows what a lenient fake would let through).
        self.contract: Contract | None = contract(("storage",))

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if exc[0] is None:  # an exception already on its way says more
            raise_refusals("the Cloud Storage fake", self.refusals)  # see gcp_contract.expecting_refusals

    @property
    def host(self) -> str:
        """What ``STORAGE_EMULATOR_HOST`` is set to."""
        return self.base_url

    def failure(self, exc: Exception) -> Response:
        """A fake bug, in the JSON API's error envelope."""
        return _error(500, "backendError", f"{type(exc).__name__}: {exc}")

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]:
        """GCS names every response with an upload id."""
        return {"X-GUploader-UploadID": uuid.uuid4().hex}

    def add_bucket(self, name: str, *, retention_seconds: int | None, locked: bool) -> None:
        """Create a bucket, with a retention policy (locked or not) or none."""
        with self._lock:
            self.buckets[name] = Bucket(name, retention_seconds, locked)

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request: held to the discovery document, then served; a JSON answer held to its schema."""
        with self._lock:
            self.requests.append((method, urlsplit(raw_path).path))
            if self.contract is None:
                return self._serve(method, raw_path, headers, body)
            try:
                documented = self.contract.check(method, raw_path, _metadata(raw_path, headers, body))
            except ContractError as exc:
                self.refusals.append(f"{method} {urlsplit(raw_path).path}: {exc.message}")
                answer = error_body("storage", exc.status, exc.reason, exc.message, field=exc.field)
                return exc.status, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps(answer).encode()
            status, response_headers, payload = self._serve(method, raw_path, headers, body)
            if status == 200 and parse_qs(urlsplit(raw_path).query).get("alt") != ["media"]:  # media is the object
                try:
                    self.contract.check_response(documented, json.loads(payload))
                except ContractError as exc:  # the fake's bug: answered 500
                    raise RuntimeError(
                        f"the fake's answer is not a documented {documented.id} response: {exc}"
                    ) from None
            return status, response_headers, payload

    def _serve(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        url = urlsplit(raw_path)
        query = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        parts = url.path.split("/")
        if url.path.startswith("/upload/storage/v1/b/") and method == "POST" and parts[6:] == ["o"]:
            return self._insert(parts[5], query, headers, body)
        if url.path.startswith("/download/storage/v1/b/") and len(parts) >= 8 and method == "GET":
            return self._media(parts[5], unquote("/".join(parts[7:])), query)
        if not url.path.startswith("/storage/v1/b/") or len(parts) < 5:
            return _error(404, "notFound", f"Not Found: {url.path}")
        bucket_name = parts[4]
        if len(parts) == 5 and method == "GET":
            return self._bucket(bucket_name)
        if parts[5:] == ["o"] and method == "GET":
            return self._list(bucket_name, query)
        if len(parts) >= 7 and parts[5] == "o":
            name = unquote("/".join(parts[6:]))
            if method == "GET":
                return (
                    self._media(bucket_name, name, query)
                    if query.get("alt") == "media"
                    else self._get(bucket_name, name, query)
                )
            if method == "DELETE":
                return self._delete(bucket_name, name, query)
        return _error(405, "methodNotAllowed", f"{method} {url.path} is not served by this fake")

    def _find_bucket(self, name: str) -> Bucket | Response:
        bucket = self.buckets.get(name)
        if bucket is None:
            return _error(404, "notFound", "The specified bucket does not exist.")
        return bucket

    def _bucket(self, name: str) -> Response:
        bucket = self._find_bucket(name)
        if not isinstance(bucket, Bucket):
            return bucket
        resource: dict[str, Any] = {
            "kind": "storage#bucket",
            "id": name,
            "selfLink": f"{self.host}/storage/v1/b/{name}",
            "projectNumber": "123456789012",
            "name": name,
            "timeCreated": _rfc3339(bucket.created),
            "updated": _rfc3339(bucket.created),
            "metageneration": "2" if bucket.locked else "1",
            "location": "US",
            "storageClass": "STANDARD",
            "etag": "CAI=",
        }
        if bucket.retention_seconds is not None:
            policy: dict[str, Any] = {
                "retentionPeriod": str(bucket.retention_seconds),
                "effectiveTime": _rfc3339(bucket.created),
            }
            if bucket.locked:
                policy["isLocked"] = True
            resource["retentionPolicy"] = policy
        return _json(resource)

    def _resource(self, bucket: Bucket, obj: StoredObject) -> dict[str, Any]:
        crc = base64.b64encode(google_crc32c.value(obj.data).to_bytes(4, "big")).decode()
        quoted = quote(obj.name, safe="")
        resource: dict[str, Any] = {
            "kind": "storage#object",
            "id": f"{bucket.name}/{obj.name}/{obj.generation}",
            "selfLink": f"{self.host}/storage/v1/b/{bucket.name}/o/{quoted}",
            "mediaLink": f"{self.host}/download/storage/v1/b/{bucket.name}/o/{quoted}?generation={obj.generation}"
            "&alt=media",
            "name": obj.name,
            "bucket": bucket.name,
            "generation": str(obj.generation),
            "metageneration": "1",
            "contentType": obj.content_type,
            "storageClass": "STANDARD",
            "size": str(len(obj.data)),
            "md5Hash": base64.b64encode(hashlib.md5(obj.data).digest()).decode(),
            "crc32c": crc,
            "etag": base64.b64encode(str(obj.generation).encode()).decode(),
            "timeCreated": _rfc3339(obj.created),
            "updated": _rfc3339(obj.created),
        }
        until = bucket.held_until(obj)
        if until is not None:
            resource["retentionExpirationTime"] = _rfc3339(until)
        return resource

    def _retained(self, bucket: Bucket, obj: StoredObject) -> Response | None:
        until = bucket.held_until(obj)
        if until is None or until <= dt.datetime.now(dt.UTC):
            return None
        return _error(
            403,
            "retentionPolicyNotMet",
            f"Object '{bucket.name}/{obj.name}' is subject to bucket's retention policy or object retention and "
            f"cannot be deleted or overwritten until {_rfc3339(until)}",
        )

    def _mutation(self, bucket: Bucket, name: str) -> Response | None:
        """Count one write of ``name``, or refuse it (429) as GCS does within a second of the last one."""
        now = self.clock()
        if now - bucket.mutated.get(name, -1.0) < 1.0:
            return _error(
                429,
                "rateLimitExceeded",
                f"The object {bucket.name}/{name} exceeded the rate limit for object mutation operations (create, "
                "update, and delete). Please reduce your request rate. See https://cloud.google.com/storage/docs/gcs429.",
            )
        bucket.mutated[name] = now
        return None

    def _insert(self, bucket_name: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> Response:
        bucket = self._find_bucket(bucket_name)
        if not isinstance(bucket, Bucket):
            return bucket
        kind = query.get("uploadType")
        if kind not in UPLOAD_TYPES:
            return _error(400, "invalidParameter", f"Invalid upload type: {kind!r} (this fake serves media, multipart)")
        if kind == "media":
            name, content_type, data = query.get("name"), headers.get("content-type", "application/octet-stream"), body
        else:
            parsed = _multipart(headers.get("content-type", ""), body)
            if parsed is None:
                return _error(400, "invalid", "a multipart upload needs a JSON metadata part and a media part")
            metadata, content_type, data = parsed
            name = metadata.get("name") or query.get("name")
            content_type = metadata.get("contentType") or content_type
        if not name:
            return _error(400, "required", "Required: the object name")
        match = query.get("ifGenerationMatch")
        if match is not None and not match.isdigit():
            return _error(400, "invalidParameter", f"Invalid value for ifGenerationMatch: {match}")
        existing = bucket.objects.get(name)
        current = existing.generation if existing is not None else 0
        if match is not None and int(match) != current:
            return _error(412, "conditionNotMet", "At least one of the pre-conditions you specified did not hold.")
        if existing is not None:
            refusal = self._retained(bucket, existing)
            if refusal is not None:
                return refusal
        refusal = self._mutation(bucket, name)
        if refusal is not None:
            return refusal
        obj = StoredObject(name, data, next(self._generations), dt.datetime.now(dt.UTC), content_type)
        bucket.objects[name] = obj
        return _json(self._resource(bucket, obj))

    def _object(self, bucket_name: str, name: str, query: dict[str, str]) -> tuple[Bucket, StoredObject] | Response:
        bucket = self._find_bucket(bucket_name)
        if not isinstance(bucket, Bucket):
            return bucket
        obj = bucket.objects.get(name)
        generation = query.get("generation")
        if obj is None or (generation is not None and generation != str(obj.generation)):
            return _error(404, "notFound", f"No such object: {bucket_name}/{name}")
        return bucket, obj

    def _get(self, bucket_name: str, name: str, query: dict[str, str]) -> Response:
        found = self._object(bucket_name, name, query)
        return found if not isinstance(found, tuple) else _json(self._resource(*found))

    def _media(self, bucket_name: str, name: str, query: dict[str, str]) -> Response:
        if query.get("alt") != "media":
            return _error(400, "invalidParameter", "a download needs alt=media")
        found = self._object(bucket_name, name, query)
        if not isinstance(found, tuple):
            return found
        bucket, obj = found
        resource = self._resource(bucket, obj)
        return (
            200,
            {
                "Content-Type": obj.content_type,
                "x-goog-generation": str(obj.generation),
                "x-goog-metageneration": "1",
                "x-goog-hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}",
                "x-goog-stored-content-length": str(len(obj.data)),
                "x-goog-storage-class": "STANDARD",
            },
            obj.data,
        )

    def _list(self, bucket_name: str, query: dict[str, str]) -> Response:
        bucket = self._find_bucket(bucket_name)
        if not isinstance(bucket, Bucket):
            return bucket
        prefix = query.get("prefix", "")
        items = [self._resource(bucket, obj) for name, obj in sorted(bucket.objects.items()) if name.startswith(prefix)]
        return _json({"kind": "storage#objects", "items": items})

    def _delete(self, bucket_name: str, name: str, query: dict[str, str]) -> Response:
        found = self._object(bucket_name, name, query)
        if not isinstance(found, tuple):
            return found
        bucket, obj = found
        refusal = self._retained(bucket, obj) or self._mutation(bucket, name)
        if refusal is not None:
            return refusal
        del bucket.objects[name]
        return 204, {}, b""


def _metadata(raw_path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """The JSON the discovery document's request schema applies to: a multipart upload's metadata part, else none
    (a media upload's body is the object itself; the other calls the tool makes send no body)."""
    query = parse_qs(urlsplit(raw_path).query)
    if query.get("uploadType") != ["multipart"]:
        return None
    parsed = _multipart(headers.get("content-type", ""), body)
    return None if parsed is None else parsed[0]


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], str, bytes] | None:
    """(metadata, media content type, media) of a multipart/related upload body, or None when malformed."""
    if not content_type.startswith("multipart/related"):
        return None
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if len(parts) != 2 or parts[0].get_content_type() != "application/json":
        return None
    try:
        metadata = json.loads(parts[0].get_payload(decode=True) or b"{}")
    except ValueError:
        return None
    media = parts[1].get_payload(decode=True)
    if not isinstance(metadata, dict) or not isinstance(media, bytes):
        return None
    return metadata, parts[1].get_content_type(), media
