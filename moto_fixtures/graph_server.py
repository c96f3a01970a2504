"""A fake of the Microsoft Graph audit log API (``auditLogs/signIns`` and ``auditLogs/directoryAudits``)
and of the directory objects a responder captures and contains (users, service principals).

It is held to the published contract of the v1.0 endpoints the tool calls: a bearer token is required
(401 ``InvalidAuthenticationToken``), only GET, only the documented query options, a ``$filter`` parsed as
OData (string literals quoted with ``''`` escapes, DateTimeOffset literals unquoted, only the properties and
operators each resource documents as filterable: anything else is 400 ``Request_UnsupportedQuery``), ``$top``
of at most 1,000 sign-ins, newest first, ``@odata.nextLink`` paging with an opaque ``$skiptoken``, and
throttling answered with 429, ``Retry-After`` and Graph's error body (``error.code``, ``error.innerError`` with
the ``request-id``). Responses carry ``request-id`` and echo ``client-request-id`` as Graph does.

Directory objects (:mod:`moto_fixtures.graph_directory`) answer 403 ``Authorization_RequestDenied`` unless the
token's ``roles`` claim holds an application permission the v1.0 reference lists for the call, 404
``Request_ResourceNotFound`` for an unknown id, and 400 for a ``$select`` of a property the type lacks.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from moto_fixtures.graph_directory import Directory, Response, graph_error
from moto_fixtures.local_http import FakeHandler, serve_https

MAX_SIGNIN_PAGE = 1000
_QUERY_OPTIONS = {"$filter", "$top", "$skiptoken", "$orderby", "$select"}
# Filterable properties of each resource and the operators the documentation lists for them.
_TIME_OPS = {"eq", "ge", "le", "gt", "lt"}
_FILTERABLE: dict[str, dict[str, set[str]]] = {
    "signIns": {
        "createdDateTime": _TIME_OPS,
        "userPrincipalName": {"eq"},
        "userId": {"eq"},
        "appId": {"eq"},
        "ipAddress": {"eq"},
        "correlationId": {"eq"},
    },
    "directoryAudits": {
        "activityDateTime": _TIME_OPS,
        "initiatedBy/user/userPrincipalName": {"eq"},
        "initiatedBy/user/id": {"eq"},
        "initiatedBy/app/appId": {"eq"},
        "category": {"eq"},
        "activityDisplayName": {"eq"},
        "correlationId": {"eq"},
    },
}
_TIME_PROPERTY = {"signIns": "createdDateTime", "directoryAudits": "activityDateTime"}
_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<string>'(?:[^']|'')*')|(?P<time>\d{4}-\d\d-\d\dT[\d:.]+Z)"
    r"|(?P<word>[A-Za-z][\w/]*))"
)


class FilterError(ValueError):
    """A ``$filter`` Graph would refuse."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FilterError(f"Invalid filter clause: syntax error at position {position} in '{text}'")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    """OData boolean expressions of comparisons: ``a ge T and (b eq 'x' or b eq 'y')`` -> a predicate."""

    def __init__(self, resource: str, text: str) -> None:
        self.resource, self.tokens, self.at = resource, _tokens(text), 0

    def parse(self) -> Callable[[dict[str, Any]], bool]:
        predicate = self._or()
        if self.at != len(self.tokens):
            raise FilterError(f"Invalid filter clause: unexpected '{self.tokens[self.at][1]}'")
        return predicate

    def _peek_word(self, *words: str) -> bool:
        return self.at < len(self.tokens) and self.tokens[self.at] in {("word", w) for w in words}

    def _or(self) -> Callable[[dict[str, Any]], bool]:
        terms = [self._and()]
        while self._peek_word("or"):
            self.at += 1
            terms.append(self._and())
        return lambda record: any(term(record) for term in terms)

    def _and(self) -> Callable[[dict[str, Any]], bool]:
        terms = [self._term()]
        while self._peek_word("and"):
            self.at += 1
            terms.append(self._term())
        return lambda record: all(term(record) for term in terms)

    def _next(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise FilterError("Invalid filter clause: the expression ends too early")
        self.at += 1
        return self.tokens[self.at - 1]

    def _term(self) -> Callable[[dict[str, Any]], bool]:
        kind, value = self._next()
        if kind == "open":
            inner = self._or()
            if self._next()[0] != "close":
                raise FilterError("Invalid filter clause: ')' expected")
            return inner
        if kind != "word":
            raise FilterError(f"Invalid filter clause: a property was expected, not {value}")
        operators = _FILTERABLE[self.resource].get(value)
        if operators is None:
            raise FilterError(f"Filter not supported on property '{value}' of {self.resource}")
        operator = self._next()[1]
        if operator not in operators:
            raise FilterError(f"Operator '{operator}' not supported on property '{value}'")
        literal_kind, literal = self._next()
        is_time = value == _TIME_PROPERTY[self.resource]
        if is_time != (literal_kind == "time"):
            raise FilterError(
                f"Invalid filter clause: {value} needs an unquoted DateTimeOffset"
                if is_time
                else f"Invalid filter clause: {value} needs a quoted string"
            )
        wanted: Any = _time(literal) if is_time else literal[1:-1].replace("''", "'")
        return _comparison(value, operator, wanted, is_time)


def _comparison(path: str, operator: str, wanted: Any, is_time: bool) -> Callable[[dict[str, Any]], bool]:
    def check(record: dict[str, Any]) -> bool:
        value: Any = record
        for part in path.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            return False
        got = _time(value) if is_time else str(value).lower()
        want = wanted if is_time else str(wanted).lower()
        return {
            "eq": got == want,
            "ge": got >= want,
            "le": got <= want,
            "gt": got > want,
            "lt": got < want,
        }[operator]

    return check


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


_error = graph_error


def _token_roles(authorization: str) -> set[str]:
    """The application permissions in a bearer token's ``roles`` claim (unverified, as the fake trusts it)."""
    parts = authorization.removeprefix("Bearer ").split(".")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (IndexError, ValueError):
        return set()
    roles = claims.get("roles") if isinstance(claims, dict) else None
    return {str(role) for role in roles} if isinstance(roles, list) else set()


class FakeGraph:
    """Sign-in and directory audit records of one tenant, served over HTTPS on 127.0.0.1."""

    def __init__(self, *, page_size: int = MAX_SIGNIN_PAGE) -> None:
        self.page_size = page_size  # what the fake serves per page when $top is larger or absent
        self.records: dict[str, list[dict[str, Any]]] = {"signIns": [], "directoryAudits": []}
        self.throttles: dict[str, list[int]] = {}  # resource -> Retry-After values still to serve
        self.requests: list[dict[str, Any]] = []
        self.next_link_base: str | None = None  # a test may point nextLinks elsewhere (a hostile answer)
        self.directory = Directory()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.base_url = ""

    def start(self, cert: Path, key: Path) -> None:
        """Serve HTTPS with this certificate on an ephemeral port in a daemon thread."""
        self._server, self.base_url = serve_https(self, FakeHandler, cert, key, "fake-graph")

    def failure(self, exc: Exception) -> Response:
        """The answer to a request the fake itself failed on (Graph's error shape)."""
        return _error(500, "UnknownError", f"{type(exc).__name__}: {exc}", "fake")

    def response_headers(self, request_headers: dict[str, str]) -> dict[str, str]:
        """Graph echoes the client's request id."""
        given = request_headers.get("client-request-id")
        return {"client-request-id": given} if given else {}

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def throttle(self, resource: str, *retry_after: int) -> None:
        """Answer the next requests for ``signIns`` or ``directoryAudits`` with 429 and these Retry-After values."""
        self.throttles.setdefault(resource, []).extend(retry_after)

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Response:
        """One request: authentication, routing, query validation, throttling, then a page."""
        request_id = str(uuid.uuid4())
        url = urlsplit(target)
        resource = url.path.removeprefix("/v1.0/auditLogs/")
        with self._lock:
            self.requests.append({"method": method, "path": url.path, "query": url.query, "headers": headers})
        if not headers.get("authorization", "").startswith("Bearer ") or len(headers["authorization"]) <= 7:
            return _error(401, "InvalidAuthenticationToken", "Access token is empty.", request_id)
        if not url.path.startswith("/v1.0/auditLogs/"):
            with self._lock:
                waits = self.throttles.get(unquote(url.path).split("/")[2].split("(")[0]) or []
                if waits:
                    return _error(
                        429, "TooManyRequests", "Too many requests.", request_id, {"Retry-After": str(waits.pop(0))}
                    )
                return self.directory.handle(method, url, _token_roles(headers["authorization"]), body, request_id)
        if not {"AuditLog.Read.All"} & _token_roles(headers["authorization"]):
            return _error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.",
                          request_id)  # fmt: skip
        if method != "GET":
            return _error(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed.", request_id)
        if not url.path.startswith("/v1.0/auditLogs/") or resource not in self.records:
            return _error(400, "BadRequest", f"Resource not found for the segment '{resource}'.", request_id)
        with self._lock:
            waits = self.throttles.get(resource) or []
            if waits:
                wait = waits.pop(0)
                return _error(429, "TooManyRequests", "Too many requests.", request_id, {"Retry-After": str(wait)})
        try:
            return self._page(resource, url.path, dict(parse_qsl(url.query, keep_blank_values=True)), request_id)
        except FilterError as exc:
            return _error(400, "Request_UnsupportedQuery", str(exc), request_id)

    def _page(self, resource: str, path: str, query: dict[str, str], request_id: str) -> Response:
        unknown = set(query) - _QUERY_OPTIONS
        if unknown:
            raise FilterError(f"Query option '{sorted(unknown)[0]}' is not allowed.")
        top = self._top(resource, query.get("$top"))
        predicate = _Parser(resource, query["$filter"]).parse() if query.get("$filter") else (lambda _: True)
        offset = _skiptoken(query.get("$skiptoken"))
        time_property = _TIME_PROPERTY[resource]
        with self._lock:
            matching = sorted(
                (r for r in self.records[resource] if predicate(r)), key=lambda r: r[time_property], reverse=True
            )
        size = min(top, self.page_size)
        body: dict[str, Any] = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#auditLogs/{resource}",
            "value": matching[offset : offset + size],
        }
        if offset + size < len(matching):
            token = base64.urlsafe_b64encode(json.dumps({"o": offset + size}).encode()).decode()
            rest = "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items() if key != "$skiptoken")
            base = self.next_link_base or self.base_url
            body["@odata.nextLink"] = f"{base}{path}?{rest}&$skiptoken={token}"
        headers = {"Content-Type": "application/json;odata.metadata=minimal", "request-id": request_id}
        return 200, headers, json.dumps(body).encode()

    @staticmethod
    def _top(resource: str, value: str | None) -> int:
        if value is None:
            return MAX_SIGNIN_PAGE
        if not value.isdigit() or int(value) < 1:
            raise FilterError(f"Invalid $top value '{value}'.")
        if resource == "signIns" and int(value) > MAX_SIGNIN_PAGE:
            raise FilterError(f"The limit of '{MAX_SIGNIN_PAGE}' for Top query has been exceeded.")
        return int(value)


def _skiptoken(value: str | None) -> int:
    if value is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(value.encode()))["o"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FilterError("Invalid $skiptoken.") from exc
    if not isinstance(offset, int) or offset < 0:
        raise FilterError("Invalid $skiptoken.")
    return offset
