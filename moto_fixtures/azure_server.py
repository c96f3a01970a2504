"""A stateful fake of Azure Resource Manager (compute, network, locks, monitor) and of SAS blob reads.

It speaks the real REST shapes over HTTPS on 127.0.0.1 (a self-signed certificate made at start-up), refuses a
bearer token ARM would not accept (401 in ARM's error shape), and serves long-running operations
(``Azure-AsyncOperation`` for PUTs, ``Location`` for POST actions), Activity Log paging with ``nextLink``,
management locks that block deletes, and injected throttling (429 + Retry-After) or failures per ARM operation
(``Microsoft.Compute/snapshots/write``).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from moto_fixtures.local_http import FakeHandler, make_certificate, serve_https
from providers.azure.session import arm_operation, token_claims

LRO_NAMESPACES = {"microsoft.compute", "microsoft.network"}
ERROR_STATUS = {
    "AuthorizationFailed": 403,
    "ResourceNotFound": 404,
    "NotFound": 404,
    "Conflict": 409,
    "OperationNotAllowed": 409,
    "ScopeLocked": 409,
    "TooManyRequests": 429,
    "BadRequest": 400,
    "InvalidParameter": 400,
}
_IDENTITY_TYPES = {"SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned", "None"}
_USER_ASSIGNED = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+",
    re.IGNORECASE,
)
SUBSCRIPTION_API_VERSIONS = {"2016-06-01", "2020-01-01", "2021-01-01", "2022-12-01"}
ROLE_ASSIGNMENT_API_VERSIONS = {"2020-04-01-preview", "2022-04-01", "2022-01-01-preview"}
# The audiences ARM accepts in an access token's ``aud`` claim (InvalidAuthenticationTokenAudience lists them).
ARM_AUDIENCES = (
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
)
_FILTER_TERMS = re.compile(r"(\w+)\s+(ge|le|eq)\s+'([^']*)'", re.IGNORECASE)
Response = tuple[int, dict[str, str], bytes]


def utc(value: dt.datetime) -> str:
    """ISO 8601 UTC with a Z suffix, the way ARM writes times."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _authentication_refusal(authorization: str) -> Response | None:
    """ARM's 401 for a request whose bearer token it would not accept: missing, not a JWT, expired, or obtained for
    another audience (the signature aside: the sandbox's tokens are unsigned). None: accepted."""
    token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
    if not token:
        return _unauthenticated("AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
    claims = token_claims(token)
    expiry = claims.get("exp")
    if not claims or type(expiry) is not int:
        return _unauthenticated("InvalidAuthenticationToken", "The access token is invalid.")
    now = dt.datetime.now(dt.UTC)
    if expiry <= now.timestamp():
        expired = dt.datetime.fromtimestamp(expiry, dt.UTC)
        return _unauthenticated(
            "ExpiredAuthenticationToken",
            f"The access token expiry UTC time '{expired:%m/%d/%Y %I:%M:%S %p}' is earlier than current UTC time "
            f"'{now:%m/%d/%Y %I:%M:%S %p}'.",
        )
    if claims.get("aud") not in ARM_AUDIENCES:
        return _unauthenticated(
            "InvalidAuthenticationTokenAudience",
            f"The access token has been obtained for wrong audience or resource '{claims.get('aud')}'. It should "
            f"exactly match with one of the allowed audiences {','.join(repr(a) for a in ARM_AUDIENCES)}.",
        )
    return None


def _unauthenticated(code: str, message: str) -> Response:
    challenge = (
        f'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", error_description="{message}"'
    )
    return _error(401, code, message, {"WWW-Authenticate": challenge})


def _norm(path: str) -> str:
    return "/" + "/".join(part for part in unquote(path).split("/") if part)


def _resource_type(resource_id: str) -> tuple[str, str]:
    """(namespace, type path) of a resource id, e.g. ("microsoft.compute", "snapshots")."""
    segments = [part for part in resource_id.split("/") if part]
    lowered = [part.lower() for part in segments]
    if "providers" not in lowered:
        return "microsoft.resources", "/".join(lowered[0::2])
    index = len(lowered) - 1 - lowered[::-1].index("providers")
    return lowered[index + 1], "/".join(lowered[index + 2 :][0::2])


_RULE_ENUMS = {
    "access": {"Allow", "Deny"},
    "direction": {"Inbound", "Outbound"},
    "protocol": {"Tcp", "Udp", "Icmp", "Esp", "Ah", "*"},
}


def _invalid_body(type_path: str, body: dict[str, Any]) -> str | None:
    """Why ARM would refuse this body for the documented enums and ranges of locks and NSG rules (None: valid)."""
    properties = body.get("properties") or {}
    if type_path == "locks" and properties.get("level") not in {"CanNotDelete", "ReadOnly"}:
        return f"The lock level {properties.get('level')!r} is invalid: it must be CanNotDelete or ReadOnly"
    if type_path != "networksecuritygroups":
        return None
    for rule in properties.get("securityRules") or []:
        fields = rule.get("properties") or {}
        priority = fields.get("priority")
        if type(priority) is not int or not 100 <= priority <= 4096:
            return f"Security rule {rule.get('name')!r} has an invalid priority {priority!r} (an integer 100-4096)"
        for name, allowed in _RULE_ENUMS.items():
            if fields.get(name) not in allowed:
                return f"Security rule {rule.get('name')!r} has an invalid {name} {fields.get(name)!r}"
    return None


_DISK_RESTORE_POINT = "restorepointcollections/restorepoints/diskrestorepoints"


class FakeAzure:
    """The fake cloud's state and request handling (thread-safe)."""

    def __init__(self, *, page_size: int = 10) -> None:
        self.page_size = page_size
        self.resources: dict[str, dict[str, Any]] = {}  # lower-case id -> resource JSON
        self.blobs: dict[str, bytes] = {}  # lower-case disk/snapshot id -> disk content
        self.grants: dict[str, str] = {}  # SAS signature -> lower-case snapshot id
        self.activity: dict[str, list[dict[str, Any]]] = {}  # subscription -> Activity Log events
        self.subscriptions: list[dict[str, Any]] = []  # what GET /subscriptions lists (the caller's, any state)
        self.requests: list[dict[str, Any]] = []
        self.created: Counter[str] = Counter()  # resource type path -> resources created by PUT
        self.failures: dict[str, str] = {}  # operation -> error code, while a fail_next context is open
        self.throttles: dict[str, list[int]] = {}  # operation -> Retry-After values still to serve
        self._operations: dict[str, dict[str, Any]] = {}
        # A CopyStart snapshot copies in the background after its PUT succeeded, as in Azure: its
        # completionPercent grows from 0 to 100 over this many seconds.
        self.copy_seconds = 0.2
        self._copies: dict[str, float] = {}  # lower-case snapshot id -> monotonic start of its background copy
        # A VM restore point and a new snapshot are long-running operations: Creating, then Succeeded (or the
        # outcome a provisioning_failures entry names) this many seconds after the PUT, polled or not.
        self.restore_point_seconds = 0.2
        self.snapshot_seconds = 0.2
        # operation -> error code: a PUT of it is accepted, then its resource and operation end Failed
        self.provisioning_failures: dict[str, str] = {}
        # Called after each successful ARM write with (operation, resource path, request headers), so a sandbox
        # can log the caller's own changes into the Activity Log as Azure does.
        self.on_write: Callable[[str, str, dict[str, str]], None] | None = None
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.base_url = ""
        self.ca_file = ""

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Serve HTTPS on an ephemeral 127.0.0.1 port in a daemon thread."""
        self._tmp = tempfile.TemporaryDirectory(prefix="cloudir-fake-azure-")
        cert, key = make_certificate(Path(self._tmp.name))
        self._server, self.base_url = serve_https(self, FakeHandler, cert, key, "fake-azure")
        self.ca_file = str(cert)

    def stop(self) -> None:
        """Stop serving and delete the certificate."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def failure(self, exc: Exception) -> Response:
        """The answer to a request the fake itself failed on (ARM's error shape)."""
        return _error(500, "FakeServerError", f"{type(exc).__name__}: {exc}")

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]:
        """ARM's request ids on every response (a response that names its own keeps them)."""
        return {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}

    # -- seeding and inspection ---------------------------------------------------------------------------
    def put(self, resource: dict[str, Any], content: bytes | None = None) -> dict[str, Any]:
        """Seed a resource (and the bytes of a disk)."""
        with self._lock:
            self.resources[resource["id"].lower()] = resource
            if content is not None:
                self.blobs[resource["id"].lower()] = content
        return resource

    def get(self, resource_id: str) -> dict[str, Any] | None:
        """A resource by id (case-insensitive), or None."""
        with self._lock:
            found = self.resources.get(_norm(resource_id).lower())
            return copy.deepcopy(found) if found else None

    def of_type(self, type_path: str) -> list[dict[str, Any]]:
        """Every resource whose type is e.g. ``Microsoft.Compute/snapshots``."""
        namespace, _, rest = type_path.lower().partition("/")
        with self._lock:
            return [copy.deepcopy(r) for key, r in self.resources.items() if _resource_type(key) == (namespace, rest)]

    def locks_on(self, resource_id: str) -> list[dict[str, Any]]:
        """Management locks created directly on a resource."""
        prefix = _norm(resource_id).lower() + "/providers/microsoft.authorization/locks/"
        with self._lock:
            return [copy.deepcopy(r) for key, r in self.resources.items() if key.startswith(prefix)]

    def state(self) -> dict[str, Any]:
        """Every resource, disk content hash and active SAS grant (for before/after comparisons)."""
        with self._lock:
            return {
                "resources": copy.deepcopy(self.resources),
                "grants": sorted(self.grants.values()),
                "blobs": sorted(self.blobs),
            }

    # -- request handling -------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Serve one request."""
        split = urlsplit(raw_path)
        query = {key: values[0] for key, values in parse_qs(split.query).items()}
        path = _norm(split.path)
        if "sig" in query:
            return self._blob(method, path, query, headers)
        namespace, operation = arm_operation(method, path)
        full_operation = f"{namespace}/{operation}"
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "query": unquote(split.query),
                    "operation": full_operation,
                    "user_agent": headers.get("user-agent", ""),
                }
            )
            refusal = _authentication_refusal(headers.get("authorization", ""))
            if refusal is not None:
                return refusal
            if "api-version" not in query:
                return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
            self._advance_copies()
            self._settle_operations()
            code = self._failure_for(full_operation)
            if code is not None:
                return _error(ERROR_STATUS.get(code, 500), code, f"injected failure of {full_operation}")
            waits = self.throttles.get(full_operation.lower())
            if waits:
                retry_after = waits.pop(0)
                return _error(
                    429, "TooManyRequests", "Rate limit exceeded, retry later", {"Retry-After": str(retry_after)}
                )
            response = self._arm(method, path, query, body, full_operation)
        if self.on_write is not None and method != "GET" and response[0] < 400 and "/operations/" not in path.lower():
            self.on_write(full_operation, path, headers)
        return response

    def _advance_copies(self) -> None:
        now = time.monotonic()
        for key, started in list(self._copies.items()):
            done = min(100.0, round(100 * (now - started) / self.copy_seconds, 1)) if self.copy_seconds else 100.0
            resource = self.resources.get(key)
            if resource is None or done >= 100:
                self._copies.pop(key)
            if resource is not None:
                resource["properties"]["completionPercent"] = done

    def _snapshot_refusal(self, body: dict[str, Any], source: dict[str, Any]) -> Response | None:
        """Azure's documented refusals for a new snapshot's source and create option."""
        properties = body.get("properties", {})
        option = properties.get("creationData", {}).get("createOption")
        source_type = _resource_type(source["id"].lower())[1]
        source_is_snapshot = source_type == "snapshots"
        if (option == "Restore") != (source_type == _DISK_RESTORE_POINT):
            # DiskCreateOption: Copy/CopyStart take a disk or snapshot; Restore takes a disk restore point
            return _error(
                400,
                "InvalidParameter",
                f"createOption {option!r} cannot take the source {source['id']}: a disk restore point is "
                "restored with createOption 'Restore', a disk or snapshot is copied with 'Copy' or 'CopyStart'",
            )
        if option == "Restore":
            collection = self.resources.get(source["id"].lower().split("/restorepoints/", 1)[0], {})
            if str(collection.get("location", "")).lower() != str(body.get("location", "")).lower():
                return _error(
                    400,
                    "BadRequest",
                    f"The disk restore point {source['id']} is in {collection.get('location')}; restore it there",
                )
        elif option == "CopyStart":
            if not (source_is_snapshot and source["properties"].get("incremental")):
                return _error(
                    400,
                    "BadRequest",
                    "CopyStart is only supported for incremental snapshots; the source must be an incremental snapshot",
                )
            if not properties.get("incremental"):
                return _error(400, "BadRequest", "A snapshot created with CopyStart must be incremental")
        elif option == "Copy" and str(source.get("location", "")).lower() != str(body.get("location", "")).lower():
            return _error(
                400,
                "BadRequest",
                f"The source {source['id']} is in {source.get('location')}; copying to another region needs CopyStart",
            )
        return None

    def _settle_operations(self) -> None:
        """Give each timed operation's resource its outcome once its time is up, as Azure does whether or not the
        caller polls."""
        now = time.monotonic()
        for operation in self._operations.values():
            resource = self.resources.get(operation.get("resource", ""))
            if resource is not None and now >= operation["until"]:
                resource["properties"]["provisioningState"] = operation["outcome"]

    def _failure_for(self, operation: str, failures: dict[str, str] | None = None) -> str | None:
        lowered = operation.lower()
        for pattern, code in (self.failures if failures is None else failures).items():
            if pattern.lower() in {lowered, lowered.partition("/")[2]}:
                return code
        return None

    def _arm(self, method: str, path: str, query: dict[str, str], body: bytes, operation: str) -> Response:
        lowered = path.lower()
        if re.search(r"/providers/[^/]+/locations/[^/]+/operations/[^/]+$", lowered):
            return self._operation_status(path.rsplit("/", 1)[1], monitor=query.get("monitor") == "true")
        if lowered.endswith("/providers/microsoft.insights/eventtypes/management/values"):
            return self._activity_log(path, query)
        if lowered == "/subscriptions":
            return self._list_subscriptions(method, query)
        segments = [part for part in lowered.split("/") if part]
        if method == "POST":
            return self._action(path, segments[-1], body)
        is_collection = self._is_collection(segments)
        if _resource_type(lowered) == ("microsoft.authorization", "roleassignments"):
            return self._role_assignments(method, path, query, body, is_collection=is_collection)
        if method == "GET":
            return self._list(lowered) if is_collection else self._get(lowered)
        if method in {"PUT", "PATCH"}:
            return self._write(path, method, json.loads(body or b"{}"), operation)
        if method == "DELETE":
            return self._delete(lowered)
        return _error(405, "MethodNotAllowed", f"{method} is not supported")

    def _role_assignments(
        self, method: str, path: str, query: dict[str, str], body: bytes, *, is_collection: bool
    ) -> Response:
        """Microsoft.Authorization/roleAssignments as the 2022-04-01 spec defines list, create and delete."""
        if query["api-version"] not in ROLE_ASSIGNMENT_API_VERSIONS:
            return _error(400, "InvalidApiVersionParameter", f"The api-version '{query['api-version']}' is invalid.")
        key = path.lower()
        if is_collection:
            if method != "GET":
                return _error(405, "MethodNotAllowed", f"{method} is not supported on a collection")
            return self._list_role_assignments(key, query.get("$filter"))
        if method == "GET":
            return self._get(key)
        if method == "DELETE":
            existing = self.resources.pop(key, None)
            return _json(200, existing) if existing else (204, {}, b"")
        request = json.loads(body or b"{}")
        properties = request.get("properties") or {}
        missing = [name for name in ("roleDefinitionId", "principalId") if not properties.get(name)]
        if missing or method != "PUT":
            return _error(400, "InvalidRoleAssignmentRequest", f"properties.{', '.join(missing)} required")
        if key in self.resources:
            return _error(409, "RoleAssignmentExists", "The role assignment already exists.")
        now = utc(dt.datetime.now(dt.UTC))
        scope = path.split("/providers/Microsoft.Authorization/", 1)[0] or "/"
        self.resources[key] = {
            "id": path,
            "name": path.rsplit("/", 1)[1],
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "principalType": properties.get("principalType", "User"),
                **properties,
                "scope": scope,
                "createdOn": now,
                "updatedOn": now,
            },
        }
        self.created["microsoft.authorization/roleassignments"] += 1
        return _json(201, self.resources[key])

    def _list_role_assignments(self, collection: str, text: str | None) -> Response:
        """Assignments at, above or below the scope (``principalId eq '{id}'``), or at or above (``atScope()``)."""
        match = re.fullmatch(r"\s*principalId\s+eq\s+'([0-9a-fA-F-]{36})'\s*", text or "")
        if text and match is None and text.strip() != "atScope()":
            return _error(
                400,
                "UnsupportedQuery",
                f"The filter '{text}' is not supported. Supported filters: principalId eq '{{value}}', atScope().",
            )
        scope = collection.split("/providers/microsoft.authorization/", 1)[0]
        found = []
        for key, resource in self.resources.items():
            if _resource_type(key) != ("microsoft.authorization", "roleassignments"):
                continue
            at = str(resource["properties"]["scope"]).lower().rstrip("/")
            above = scope == at or scope.startswith(at + "/") or at in {"", "/"}
            if (match is None and text and not above) or not (above or at.startswith(scope + "/")):
                continue
            if match and resource["properties"]["principalId"].lower() != match.group(1).lower():
                continue
            found.append(resource)
        return _json(200, {"value": found})

    @staticmethod
    def _is_collection(segments: list[str]) -> bool:
        if "providers" in segments:
            index = len(segments) - 1 - segments[::-1].index("providers")
            return len(segments[index + 2 :]) % 2 == 1
        return len(segments) % 2 == 1

    def _get(self, key: str) -> Response:
        resource = self.resources.get(key)
        if resource is None:
            return self._not_found(key)
        return _json(200, resource)

    def _not_found(self, key: str) -> Response:
        namespace, type_path = _resource_type(key)
        return _error(
            404, "ResourceNotFound", f"The Resource '{namespace}/{type_path}/{key.rsplit('/', 1)[-1]}' was not found."
        )

    def _list(self, collection: str) -> Response:
        subscription_wide = re.fullmatch(r"/subscriptions/([^/]+)/providers/([^/]+)/([^/]+)", collection)
        found = []
        for key, resource in self.resources.items():
            parent = key.rsplit("/", 1)[0]
            if parent == collection or (
                subscription_wide
                and key.startswith(f"/subscriptions/{subscription_wide.group(1)}/")
                and _resource_type(key) == (subscription_wide.group(2), subscription_wide.group(3))
            ):
                found.append(resource)
        return _json(200, {"value": found})

    def _write(self, path: str, method: str, body: dict[str, Any], operation: str) -> Response:
        key = path.lower()
        namespace, type_path = _resource_type(key)
        if namespace == "microsoft.compute" and type_path == "restorepointcollections":
            return self._restore_point_collection(path, body)
        if namespace == "microsoft.compute" and type_path == "restorepointcollections/restorepoints":
            return self._restore_point(path, method, body)
        invalid = _invalid_body(type_path, body)
        if invalid is not None:
            return _error(400, "InvalidRequestContent", invalid)
        existing = self.resources.get(key)
        if existing is None and method == "PATCH":
            return self._not_found(key)
        if type_path == "virtualmachines" and "identity" in body:
            identity = self._vm_identity((existing or {}).get("identity"), body["identity"])
            if isinstance(identity, str):
                return _error(400, "InvalidParameter", identity)
            body["identity"] = identity
        if existing is None and type_path == "snapshots":
            source = body.get("properties", {}).get("creationData", {}).get("sourceResourceId", "")
            source_resource = self.resources.get(_norm(source).lower())
            if source_resource is None:
                return _error(404, "NotFound", f"source resource {source} of the snapshot was not found")
            refusal = self._snapshot_refusal(body, source_resource)
            if refusal is not None:
                return refusal
            copying = body["properties"]["creationData"]["createOption"] == "CopyStart"
            body["properties"]["creationData"]["sourceUniqueId"] = source_resource["properties"].get("uniqueId")
            sized = source_resource  # a disk restore point has no size: its disk's
            if _resource_type(source.lower())[1] == _DISK_RESTORE_POINT:
                sized = self.resources.get(source_resource["properties"]["sourceResourceId"].lower(), sized)
            body.setdefault("properties", {}).update(
                {
                    "diskSizeGB": sized["properties"].get("diskSizeGB"),
                    "encryption": source_resource["properties"].get("encryption"),
                    "timeCreated": utc(dt.datetime.now(dt.UTC)),
                    "uniqueId": str(uuid.uuid4()),
                    "diskState": "Unattached",
                    "completionPercent": 0.0 if copying else 100.0,
                }
            )
            if copying:
                self._copies[key] = time.monotonic()
            self.blobs[key] = self.blobs.get(_norm(source).lower(), b"")
        merged = copy.deepcopy(existing) if existing else {}
        properties = {**merged.get("properties", {}), **body.get("properties", {})}
        merged.update(body)
        merged.update({"id": path, "name": path.rsplit("/", 1)[1], "type": self._type_name(path)})
        creating = existing is None and type_path == "snapshots"
        if namespace in LRO_NAMESPACES:
            properties["provisioningState"] = "Creating" if creating else "Succeeded"
        merged["properties"] = properties
        self.resources[key] = merged
        if existing is None:
            self.created[f"{namespace}/{type_path}"] += 1
        if namespace not in LRO_NAMESPACES:
            return _json(201 if existing is None else 200, merged)
        created_status = 202 if namespace == "microsoft.compute" else 201  # as the real services answer
        if creating:
            failure = self._failure_for(operation, self.provisioning_failures)
            url = self._new_operation(path, "async", seconds=self.snapshot_seconds, failure=failure)
        else:
            url = self._new_operation(path, "async")
        return _json(
            created_status if existing is None else 200,
            {**merged, "properties": {**properties, "provisioningState": "Creating" if creating else "Updating"}},
            {"Azure-AsyncOperation": url, "Location": f"{url}&monitor=true", "Retry-After": "0"},
        )

    def _vm_identity(self, current: dict[str, Any] | None, change: Any) -> dict[str, Any] | str:
        """A VM's identity block after a PUT/PATCH, as the Compute spec (VirtualMachineIdentity) defines it, or why
        ARM refuses: ``type`` one of four values, ``userAssignedIdentities`` keyed by existing user-assigned
        identity ids with ``{}`` to add and ``null`` to remove (a merge patch), none of them unless the type
        includes ``UserAssigned`` and at least one if it does; a dropped SystemAssigned loses its principal."""
        if not isinstance(change, dict) or change.get("type") not in _IDENTITY_TYPES:
            return f"identity.type must be one of {sorted(_IDENTITY_TYPES)}"
        current = current or {"type": "None"}
        requested = change.get("userAssignedIdentities") or {}
        if not isinstance(requested, dict):
            return "identity.userAssignedIdentities must be an object keyed by user-assigned identity resource ids"
        kept = {key.lower(): (key, value) for key, value in (current.get("userAssignedIdentities") or {}).items()}
        for key, value in requested.items():
            if not _USER_ASSIGNED.fullmatch(key):
                return f"'{key}' is not a user-assigned identity resource id"
            if value is None:
                if kept.pop(key.lower(), None) is None:
                    return f"the identity '{key}' is not assigned to the virtual machine"
            elif not isinstance(value, dict) or set(value) - {"principalId", "clientId"}:
                return f"identity.userAssignedIdentities['{key}'] must be an empty object or null"
            else:
                identity = self.resources.get(key.lower())
                if identity is None:
                    return f"the user-assigned identity '{key}' was not found"
                kept[key.lower()] = (key, {k: identity["properties"][k] for k in ("principalId", "clientId")})
        kind = change["type"]
        if "UserAssigned" not in kind:
            if requested and any(value is not None for value in requested.values()):
                return f"userAssignedIdentities cannot be given with identity type '{kind}'"
            kept = {}
        elif not kept:
            return f"identity type '{kind}' needs at least one user-assigned identity"
        result: dict[str, Any] = {"type": kind}
        if kind.startswith("SystemAssigned"):
            had = str(current.get("type", "")).startswith("SystemAssigned")
            result["principalId"] = current.get("principalId") if had else str(uuid.uuid4())
            result["tenantId"] = current.get("tenantId")
        if kept:
            result["userAssignedIdentities"] = dict(kept.values())
        return result

    def _restore_point_collection(self, path: str, body: dict[str, Any]) -> Response:
        """PUT restorePointCollections: synchronous (200/201); the source must be a VM in the same location."""
        source_id = str(((body.get("properties") or {}).get("source") or {}).get("id") or "")
        vm = self.resources.get(_norm(source_id).lower()) if source_id else None
        if vm is None or _resource_type(source_id.lower()) != ("microsoft.compute", "virtualmachines"):
            return _error(400, "InvalidParameter", f"properties.source.id {source_id!r} is not an existing VM")
        if str(body.get("location", "")).lower() != str(vm.get("location", "")).lower():
            return _error(
                400,
                "InvalidParameter",
                f"The restore point collection must be in the VM's location {vm.get('location')!r}",
            )
        key = path.lower()
        existing = self.resources.get(key)
        collection = {
            "id": path,
            "name": path.rsplit("/", 1)[1],
            "type": "Microsoft.Compute/restorePointCollections",
            "location": vm["location"],
            "tags": body.get("tags") or {},
            "properties": {
                "source": {"id": vm["id"], "location": vm["location"]},
                "provisioningState": "Succeeded",
                "restorePointCollectionId": (existing or {}).get("properties", {}).get("restorePointCollectionId")
                or str(uuid.uuid4()),
            },
        }
        self.resources[key] = collection
        if existing is None:
            self.created["microsoft.compute/restorepointcollections"] += 1
        return _json(200 if existing else 201, collection)

    def _restore_point_refusal(self, vm: dict[str, Any], mode: object) -> str | None:
        """Why Azure refuses a restore point of ``vm`` (None: it is created)."""
        if mode not in {"CrashConsistent", "FileSystemConsistent", "ApplicationConsistent"}:
            return f"The value {mode!r} of properties.consistencyMode is invalid"
        storage = vm.get("properties", {}).get("storageProfile", {})
        if (storage.get("osDisk") or {}).get("diffDiskSettings"):
            return "Restore points are not supported for virtual machines with ephemeral OS disks"
        for disk in [storage.get("osDisk") or {}, *storage.get("dataDisks", [])]:
            managed = self.resources.get(str(disk.get("managedDisk", {}).get("id", "")).lower()) or {}
            if int(managed.get("properties", {}).get("maxShares") or 1) > 1:
                return f"Restore points are not supported for shared disks ({managed['id']})"
        return None

    def _restore_point(self, path: str, method: str, body: dict[str, Any]) -> Response:
        """PUT restorePoints: a long-running operation (201 + Azure-AsyncOperation) capturing every disk at once.

        Each disk not excluded gets a disk restore point holding its content at the same instant (crash-consistent
        across the disks); updating an existing restore point is refused, as the API documents.
        """
        key = path.lower()
        collection = self.resources.get(key.rsplit("/restorepoints/", 1)[0])
        if collection is None:
            return self._not_found(key.rsplit("/restorepoints/", 1)[0])
        if key in self.resources or method != "PUT":
            return _error(409, "OperationNotAllowed", "Updating properties of an existing restore point is not allowed")
        properties = body.get("properties") or {}
        vm = self.resources.get(collection["properties"]["source"]["id"].lower())
        if vm is None:
            return _error(404, "NotFound", "the source VM of the restore point collection was not found")
        refusal = self._restore_point_refusal(vm, properties.get("consistencyMode", "CrashConsistent"))
        if refusal is not None:
            return _error(400, "OperationNotAllowed", refusal)
        excluded = {str(item.get("id", "")).lower() for item in properties.get("excludeDisks") or []}
        now = utc(dt.datetime.now(dt.UTC))
        storage = copy.deepcopy(vm["properties"].get("storageProfile", {}))
        for disk in [storage.get("osDisk") or {}, *storage.get("dataDisks", [])]:
            disk_id = str(disk.get("managedDisk", {}).get("id", ""))
            if disk_id.lower() in excluded:
                continue
            point_id = f"{path}/diskRestorePoints/{disk.get('name')}_{uuid.uuid4().hex[:12]}"
            source = self.resources.get(disk_id.lower(), {})
            self.resources[point_id.lower()] = {
                "id": point_id,
                "name": point_id.rsplit("/", 1)[1],
                "type": "Microsoft.Compute/restorePointCollections/restorePoints/diskRestorePoints",
                "properties": {
                    "timeCreated": now,
                    "sourceResourceId": disk_id,
                    "sourceUniqueId": source.get("properties", {}).get("uniqueId"),
                    "encryption": source.get("properties", {}).get("encryption"),
                },
            }
            self.blobs[point_id.lower()] = self.blobs.get(disk_id.lower(), b"")
            disk["diskRestorePoint"] = {"id": point_id}
        point = {
            "id": path,
            "name": path.rsplit("/", 1)[1],
            "type": "Microsoft.Compute/restorePointCollections/restorePoints",
            "properties": {
                "consistencyMode": properties.get("consistencyMode", "CrashConsistent"),
                "excludeDisks": properties.get("excludeDisks") or [],
                "timeCreated": now,
                "provisioningState": "Creating",
                "sourceMetadata": {
                    "vmId": vm["properties"].get("vmId"),
                    "location": vm["location"],
                    "hardwareProfile": vm["properties"].get("hardwareProfile"),
                    "storageProfile": storage,
                },
            },
        }
        self.resources[key] = point
        self.created["microsoft.compute/restorepointcollections/restorepoints"] += 1
        operation = self._new_operation(path, "async", seconds=self.restore_point_seconds)
        return _json(201, point, {"Azure-AsyncOperation": operation, "Retry-After": "0"})

    @staticmethod
    def _type_name(path: str) -> str:
        segments = [part for part in path.split("/") if part]
        lowered = [part.lower() for part in segments]
        index = len(lowered) - 1 - lowered[::-1].index("providers")
        return "/".join([segments[index + 1], *segments[index + 2 :][0::2]])

    def _delete(self, key: str) -> Response:
        if key not in self.resources:
            return _json(204, {})
        for lock_key, lock in self.resources.items():
            scope = lock_key.split("/providers/microsoft.authorization/locks/")[0]
            is_lock = "/providers/microsoft.authorization/locks/" in lock_key
            if (
                is_lock
                and "/providers/microsoft.authorization/locks/" not in key
                and (key + "/").startswith(scope + "/")
            ):
                return _error(
                    409,
                    "ScopeLocked",
                    f"The scope '{key}' cannot perform delete operation because following scope(s) are locked: "
                    f"'{lock['id']}'",
                )
        del self.resources[key]
        self.blobs.pop(key, None)
        return _json(200, {})

    def _action(self, path: str, action: str, body: bytes) -> Response:
        resource_key = path.lower().rsplit("/", 1)[0]
        resource = self.resources.get(resource_key)
        if resource is None:
            return self._not_found(resource_key)
        if action == "begingetaccess":
            request = json.loads(body or b"{}")
            if request.get("access") not in {"Read", "Write"}:
                return _error(400, "InvalidParameter", "access must be Read or Write")
            signature = uuid.uuid4().hex
            self.grants[signature] = resource_key
            resource["properties"]["diskState"] = "ActiveSAS"
            blob_url = (
                f"{self.base_url}/md-{uuid.uuid4().hex[:12]}/abcd?sv=2018-03-28&sr=b&si={signature}&sig={signature}"
            )
            return self._accepted(path, {"accessSAS": blob_url})
        if action == "endgetaccess":
            for signature in [sig for sig, key in self.grants.items() if key == resource_key]:
                del self.grants[signature]
            resource["properties"]["diskState"] = "Unattached"
            return self._accepted(path, None)
        return _error(400, "UnsupportedAction", f"the fake does not implement {action}")

    def _accepted(self, path: str, result: Any) -> Response:
        location = self._new_operation(path.rsplit("/", 1)[0], "location", result)
        return 202, {"Location": location, "Retry-After": "0", "Content-Length": "0"}, b""

    def _new_operation(
        self, path: str, kind: str, result: Any = None, *, seconds: float | None = None, failure: str | None = None
    ) -> str:
        """A new operation's status URL. With ``seconds`` it provisions the resource at ``path``: Creating until
        then, after that Succeeded, or Failed with ``failure``'s error code."""
        segments = [part for part in path.split("/") if part]
        namespace = segments[segments.index("providers") + 1]
        location = self.resources.get(path.lower(), {}).get("location", "eastus")
        operation_id = str(uuid.uuid4())
        url = (
            f"{self.base_url}/subscriptions/{segments[1]}/providers/{namespace}/locations/{location}/operations/"
            f"{operation_id}?api-version=2024-03-02"
        )
        self._operations[operation_id] = {"kind": kind, "polls": 1, "result": result, "url": url, "until": 0.0}
        if seconds is not None:
            self._operations[operation_id] |= {
                "until": time.monotonic() + seconds,
                "resource": path.lower(),
                "outcome": "Failed" if failure else "Succeeded",
                "error": {"code": failure, "message": f"injected provisioning failure of {path}"},
            }
        return url

    def _operation_status(self, operation_id: str, *, monitor: bool = False) -> Response:
        """An operation's status: the Azure-AsyncOperation body, or with ``monitor`` its Location answer (202 while
        it runs; then the result, or the resource it provisioned)."""
        operation = self._operations.get(operation_id)
        if operation is None:
            return _error(404, "OperationNotFound", f"operation {operation_id} not found")
        running = operation["polls"] > 0 or time.monotonic() < operation["until"]
        operation["polls"] -= 1
        outcome = operation.get("outcome", "Succeeded")
        if operation["kind"] == "async" and not monitor:
            status = {"name": operation_id, "status": "InProgress" if running else outcome}
            return _json(200, status | ({"error": operation["error"]} if outcome == "Failed" and not running else {}))
        if running:
            return 202, {"Location": operation["url"], "Retry-After": "0"}, b""
        if outcome == "Failed":
            return _json(400, {"error": operation["error"]})
        provisioned = self.resources.get(operation.get("resource", ""))
        if operation["result"] is None and provisioned is None:
            return 200, {}, b""
        return _json(200, operation["result"] if provisioned is None else provisioned)

    def _list_subscriptions(self, method: str, query: dict[str, str]) -> Response:
        """Subscriptions - List (Microsoft.Resources): GET only, paged with ``nextLink`` and ``$skiptoken``."""
        if method != "GET":
            return _error(405, "MethodNotAllowed", f"{method} is not supported on /subscriptions")
        if query["api-version"] not in SUBSCRIPTION_API_VERSIONS:
            return _error(400, "InvalidApiVersionParameter", f"The api-version '{query['api-version']}' is invalid.")
        offset = int(query.get("$skiptoken", "0"))
        body: dict[str, Any] = {"value": self.subscriptions[offset : offset + self.page_size]}
        if offset + self.page_size < len(self.subscriptions):
            body["nextLink"] = (
                f"{self.base_url}/subscriptions?api-version={query['api-version']}&$skiptoken={offset + self.page_size}"
            )
        return _json(200, body)

    def _activity_log(self, path: str, query: dict[str, str]) -> Response:
        subscription = path.split("/")[2]
        text = query.get("$filter", "")
        terms = {(field.lower(), op.lower()): value for field, op, value in _FILTER_TERMS.findall(text)}
        if ("eventtimestamp", "ge") not in terms:
            return _error(400, "BadRequest", "The $filter must contain eventTimestamp ge '<start>'")
        start = _parse_time(terms[("eventtimestamp", "ge")])
        end = _parse_time(terms.get(("eventtimestamp", "le"), utc(dt.datetime.now(dt.UTC))))
        group = terms.get(("resourcegroupname", "eq"), "").lower()
        resource = terms.get(("resourceuri", "eq"), "").lower()
        matching = [
            event
            for event in self.activity.get(subscription.lower(), [])
            if start <= _parse_time(event["eventTimestamp"]) <= end
            and (not group or (event.get("resourceGroupName") or "").lower() == group)
            and (not resource or (event.get("resourceId") or "").lower().startswith(resource))
        ]
        matching.sort(key=lambda event: event["eventTimestamp"], reverse=True)
        offset = int(query.get("$skiptoken", "0"))
        page = matching[offset : offset + self.page_size]
        next_link = None
        if offset + self.page_size < len(matching):
            next_link = (
                f"{self.base_url}{path}?api-version={query.get('api-version', '2015-04-01')}"
                f"&$filter={quote(text)}&$skiptoken={offset + self.page_size}"
            )
        return _json(200, {"value": page, "nextLink": next_link})

    def _blob(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        with self._lock:
            self.requests.append(
                {
                    "method": method,
                    "path": path,
                    "operation": "Storage.Blob/GetBlob",
                    "user_agent": headers.get("user-agent", ""),
                }
            )
            code = self._failure_for("Storage.Blob/GetBlob")
            if code is not None:
                return _error(ERROR_STATUS.get(code, 500), code, "injected failure of Storage.Blob/GetBlob")
            snapshot_key = self.grants.get(query["sig"])
            if snapshot_key is None:
                return (
                    403,
                    {"x-ms-error-code": "AuthenticationFailed"},
                    b"<Error><Code>AuthenticationFailed</Code></Error>",
                )
            content = self.blobs.get(snapshot_key, b"")
        total = len(content)
        base_headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-blob-type": "PageBlob", "Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("x-ms-range") or headers.get("range") or "")
        if match is None:
            return 200, base_headers, content
        first = int(match.group(1))
        last = min(int(match.group(2)) if match.group(2) else total - 1, total - 1)
        if first >= total:
            return 416, {**base_headers, "Content-Range": f"bytes */{total}"}, b""
        return 206, {**base_headers, "Content-Range": f"bytes {first}-{last}/{total}"}, content[first : last + 1]
