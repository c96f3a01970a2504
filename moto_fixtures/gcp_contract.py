"""Google's published contract for the sandboxed Google Cloud: every request checked against a discovery document.

The discovery documents are the ones ``google-api-python-client`` ships (``googleapiclient/discovery_cache/
documents``), read from the installed package (nothing is copied into the project) and indexed once per process.
A request is matched to its documented method by HTTP verb and path template (the most literal template wins, as
Google's front end routes; a method's media upload and media download paths count as its own); then its path and
query parameters (required, types, enums, patterns) and its JSON body (against the method's request schema:
unknown names, types, enums, patterns, and the fields the document marks required for that method; an upload's
JSON metadata part) are checked. A refusal is a :class:`ContractError`, answered in Google's error format by
:func:`error_body`: the older JSON APIs' ``errors`` list (Compute Engine, Cloud Storage, Admin SDK), or the newer
APIs' ``details``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

# The APIs the fake serves: each one's discovery document and the path prefix its methods live under.
DOCUMENTS = {
    "compute": "compute.v1.json",
    "logging": "logging.v2.json",
    "iam": "iam.v1.json",
    "cloudresourcemanager": "cloudresourcemanager.v1.json",
    "admin": "admin.reports_v1.json",
    "storage": "storage.v1.json",
    "cloudkms": "cloudkms.v1.json",
}
# The APIs the Compute Engine / Logging / IAM fake serves (Cloud Storage and Cloud KMS have fakes of their own).
GCP_SERVER_APIS = ("compute", "logging", "iam", "cloudresourcemanager", "admin")
_OLDER_FORMAT = {"compute", "admin", "storage"}  # the JSON APIs whose errors carry errors[] with domain and reason
CANONICAL = {  # HTTP status -> google.rpc.Code name, as Google's JSON errors carry it in ``status``
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_REQUIRED_DESCRIPTION = re.compile(r"\s*(Required\.|REQUIRED:)")
_INT_TEXT = re.compile(r"-?\d+")
_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1),
           "uint64": (0, 2**64 - 1)}  # fmt: skip


class ContractError(Exception):
    """A request the real API refuses: HTTP status, Google's ``reason`` and message, and the field at fault."""

    def __init__(self, status: int, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field


class ContractRefusalError(AssertionError):
    """Requests a fake answered with the contract's refusal, raised when the fake closes: the code that opened it (a
    test, the demo) sent what the real API refuses."""


class RefusingFake(Protocol):
    """A fake that keeps the contract's refusals, one line a request."""

    refusals: list[str]


def raise_refusals(fake: str, refusals: list[str]) -> None:
    """Raise :class:`ContractRefusalError` listing ``refusals`` (none: nothing)."""
    if refusals:
        raise ContractRefusalError(f"requests the real API refuses, sent to {fake}:\n" + "\n".join(refusals))


@contextmanager
def expecting_refusals(fake: RefusingFake) -> Iterator[None]:
    """Refusals inside the block are expected (a test sends invalid requests on purpose): they stay in
    ``fake.refusals`` for the block to read and are taken out of it when the block ends."""
    before = len(fake.refusals)
    try:
        yield
    finally:
        del fake.refusals[before:]


def error_body(api: str, status: int, code: str, message: str, *, field: str | None = None) -> dict[str, Any]:
    """Google's JSON error envelope. ``code`` is a google.rpc.Code name (``INVALID_ARGUMENT``) or a Compute reason
    (``alreadyExists``); Compute answers with an ``errors`` list, the newer APIs with typed ``details``."""
    canonical = code if code.isupper() else CANONICAL.get(status, "UNKNOWN")
    error: dict[str, Any] = {"code": status, "message": message, "status": canonical}
    if api in _OLDER_FORMAT:
        domain = "usageLimits" if code in {"rateLimitExceeded", "userRateLimitExceeded"} else "global"
        error["errors"] = [{"message": message, "domain": domain, "reason": code}]
    elif status == 400:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field or "", "description": message}],
            }
        ]
    elif status == 429:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
             "domain": "googleapis.com", "metadata": {"service": f"{api}.googleapis.com"}}
        ]  # fmt: skip
    return {"error": error}


def api_of(raw_path: str) -> str:
    """The API a request path belongs to (by its prefix), for the error format to answer in."""
    path = raw_path.split("?", 1)[0].lstrip("/")
    if path.startswith("compute/"):
        return "compute"
    if path.startswith("admin/"):
        return "admin"
    if path.startswith("v2/"):
        return "logging"
    return "cloudresourcemanager" if re.fullmatch(r"v1/projects/[^/]+:\w+", path) else "iam"


@dataclass(frozen=True)
class Method:
    """One documented method: where it lives and what it takes."""

    api: str
    id: str  # e.g. compute.disks.createSnapshot
    http_method: str
    template: re.Pattern[str]  # over the raw (still percent-encoded) path, one group per path parameter
    literal: int  # characters of the template outside parameters (the more, the more specific)
    parameters: dict[str, dict[str, Any]]
    request: str | None  # the request body's schema name
    response: str | None  # the response body's

    @property
    def operation(self) -> str:
        """The method id without its API name (``disks.createSnapshot``)."""
        return self.id.split(".", 1)[1]


def _template(path: str) -> tuple[re.Pattern[str], int]:
    """A path template (``v1/{+name}:disable``) as a regular expression over the raw path, and its literal length."""
    pattern, literal, position = "", 0, 0
    for match in re.finditer(r"\{(\+?)([^}]+)\}", path):
        text = path[position : match.start()]
        pattern += re.escape(text) + (f"(?P<{_group(match[2])}>.+?)" if match[1] else f"(?P<{_group(match[2])}>[^/]+?)")
        literal += len(text)
        position = match.end()
    pattern += re.escape(path[position:])
    return re.compile(pattern), literal + len(path) - position


def _group(name: str) -> str:
    return re.sub(r"\W", "_", name)


class Contract:
    """The discovery documents of the APIs the fake serves, indexed by HTTP verb."""

    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self.documents = documents
        # (HTTP verb, "/" count of the path, its last segment or "*") -> methods; reserved expansions ({+name})
        # span any number of segments, so they are kept under (verb, -1, "*") and tried for every path
        self.methods: dict[tuple[str, int, str], list[Method]] = {}
        for api, document in documents.items():
            for method in _methods(document.get("resources", {})):
                for path in _paths(document, method):
                    template, literal = _template(path)
                    last = path.rsplit("/", 1)[-1]
                    key = (
                        (method["httpMethod"], -1, "*")
                        if "{+" in path
                        else (method["httpMethod"], path.count("/"), "*" if "{" in last else last)
                    )
                    self.methods.setdefault(key, []).append(
                        Method(api, method["id"], method["httpMethod"], template, literal,
                               method.get("parameters", {}), (method.get("request") or {}).get("$ref"),
                               (method.get("response") or {}).get("$ref"))
                    )  # fmt: skip

    def resolve(self, http_method: str, raw_path: str) -> tuple[Method, dict[str, str]]:
        """The documented method a request calls, and its decoded path parameters (404 NOT_FOUND if none)."""
        path = raw_path.split("?", 1)[0].lstrip("/")
        near: ContractError | None = None
        depth, last = path.count("/"), path.rsplit("/", 1)[-1]
        candidates = [
            *self.methods.get((http_method, depth, last), []),
            *self.methods.get((http_method, depth, "*"), []),
            *self.methods.get((http_method, -1, "*"), []),
        ]
        for method in sorted(candidates, key=lambda m: -m.literal):  # the most literal template wins
            match = method.template.fullmatch(path)
            if match is None:
                continue
            values = {
                name: unquote(match[_group(name)]) for name in method.parameters if _group(name) in match.groupdict()
            }
            try:
                for name, value in values.items():
                    _check_parameter(name, value, method.parameters[name])
            except ContractError as exc:
                near = near or exc  # a template that fits with a value it refuses; a later one may fit better
                continue
            return method, values
        if near is not None:
            raise near
        raise ContractError(404, "notFound", f"The requested URL /{path} was not found on this server ({http_method}).")

    def check_response(self, method: Method, payload: Any) -> None:
        """Raise :class:`ContractError` when a response body is not of the method's documented response schema."""
        if method.response is not None:
            schemas = self.documents[method.api].get("schemas", {})
            _Body(schemas, method, output=True).check(payload, {"$ref": method.response}, "")

    def check(self, http_method: str, raw_path: str, body: Any) -> Method:
        """Refuse (:class:`ContractError`) what the documented method refuses; the method when the request is valid."""
        method, _ = self.resolve(http_method, raw_path)
        query = parse_qs(raw_path.split("?", 1)[1], keep_blank_values=True) if "?" in raw_path else {}
        system = self.documents[method.api].get("parameters", {})
        for name, values in query.items():
            spec = _lookup(method.parameters, name) or _lookup(system, name.removeprefix("$"))
            if spec is None or spec.get("location") == "path":
                raise ContractError(
                    400, "invalid", f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                    f"parameter. Field '{name}' could not be found in request message.", name
                )  # fmt: skip
            if len(values) > 1 and not spec.get("repeated"):
                raise ContractError(400, "invalid", f"Invalid value for field '{name}': it is not repeated", name)
            for value in values:
                _check_parameter(name, value.split(";", 1)[0] if name in {"alt", "$alt"} else value, spec)
        for name, spec in method.parameters.items():
            if spec.get("required") and spec.get("location") == "query" and not _given(query, name):
                raise ContractError(400, "required", f"Required parameter '{name}' not specified", name)
        schemas = self.documents[method.api].get("schemas", {})
        if method.request is None:
            if body not in (None, {}):
                names = ", ".join(f'"{key}"' for key in body) if isinstance(body, dict) else repr(body)
                raise ContractError(400, "invalid", f"Invalid JSON payload received. Unknown name {names}: "
                                    f"{method.id} takes no request body.")  # fmt: skip
            return method
        _Body(schemas, method).check({} if body is None else body, {"$ref": method.request}, "")
        return method


def _paths(document: dict[str, Any], method: dict[str, Any]) -> list[str]:
    """Where a method is served: its path, its media upload paths, and its media download path."""
    paths = [document["servicePath"] + method["path"]]
    protocols = (method.get("mediaUpload") or {}).get("protocols", {})
    paths += [protocol["path"].lstrip("/") for protocol in protocols.values()]
    if method.get("useMediaDownloadService"):
        paths.append("download/" + paths[0])
    return paths


def _methods(resources: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for resource in resources.values():
        found.extend(resource.get("methods", {}).values())
        found.extend(_methods(resource.get("resources", {})))
    return found


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _lookup(specs: dict[str, Any], name: str) -> Any:
    """The spec of ``name`` (its JSON name, or the proto field name that Google's parsers accept too)."""
    if name in specs:
        return specs[name]
    return next((spec for key, spec in specs.items() if _snake(key) == name), None)


def _given(query: dict[str, list[str]], name: str) -> bool:
    return name in query or _snake(name) in query


def _check_parameter(name: str, value: str, spec: dict[str, Any]) -> None:
    """A path or query parameter (always text on the wire) against its documented type, enum and pattern."""
    kind, fmt = spec.get("type", "string"), spec.get("format")
    if kind == "boolean" and value.lower() not in {"true", "false", "1", "0"}:
        raise ContractError(400, "invalid", f"Invalid value at '{name}' (TYPE_BOOL), \"{value}\"", name)
    if kind == "integer" or fmt in _RANGES:
        _check_integer(name, value, fmt)
    if "enum" in spec and value not in spec["enum"]:
        raise ContractError(400, "invalid", f"Invalid value at '{name}', \"{value}\": not one of the enum values", name)
    pattern = spec.get("pattern")
    if pattern and re.fullmatch(pattern, value) is None:
        raise ContractError(
            400, "invalid", f"Invalid value for field '{name}': '{value}'. Must be a match of regex '{pattern}'", name
        )


def _check_integer(where: str, value: Any, fmt: str | None) -> None:
    """An integer (a JSON number, or its decimal text as Google accepts for every integer type) within its range."""
    if isinstance(value, bool) or not (
        isinstance(value, int)
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and _INT_TEXT.fullmatch(value))
    ):
        raise ContractError(
            400, "invalid", f"Invalid value at '{where}' ({(fmt or 'int32').upper()}), {value!r}", where
        )
    low, high = _RANGES.get(fmt or "int32", _RANGES["int32"])
    if not low <= int(value) <= high:
        raise ContractError(400, "invalid", f"Invalid value at '{where}' ({fmt}): {value} is out of range", where)


class _Body:
    """A JSON request body checked against its schema, as Google's JSON parser and the method's validation do."""

    def __init__(self, schemas: dict[str, Any], method: Method, *, output: bool = False) -> None:
        self.schemas = schemas
        self.method = method
        self.output = output  # a response: no field is required of it

    def check(self, value: Any, schema: dict[str, Any], where: str) -> None:
        """Raise :class:`ContractError` for the first thing in ``value`` that the schema refuses."""
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        if value is None:
            return  # JSON null is an unset field
        kind = schema.get("type", "object" if "properties" in schema else "any")
        if kind == "object":
            self._object(value, schema, where)
        elif kind == "array":
            if not isinstance(value, list):
                raise ContractError(
                    400, "invalid", f"Invalid value at '{where}': expected a list, got {value!r}", where
                )
            for index, item in enumerate(value):
                self.check(item, schema.get("items", {}), f"{where}[{index}]")
        elif kind == "integer":
            _check_integer(where, value, schema.get("format"))
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ContractError(400, "invalid", f"Invalid value at '{where}' (TYPE_DOUBLE), {value!r}", where)
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise ContractError(400, "invalid", f"Invalid value at '{where}' (TYPE_BOOL), {value!r}", where)
        elif kind == "string":
            self._string(value, schema, where)

    def _string(self, value: Any, schema: dict[str, Any], where: str) -> None:
        fmt = schema.get("format")
        if fmt in _RANGES:  # int64 and friends travel as strings, though numbers are accepted too
            _check_integer(where, value, fmt)
            return
        if not isinstance(value, str):
            raise ContractError(400, "invalid", f"Invalid value at '{where}' (TYPE_STRING), {value!r}", where)
        if fmt == "byte":
            try:
                base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ContractError(
                    400, "invalid", f"Invalid value at '{where}' (TYPE_BYTES), {value!r}", where
                ) from None
        if "enum" in schema and value not in schema["enum"]:
            raise ContractError(
                400, "invalid", f"Invalid value for field '{where}': '{value}'. Must be one of {schema['enum']}", where
            )
        pattern = schema.get("pattern")
        if pattern and re.fullmatch(pattern, value) is None:
            raise ContractError(
                400, "invalid", f"Invalid value for field '{where}': '{value}'. Must be a match of regex '{pattern}'",
                where,
            )  # fmt: skip

    def _object(self, value: Any, schema: dict[str, Any], where: str) -> None:
        if not isinstance(value, dict):
            raise ContractError(400, "invalid", f"Invalid value at '{where or 'body'}': expected an object", where)
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            spec = _lookup(properties, key)
            if spec is None and extra is None:
                at = f" at '{where}'" if where else ""
                raise ContractError(
                    400, "invalid", f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.',
                    f"{where}.{key}".lstrip("."),
                )  # fmt: skip
            self.check(
                item, spec if spec is not None else extra, f"{where}.{key}".lstrip(".") if spec else f"{where}[{key!r}]"
            )
        for name, spec in properties.items():
            if not self.output and self._required(spec) and value.get(name) is None and value.get(_snake(name)) is None:
                field = f"{where}.{name}".lstrip(".")
                raise ContractError(400, "required", f"Required field '{field or name}' not specified", field)

    def _required(self, spec: dict[str, Any]) -> bool:
        """Required for this method: listed in ``annotations.required`` or, in the newer APIs, described so."""
        if self.method.id in spec.get("annotations", {}).get("required", []):
            return True
        return self.method.api != "compute" and bool(_REQUIRED_DESCRIPTION.match(spec.get("description", "")))


def documents_folder() -> Path:
    """Where the installed google-api-python-client keeps Google's discovery documents."""
    try:
        import googleapiclient
    except ImportError:
        raise RuntimeError(
            "the Google Cloud sandbox checks every request against Google's discovery documents, which "
            "google-api-python-client ships: install cloudir[demo] (or `uv sync`)"
        ) from None
    return Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"


@cache
def contract(apis: tuple[str, ...] = GCP_SERVER_APIS) -> Contract:
    """The contract of the APIs one fake serves (each set loaded and indexed once per process)."""
    folder = documents_folder()
    return Contract({api: json.loads((folder / DOCUMENTS[api]).read_text(encoding="utf-8")) for api in apis})
