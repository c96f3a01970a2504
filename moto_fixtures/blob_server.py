"""A fake of the Azure Blob service data plane for write-once seal copies, path style (``/<account>/<container>``).

It serves, over HTTPS on 127.0.0.1, what the azure-storage-blob SDK sends for Get Container Properties, Put Blob
(BlockBlob), Get Blob (ranged), Delete Blob and List Blobs (``include=versions,immutabilitypolicy``), as the
Blob service REST contract (azure-rest-api-specs, Microsoft.BlobStorage) defines them: a bearer token,
``x-ms-date`` and a known ``x-ms-version`` on every request; ``x-ms-blob-type`` and ``Content-Length`` on Put
Blob; version-level immutability (``x-ms-immutability-policy-*``, API version 2020-10-02 or later) only in a
container that has it enabled. Every write makes a new blob version. Its documented refusals: ``If-None-Match: *``
on an existing blob -> 409 BlobAlreadyExists; overwrite or delete of a blob version whose immutability policy
has not expired -> 409 BlobImmutableDueToPolicy; a Locked policy cannot be shortened.

List Blobs pages as the service does: ``prefix``, ``maxresults`` (at most 5,000, the default) and an opaque
``marker`` continuing from the ``NextMarker`` of the page before (and fewer than ``maxresults`` when ``page_size``
says so, as the service may). An account whose data-plane roles are seeded
(:meth:`FakeBlobService.grant`) is authorised as Azure RBAC does for OAuth tokens: a principal (the token's
``oid``) without Storage Blob Data Reader gets 403 AuthorizationPermissionMismatch on reads, without Storage
Blob Data Contributor on writes and deletes.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

from moto_fixtures.local_http import LocalService, Response

# The service versions the Blob service answers (as the SDK's models list them); others are refused.
KNOWN_VERSIONS = frozenset(
    [
        "2019-02-02",
        "2019-07-07",
        "2019-10-10",
        "2019-12-12",
        "2020-02-10",
        "2020-04-08",
        "2020-06-12",
        "2020-08-04",
        "2020-10-02",
        "2020-12-06",
        "2021-02-12",
        "2021-04-10",
        "2021-06-08",
        "2021-08-06",
        "2021-12-02",
        "2022-11-02",
        "2023-01-03",
        "2023-05-03",
        "2023-08-03",
        "2023-11-03",
        "2024-05-04",
        "2024-08-04",
        "2024-11-04",
        "2025-01-05",
        "2025-05-05",
        "2025-07-05",
        "2025-11-05",
        "2026-02-06",
        "2026-04-06",
        "2026-06-06",
        "2026-10-06",
    ]
)
IMMUTABILITY_SINCE = "2020-10-02"  # version-level immutability headers need this API version or later
POLICY_MODES = ("Unlocked", "Locked")
MAX_RESULTS = 5000
READER = "Storage Blob Data Reader"
CONTRIBUTOR = "Storage Blob Data Contributor"


def _http_date(value: dt.datetime) -> str:
    return format_datetime(value.astimezone(dt.UTC), usegmt=True)


def _error(status: int, code: str, message: str) -> Response:
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>{escape(message)}\nRequestId:{uuid.uuid4()}</Message></Error>"
    ).encode()
    return status, {"x-ms-error-code": code, "Content-Type": "application/xml"}, body


@dataclass
class BlobVersion:
    """One version of a blob."""

    data: bytes
    version_id: str
    created: dt.datetime
    etag: str
    until: dt.datetime | None = None
    mode: str | None = None


@dataclass
class Container:
    """A container: its blobs' versions, oldest first, and whether version-level immutability is enabled."""

    worm: bool
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    blobs: dict[str, list[BlobVersion]] = field(default_factory=dict)


class FakeBlobService(LocalService):
    """Storage accounts -> containers -> blob versions, served over HTTPS (use as a context manager)."""

    tls = True
    name = "fake-blob"

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[str, dict[str, Container]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.roles: dict[str, dict[str, str]] = {}  # account -> principal oid -> data-plane role (when seeded)
        self.page_size = MAX_RESULTS  # the service may return fewer blobs than maxresults, with a NextMarker

    def failure(self, exc: Exception) -> Response:
        """A fake bug, as the service's InternalError."""
        return _error(500, "InternalError", f"{type(exc).__name__}: {exc}")

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]:
        """Request id, service version and date on every response; the client's request id echoed."""
        headers = {
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-version": request_headers.get("x-ms-version", ""),
            "Date": _http_date(dt.datetime.now(dt.UTC)),
        }
        if "x-ms-client-request-id" in request_headers:
            headers["x-ms-client-request-id"] = request_headers["x-ms-client-request-id"]
        return headers

    def add_container(self, account: str, container: str, *, version_level_worm: bool) -> None:
        """Create a container (with version-level immutability support enabled, or not)."""
        with self._lock:
            self.accounts.setdefault(account, {})[container] = Container(worm=version_level_worm)

    def add_blob(self, account: str, container: str, name: str, data: bytes) -> None:
        """Seed one block blob (the container is created when missing)."""
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            box = self.accounts.setdefault(account, {}).setdefault(container, Container(worm=False))
            box.blobs.setdefault(name, []).append(
                BlobVersion(data, now.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"), now, f'"0x{uuid.uuid4().hex[:15].upper()}"')
            )

    def grant(self, account: str, principal: str, role: str) -> None:
        """Give a principal (object id) a data-plane role on an account; from then on the account checks roles."""
        if role not in {READER, CONTRIBUTOR}:
            raise ValueError(f"unknown data-plane role {role!r}")
        with self._lock:
            self.roles.setdefault(account, {})[principal] = role

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request."""
        url = urlsplit(raw_path)
        query = {key.lower(): values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
        account, _, rest = unquote(url.path).lstrip("/").partition("/")
        container_name, _, blob = rest.partition("/")
        with self._lock:
            self.requests.append((method, url.path))
            refusal = self._refuse_headers(headers) or self._refuse_role(account, method, headers)
            if refusal is not None:
                return refusal
            container = self.accounts.get(account, {}).get(container_name)
            if container is None:
                return _error(404, "ContainerNotFound", "The specified container does not exist.")
            if not blob:
                if query.get("restype") != "container":
                    return _error(400, "InvalidQueryParameterValue", "restype must be container")
                if method == "GET" and query.get("comp") == "list":
                    return self._list(account, container_name, container, query)
                if method in {"GET", "HEAD"} and "comp" not in query:
                    return self._container_properties(container)
                return _error(400, "UnsupportedHttpVerb", f"{method} is not served on a container by this fake")
            if method == "PUT":
                return self._put(container, blob, headers, body)
            if method in {"GET", "HEAD"}:
                return self._get(container, blob, query, headers)
            if method == "DELETE":
                return self._delete(container, blob, query)
        return _error(405, "UnsupportedHttpVerb", f"{method} is not supported")

    @staticmethod
    def _refuse_headers(headers: dict[str, str]) -> Response | None:
        version = headers.get("x-ms-version")
        if not version:
            return _error(
                400, "MissingRequiredHeader", "An HTTP header that's mandatory for this request is not specified."
            )
        if version not in KNOWN_VERSIONS:
            return _error(
                400,
                "InvalidHeaderValue",
                f"The value for one of the HTTP headers is not in the correct format: x-ms-version {version}",
            )
        if not headers.get("x-ms-date") and not headers.get("date"):
            return _error(403, "AuthenticationFailed", "The Date header in the request is missing (x-ms-date).")
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return _error(401, "NoAuthenticationInformation", "Server failed to authenticate the request.")
        return None

    def _refuse_role(self, account: str, method: str, headers: dict[str, str]) -> Response | None:
        roles = self.roles.get(account)
        if roles is None:
            return None
        role = roles.get(_token_oid(headers.get("authorization", "")))
        if role == CONTRIBUTOR or (role == READER and method in {"GET", "HEAD"}):
            return None
        return _error(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )

    @staticmethod
    def _container_properties(container: Container) -> Response:
        return (
            200,
            {
                "ETag": f'"0x{container.created.timestamp():.0f}"',
                "Last-Modified": _http_date(container.created),
                "x-ms-lease-status": "unlocked",
                "x-ms-lease-state": "available",
                "x-ms-has-immutability-policy": "false",
                "x-ms-has-legal-hold": "false",
                "x-ms-immutable-storage-with-versioning-enabled": "true" if container.worm else "false",
            },
            b"",
        )

    def _put(self, container: Container, blob: str, headers: dict[str, str], body: bytes) -> Response:
        if headers.get("x-ms-blob-type") != "BlockBlob":
            return _error(400, "MissingRequiredHeader", "x-ms-blob-type must be BlockBlob for Put Blob here.")
        if "content-length" not in headers:
            return _error(411, "MissingContentLengthHeader", "Content-Length HTTP header is missing.")
        until_text, mode = (
            headers.get("x-ms-immutability-policy-until-date"),
            headers.get("x-ms-immutability-policy-mode"),
        )
        until: dt.datetime | None = None
        if until_text is not None or mode is not None:
            if headers["x-ms-version"] < IMMUTABILITY_SINCE:
                return _error(
                    400,
                    "InvalidHeaderValue",
                    f"immutability policy headers need x-ms-version {IMMUTABILITY_SINCE} or later",
                )
            if not container.worm:
                return _error(
                    409,
                    "ContainerNotEnabledForVersionLevelWorm",
                    "The container is not enabled for version-level immutability.",
                )
            if until_text is None or mode not in POLICY_MODES:
                return _error(
                    400, "InvalidHeaderValue", "an immutability policy needs an until-date and mode Locked or Unlocked"
                )
            until = parsedate_to_datetime(until_text)
            if until <= dt.datetime.now(dt.UTC):
                return _error(400, "InvalidHeaderValue", "x-ms-immutability-policy-until-date is in the past")
        versions = container.blobs.get(blob, [])
        if versions and headers.get("if-none-match") == "*":
            return _error(409, "BlobAlreadyExists", "The specified blob already exists.")
        if versions and _immutable(versions[-1]):
            return _error(
                409,
                "BlobImmutableDueToPolicy",
                "This operation is not permitted as the blob is immutable due to a policy.",
            )
        now = dt.datetime.now(dt.UTC)
        version = BlobVersion(
            body, now.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"), now, f'"0x{uuid.uuid4().hex[:15].upper()}"', until, mode
        )
        container.blobs.setdefault(blob, []).append(version)
        return (
            201,
            {
                "ETag": version.etag,
                "Last-Modified": _http_date(now),
                "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                "x-ms-version-id": version.version_id,
                "x-ms-request-server-encrypted": "true",
            },
            b"",
        )

    @staticmethod
    def _find(container: Container, blob: str, query: dict[str, str]) -> BlobVersion | None:
        versions = container.blobs.get(blob, [])
        wanted = query.get("versionid")
        if wanted is None:
            return versions[-1] if versions else None
        return next((version for version in versions if version.version_id == wanted), None)

    def _get(self, container: Container, blob: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        version = self._find(container, blob, query)
        if version is None:
            return _error(404, "BlobNotFound", "The specified blob does not exist.")
        out = {
            "ETag": version.etag,
            "Last-Modified": _http_date(version.created),
            "x-ms-creation-time": _http_date(version.created),
            "x-ms-blob-type": "BlockBlob",
            "x-ms-version-id": version.version_id,
            "x-ms-is-current-version": str(version is container.blobs[blob][-1]).lower(),
            "x-ms-server-encrypted": "true",
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if version.until is not None and version.mode is not None:
            out |= {
                "x-ms-immutability-policy-until-date": _http_date(version.until),
                "x-ms-immutability-policy-mode": version.mode.lower(),
            }
        data, total = version.data, len(version.data)
        spec = headers.get("x-ms-range") or headers.get("range")
        if spec and spec.startswith("bytes="):
            first_text, _, last_text = spec.removeprefix("bytes=").partition("-")
            first = int(first_text)
            last = min(int(last_text) if last_text else total - 1, total - 1)
            if first >= total and total:
                return _error(
                    416, "InvalidRange", "The range specified is invalid for the current size of the resource."
                )
            return 206, {**out, "Content-Range": f"bytes {first}-{last}/{total}"}, data[first : last + 1]
        return 200, out, data

    def _delete(self, container: Container, blob: str, query: dict[str, str]) -> Response:
        version = self._find(container, blob, query)
        if version is None:
            return _error(404, "BlobNotFound", "The specified blob does not exist.")
        if _immutable(version):
            return _error(
                409,
                "BlobImmutableDueToPolicy",
                "This operation is not permitted as the blob is immutable due to a policy.",
            )
        container.blobs[blob].remove(version)
        return 202, {"x-ms-delete-type-permanent": "true"}, b""

    def _list(self, account: str, name: str, container: Container, query: dict[str, str]) -> Response:
        include = set(query.get("include", "").split(","))
        prefix = query.get("prefix", "")
        try:
            limit = int(query.get("maxresults", MAX_RESULTS))
            after = base64.urlsafe_b64decode(query["marker"]).decode() if query.get("marker") else ""
        except (ValueError, binascii.Error):
            return _error(400, "OutOfRangeQueryParameterValue", "maxresults or marker is not valid.")
        if not 1 <= limit <= MAX_RESULTS:
            return _error(400, "OutOfRangeQueryParameterValue", f"maxresults must be between 1 and {MAX_RESULTS}.")
        names = [blob for blob in sorted(container.blobs) if blob.startswith(prefix) and blob >= after]
        page, rest = names[: min(limit, self.page_size)], names[min(limit, self.page_size) :]
        marker = base64.urlsafe_b64encode(rest[0].encode()).decode() if rest else ""
        items = []
        for blob in page:
            versions = container.blobs[blob] if "versions" in include else container.blobs[blob][-1:]
            for version in versions:
                policy = ""
                if "immutabilitypolicy" in include and version.until is not None and version.mode is not None:
                    policy = (
                        f"<ImmutabilityPolicyUntilDate>{_http_date(version.until)}</ImmutabilityPolicyUntilDate>"
                        f"<ImmutabilityPolicyMode>{version.mode.lower()}</ImmutabilityPolicyMode>"
                    )
                current = version is container.blobs[blob][-1]
                items.append(
                    f"<Blob><Name>{escape(blob)}</Name><VersionId>{version.version_id}</VersionId>"
                    f"<IsCurrentVersion>{str(current).lower()}</IsCurrentVersion><Properties>"
                    f"<Creation-Time>{_http_date(version.created)}</Creation-Time>"
                    f"<Last-Modified>{_http_date(version.created)}</Last-Modified><Etag>{version.etag}</Etag>"
                    f"<Content-Length>{len(version.data)}</Content-Length><BlobType>BlockBlob</BlobType>"
                    f"{policy}</Properties></Blob>"
                )
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<EnumerationResults ServiceEndpoint="{self.base_url}/{escape(account)}" '
            f'ContainerName="{escape(name)}"><Prefix>{escape(prefix)}</Prefix><MaxResults>{limit}</MaxResults>'
            f"<Blobs>{''.join(items)}</Blobs><NextMarker>{marker}</NextMarker></EnumerationResults>"
        ).encode()
        return 200, {"Content-Type": "application/xml"}, body


def _token_oid(authorization: str) -> str:
    """The ``oid`` claim of a bearer JWT, unverified ("" when there is none)."""
    parts = authorization.removeprefix("Bearer ").split(".")
    if len(parts) < 2:
        return ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return ""
    return str(claims.get("oid", "")) if isinstance(claims, dict) else ""


def _immutable(version: BlobVersion) -> bool:
    return version.until is not None and version.until > dt.datetime.now(dt.UTC)
