"""Microsoft Graph v1.0 directory objects for the fake: users and service principals, read and contained.

Held to the v1.0 reference of each call the tool makes: ``GET /users/{id | userPrincipalName}`` returns the
default property set unless ``$select`` names others (an unknown name is 400), ``signInActivity`` needs
AuditLog.Read.All on top; ``memberOf``, ``appRoleAssignments``, ``authentication/methods`` and ``owners`` are
collections; ``POST /users/{id}/revokeSignInSessions`` answers ``{"value": true}`` and moves
``signInSessionsValidFromDateTime``; ``PATCH`` takes only writable properties of the right type and answers
204; ``GET /directoryObjects/{id}`` carries ``@odata.type``. Each call needs one of the application permissions
the reference lists (403 ``Authorization_RequestDenied`` otherwise); unknown ids are 404
``Request_ResourceNotFound``. A managed identity's service principal cannot be changed (400, as Graph answers).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote

Response = tuple[int, dict[str, str], bytes]
_BASE = "https://graph.microsoft.com/v1.0/$metadata#"
# Per call, the alternatives of application permissions that allow it (any one suffices).
_READ_USER = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
_READ_APP = ("Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
_PERMISSIONS: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("GET", "users", ""): _READ_USER,
    ("GET", "users", "memberOf"): ("GroupMember.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    ("GET", "users", "appRoleAssignments"): ("Directory.Read.All", "AppRoleAssignment.ReadWrite.All"),
    ("GET", "users", "authentication/methods"): (
        "UserAuthenticationMethod.Read.All",
        "UserAuthenticationMethod.ReadWrite.All",
    ),
    ("POST", "users", "revokeSignInSessions"): ("User.RevokeSessions.All", "User.ReadWrite.All"),
    ("PATCH", "users", ""): ("User.EnableDisableAccount.All", "User.ReadWrite.All", "Directory.ReadWrite.All"),
    ("GET", "servicePrincipals", ""): _READ_APP,
    ("GET", "servicePrincipals", "owners"): _READ_APP,
    ("GET", "servicePrincipals", "memberOf"): ("GroupMember.Read.All", "Directory.Read.All"),
    ("GET", "servicePrincipals", "appRoleAssignments"): _READ_APP,
    ("PATCH", "servicePrincipals", ""): ("Application.ReadWrite.All", "Directory.ReadWrite.All"),
    ("GET", "directoryObjects", ""): ("Directory.Read.All", "Directory.ReadWrite.All"),
}
_USER_DEFAULT = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
    "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip
_USER_SELECTABLE = {
    *_USER_DEFAULT,
    "accountEnabled", "createdDateTime", "lastPasswordChangeDateTime", "signInSessionsValidFromDateTime",
    "signInActivity", "userType", "onPremisesSyncEnabled", "creationType", "identities",
}  # fmt: skip
_WRITABLE = {"users": {"accountEnabled": bool}, "servicePrincipals": {"accountEnabled": bool}}
_TYPES = {
    "users": "#microsoft.graph.user",
    "servicePrincipals": "#microsoft.graph.servicePrincipal",
    "applications": "#microsoft.graph.application",
}
_APP_ID = re.compile(r"^servicePrincipals\(appId='([^']*)'\)$")


def graph_error(
    status: int, code: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> Response:
    """Graph's error body (``error.code``, ``error.message``, ``error.innerError`` with the request id)."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id},
        }
    }
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _ok(body: dict[str, Any], request_id: str) -> Response:
    headers = {"Content-Type": "application/json;odata.metadata=minimal", "request-id": request_id}
    return 200, headers, json.dumps(body).encode()


class Directory:
    """Users and service principals of one tenant, with their memberships, role grants, methods and owners."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"users": {}, "servicePrincipals": {}, "applications": {}}
        self.relations: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (object id, relation) -> values
        self._lock = threading.RLock()

    def add(self, collection: str, obj: dict[str, Any], **relations: list[dict[str, Any]]) -> None:
        """Seed a user or service principal (every property) and its relations (``memberOf=[...]``...)."""
        with self._lock:
            self.objects[collection][obj["id"]] = obj
            for name, values in relations.items():
                self.relations[(obj["id"], name.replace("authentication_methods", "authentication/methods"))] = values

    def remove_where(self, collection: str, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """Delete the objects of a collection that match, as the directory does when their owner goes away."""
        with self._lock:
            objects = self.objects[collection]
            for object_id in [key for key, obj in objects.items() if predicate(obj)]:
                del objects[object_id]
                for relation in [key for key in self.relations if key[0] == object_id]:
                    del self.relations[relation]

    def get(self, collection: str, object_id: str) -> dict[str, Any]:
        """A seeded object as it is now."""
        with self._lock:
            return copy.deepcopy(self.objects[collection][object_id])

    def handle(self, method: str, url: SplitResult, roles: set[str], body: bytes, request_id: str) -> Response:
        """One directory call: route, permission, lookup, then the answer."""
        path = unquote(url.path).removeprefix("/v1.0/")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        head, _, rest = path.partition("/")
        by_app = _APP_ID.match(head)
        collection = "servicePrincipals" if by_app else head
        key, _, relation = rest.partition("/")
        if by_app:
            key, relation = by_app.group(1), rest
        allowed = _PERMISSIONS.get((method, collection, relation))
        if allowed is None or not key:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{path}'.", request_id)
        if not roles & set(allowed):
            return graph_error(
                403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.", request_id
            )
        with self._lock:
            obj = self._find(collection, key, by_app=bool(by_app))
            if obj is None:
                return graph_error(
                    404,
                    "Request_ResourceNotFound",
                    f"Resource '{key}' does not exist or one of its queried reference-property objects are not"
                    " present.",
                    request_id,
                )
            if collection == "directoryObjects":
                return _ok({"@odata.context": f"{_BASE}directoryObjects/$entity", **obj}, request_id)
            if method == "PATCH":
                return self._patch(collection, obj, body, request_id)
            if relation == "revokeSignInSessions":
                obj["signInSessionsValidFromDateTime"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                return _ok({"@odata.context": f"{_BASE}Edm.Boolean", "value": True}, request_id)
            if relation:
                values = self.relations.get((obj["id"], relation), [])
                return _ok({"@odata.context": f"{_BASE}{relation}", "value": copy.deepcopy(values)}, request_id)
            return self._entity(collection, obj, query, roles, request_id)

    def _find(self, collection: str, key: str, *, by_app: bool) -> dict[str, Any] | None:
        if collection == "directoryObjects":
            for name, objects in self.objects.items():
                if key in objects:
                    return {"@odata.type": _TYPES[name], **copy.deepcopy(objects[key])}
            return None
        objects = self.objects[collection]
        if by_app:
            return next((o for o in objects.values() if o.get("appId") == key), None)
        if key in objects:
            return objects[key]
        if collection == "users":  # a user is also addressed by its user principal name
            return next((o for o in objects.values() if o["userPrincipalName"].lower() == key.lower()), None)
        return None

    def _entity(
        self, collection: str, obj: dict[str, Any], query: dict[str, str], roles: set[str], request_id: str
    ) -> Response:
        if collection == "servicePrincipals":
            return _ok({"@odata.context": f"{_BASE}servicePrincipals/$entity", **copy.deepcopy(obj)}, request_id)
        selected = [name.strip() for name in query["$select"].split(",")] if "$select" in query else _USER_DEFAULT
        unknown = [name for name in selected if name not in _USER_SELECTABLE]
        if unknown:
            message = f"Could not find a property named '{unknown[0]}' on type 'microsoft.graph.user'."
            return graph_error(400, "BadRequest", message, request_id)
        if "signInActivity" in selected and "AuditLog.Read.All" not in roles:
            message = "Neither tenant is B2C or tenant doesn't have premium license"
            return graph_error(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant", message, request_id)
        body = {name: copy.deepcopy(obj.get(name)) for name in selected}
        return _ok({"@odata.context": f"{_BASE}users(...)/$entity", **body}, request_id)

    def _patch(self, collection: str, obj: dict[str, Any], body: bytes, request_id: str) -> Response:
        try:
            changes = json.loads(body or b"{}")
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.", request_id)
        if not isinstance(changes, dict) or not changes:
            return graph_error(400, "BadRequest", "Empty Payload. JSON content expected.", request_id)
        writable = _WRITABLE[collection]
        for name, value in changes.items():
            if name not in writable:
                return graph_error(400, "Request_BadRequest", f"Invalid property '{name}'.", request_id)
            if not isinstance(value, writable[name]):
                return graph_error(400, "Request_BadRequest", f"Invalid value for property '{name}'.", request_id)
        if obj.get("servicePrincipalType") == "ManagedIdentity":
            message = "Updates to managed identity service principals are not supported; change the Azure resource."
            return graph_error(400, "Request_BadRequest", message, request_id)
        obj.update(changes)
        return 204, {"request-id": request_id}, b""
