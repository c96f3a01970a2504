"""Azure SDK clients that record every ARM call into the bound case and tag the tool's own activity."""

from __future__ import annotations

import base64
import binascii
import contextvars
import datetime as dt
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import duckdb
from azure.core import PipelineClient
from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    RetryPolicy,
    SansIOHTTPPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core.polling.arm_polling import ARMPolling
from azure.mgmt.monitor import MonitorManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.locks import ManagementLockClient

from cloudir import __version__
from cloudir.case import Case
from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError, TargetNotFoundError

RESPONDER_USER_AGENT = f"cloudir/{__version__}"
ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
GRAPH_ENDPOINT = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_SERVICE = "Microsoft.Graph"
ACTIVITY_LOG_PATH = "/providers/microsoft.insights/eventtypes/management/values"
_LOCATION_IN_PATH = re.compile(r"/locations/([^/]+)/", re.IGNORECASE)

# The region of the resource the running step works on (for custody): one per step, as steps run in lanes at once.
_STEP_REGION: contextvars.ContextVar[str | None] = contextvars.ContextVar("azure_step_region", default=None)

CLIENT_CLASSES: dict[str, Any] = {
    "compute": ComputeManagementClient,
    "network": NetworkManagementClient,
    "locks": ManagementLockClient,
    "monitor": MonitorManagementClient,
}


class StaticTokenCredential:
    """A TokenCredential for a bearer token the responder already holds (``az account get-access-token``)."""

    def __init__(self, token: str, expires_on: int | None = None) -> None:
        self._token = token
        self._expires_on = expires_on or int(time.time()) + 3600

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """Return the held token whatever the scope."""
        return AccessToken(self._token, self._expires_on)


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token, unverified ({} when it is opaque or not a JWT)."""
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_identity(token: str) -> str:
    """The principal named in a JWT access token (upn, unique_name, app id or object id), without verifying it."""
    if len(token.split(".")) < 2:
        return "unknown (opaque token)"
    claims = token_claims(token)
    if not claims:
        return "unknown (token is not a JWT)"
    name = claims.get("upn") or claims.get("unique_name") or claims.get("appid") or claims.get("oid") or "unknown"
    return f"{name} (oid {claims.get('oid', '?')}, tenant {claims.get('tid', '?')})"


def arm_operation(method: str, url: str) -> tuple[str, str]:
    """(resource provider, operation) of an ARM request in RBAC form: ``Microsoft.Compute``, ``snapshots/write``."""
    path = unquote(urlsplit(url).path)
    segments = [part for part in path.split("/") if part]
    lowered = [part.lower() for part in segments]
    if "providers" in lowered:
        index = len(lowered) - 1 - lowered[::-1].index("providers")
        namespace = segments[index + 1] if index + 1 < len(segments) else "Microsoft.Resources"
        rest = segments[index + 2 :]
    else:
        namespace, rest = "Microsoft.Resources", segments
    verbs = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
    # POST targets an action segment, e.g. snapshots/{name}/beginGetAccess -> snapshots/beginGetAccess/action
    return namespace, "/".join([*rest[0::2], verbs.get(method.upper(), "action")])


_GRAPH_VERBS = {"GET": "read", "PATCH": "write", "DELETE": "delete"}
_APP_ID_KEY = re.compile(r"\(appId='[^']*'\)")


def graph_operation(method: str, url: str) -> str:
    """A Graph request as custody records it, ids replaced: ``users/{id}/revokeSignInSessions/action``."""
    path = _APP_ID_KEY.sub("(appId={appId})", unquote(urlsplit(url).path).strip("/").split("/", 1)[-1])
    segments = [part if re.fullmatch(r"[A-Za-z]+(\(appId=\{appId\}\))?", part) else "{id}" for part in path.split("/")]
    return "/".join([*segments, _GRAPH_VERBS.get(method.upper(), "action")])


class CustodyRecorder(SansIOHTTPPolicy[Any, Any]):
    """Records every HTTP attempt (including throttled ones and LRO polls) into the bound case."""

    def __init__(self, session: AzureSession) -> None:
        self._session = session

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        """Record one finished call."""
        http_request, http_response = request.http_request, response.http_response
        status = http_response.status_code
        service, operation = self._describe(http_request)
        if status == 429:
            self._session.throttled[f"{service}/{operation}"] += 1
        outcome = "ok" if status < 400 else _error_code(http_response) or f"HTTP {status}"
        headers = http_response.headers
        request_id = headers.get("x-ms-request-id") or headers.get("request-id")  # Graph names it request-id
        self._record(http_request, (service, operation), request_id, outcome, status)

    def on_exception(self, request: PipelineRequest[Any]) -> None:
        """Record a call that never got a response (connection refused, TLS failure)."""
        service, operation = self._describe(request.http_request)
        self._record(request.http_request, (service, operation), None, "no-response", None)

    def _describe(self, http_request: Any) -> tuple[str, str]:
        url = urlsplit(http_request.url)
        if "sig=" in (url.query or ""):
            return "Storage.Blob", "GetBlob"
        if url.netloc.lower() == urlsplit(self._session.graph_url).netloc.lower():
            return GRAPH_SERVICE, graph_operation(http_request.method, http_request.url)
        return arm_operation(http_request.method, http_request.url)

    def _record(
        self, http_request: Any, call: tuple[str, str], request_id: str | None, outcome: str, status: int | None
    ) -> None:
        service, operation = call
        case = self._session.case
        if case is None:
            return
        case.record_api_call(
            ApiCall(
                service=service,
                operation=operation,
                region=_request_region(http_request) or self._session.region,
                request_id=request_id,
                outcome=outcome,
                http_status=status,
                client_request_id=http_request.headers.get("x-ms-client-request-id")
                or http_request.headers.get("client-request-id"),
            )
        )


class ContextPolling(ARMPolling):
    """ARM long-running-operation polling whose polls run in the context that started the operation.

    azure-core polls in a thread of its own that carries no context variables, so its polls would belong to no
    custody action (or to whichever step happened to be the only one open) while steps run in lanes at once.
    """

    def initialize(self, client: Any, initial_response: Any, deserialization_callback: Any) -> None:
        """Keep the starting context (called in the thread that started the operation)."""
        self._started_in = contextvars.copy_context()
        super().initialize(client, initial_response, deserialization_callback)

    def run(self) -> None:
        """Poll until done, in the starting context (called in azure-core's polling thread)."""
        self._started_in.run(super().run)


class ClientRequestIdPolicy(SansIOHTTPPolicy[Any, Any]):
    """Gives each Graph request a ``client-request-id`` (Graph echoes it and logs it with the request)."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        """Set a fresh id unless one is set."""
        request.http_request.headers.setdefault("client-request-id", str(uuid.uuid4()))


class RawPageSink(SansIOHTTPPolicy[Any, Any]):
    """Hands each successful Activity Log page's exact body to a callback before the SDK parses it."""

    def __init__(self) -> None:
        self.callback: Callable[[bytes], None] | None = None

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        """Store the raw page (only 200 responses of the Activity Log list)."""
        path = urlsplit(request.http_request.url).path.lower()
        if self.callback is not None and response.http_response.status_code == 200 and path.endswith(ACTIVITY_LOG_PATH):
            self.callback(response.http_response.body())


class AzureSession:
    """Credentials, endpoint and cached ARM clients per (kind, subscription), bound to a case."""

    def __init__(
        self,
        credential: TokenCredential,
        *,
        base_url: str = ARM_ENDPOINT,
        graph_url: str = GRAPH_ENDPOINT,
        connection_verify: bool | str = True,
        polling_interval: float = 5.0,
        retry_total: int = 6,
        retry_backoff_factor: float = 0.8,
    ) -> None:
        self.credential = credential
        self.base_url = base_url.rstrip("/")
        self.graph_url = graph_url.rstrip("/")
        self.connection_verify = connection_verify
        self.polling_interval = polling_interval
        self.retry_total = retry_total
        self.retry_backoff_factor = retry_backoff_factor
        self.case: Case | None = None
        self.throttled: Counter[str] = Counter()
        self.page_sink = RawPageSink()
        self._recorder = CustodyRecorder(self)
        self._clients: dict[tuple[str, str], Any] = {}

    @property
    def region(self) -> str | None:
        """The region of the resource the running step works on (for custody); each step's own."""
        return _STEP_REGION.get()

    @region.setter
    def region(self, region: str | None) -> None:
        _STEP_REGION.set(region)

    def polling(self) -> ContextPolling:
        """The polling method for a long-running operation (``polling=``): its polls stay in the caller's step."""
        return ContextPolling(self.polling_interval, path_format_arguments={"endpoint": self.base_url})

    def bind(self, case: Case | None) -> None:
        """Record later calls into ``case`` (None: record nothing); the user agent carries the case id."""
        self.case = case
        self._clients.clear()

    @property
    def user_agent(self) -> str:
        """``cloudir/<version>`` plus the case id when bound."""
        return RESPONDER_USER_AGENT + (f" case/{self.case.case_id}" if self.case else "")

    def client(self, kind: str, subscription_id: str) -> Any:
        """A cached ARM client (compute, network, locks, monitor) for one subscription."""
        key = (kind, subscription_id)
        if key not in self._clients:
            per_retry: list[SansIOHTTPPolicy[Any, Any]] = [self._recorder]
            if kind == "monitor":
                per_retry.append(self.page_sink)
            self._clients[key] = CLIENT_CLASSES[kind](
                self.credential,
                subscription_id,
                base_url=self.base_url,
                credential_scopes=[ARM_SCOPE],
                connection_verify=self.connection_verify,
                user_agent=self.user_agent,
                polling_interval=self.polling_interval,
                retry_total=self.retry_total,
                retry_backoff_factor=self.retry_backoff_factor,
                per_retry_policies=per_retry,
            )
        return self._clients[key]

    def blob_client(self) -> PipelineClient[Any, Any]:
        """A plain HTTP pipeline for SAS blob reads: same user agent, retries, TLS settings and custody recording."""
        return PipelineClient(
            base_url="",
            policies=[
                HeadersPolicy(),
                UserAgentPolicy(user_agent=self.user_agent),
                RetryPolicy(retry_total=self.retry_total, retry_backoff_factor=self.retry_backoff_factor),
                self._recorder,
            ],
            transport=RequestsTransport(connection_verify=self.connection_verify),
        )

    def graph_client(self) -> PipelineClient[Any, Any]:
        """A Microsoft Graph pipeline: Graph-scoped token, a client-request-id per call, retries after
        ``Retry-After`` on 429, the case's user agent and custody recording."""
        return self._pipeline(self.graph_url, GRAPH_SCOPE, ClientRequestIdPolicy())

    def arm_client(self) -> PipelineClient[Any, Any]:
        """A plain ARM pipeline for resource providers without an installed SDK (role assignments), with the
        same token scope, retries, user agent and custody recording as the SDK clients."""
        return self._pipeline(self.base_url, ARM_SCOPE)

    def _pipeline(self, base_url: str, scope: str, *extra: SansIOHTTPPolicy[Any, Any]) -> PipelineClient[Any, Any]:
        return PipelineClient(
            base_url=base_url,
            policies=[
                HeadersPolicy(),
                UserAgentPolicy(user_agent=self.user_agent),
                *extra,
                RetryPolicy(retry_total=self.retry_total, retry_backoff_factor=self.retry_backoff_factor),
                BearerTokenCredentialPolicy(self.credential, scope),
                self._recorder,
            ],
            transport=RequestsTransport(connection_verify=self.connection_verify),
        )

    def tenant_id(self) -> str:
        """The tenant the credential's Graph token belongs to (its ``tid`` claim), or ``unknown-tenant``."""
        try:
            token = self.credential.get_token(GRAPH_SCOPE).token
        except ClientAuthenticationError:
            return "unknown-tenant"
        return token_claims(token).get("tid") or "unknown-tenant"

    def access_token(self) -> str:
        """A token for ARM (used to name the identity the tool acts as)."""
        try:
            return self.credential.get_token(ARM_SCOPE).token
        except ClientAuthenticationError as exc:
            raise CloudAccessError(
                f"cannot get an Azure access token: {exc.message.splitlines()[0] if exc.message else exc}",
                hint="run 'az login', set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or pass --token",
            ) from None


def last_page_number(folder: Path) -> int:
    """The highest N of the ``page-NNNNN.json`` files in ``folder`` (0 when none): a new pull numbers after it."""
    return max((int(page.stem.split("-")[1]) for page in folder.glob("page-*.json")), default=0)


def page_span(case_root: Path, files: list[str], time_property: str) -> dict[str, Any]:
    """Records in stored ``{"value": [...]}`` pages and the span of their ``time_property``, read with DuckDB."""
    if not files:
        return {"events": 0, "first_event": None, "last_event": None}
    row = (
        duckdb.connect()
        .execute(
            """
            SELECT count(*), min(ts), max(ts) FROM (
                SELECT TRY_CAST(json_extract_string(record, '$.' || ?) AS TIMESTAMPTZ) AS ts
                FROM (SELECT unnest(value) AS record FROM read_json(?, columns = {value: 'JSON[]'}))
            )
            """,
            [time_property, [str(case_root / rel) for rel in files]],
        )
        .fetchone()
    )
    assert row is not None
    total, first, last = row
    return {
        "events": int(total),
        "first_event": first.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if first else None,
        "last_event": last.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if last else None,
    }


def _error_code(http_response: Any) -> str | None:
    try:
        body = json.loads(http_response.body() or b"{}")
    except (ValueError, TypeError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code")) if isinstance(error, dict) and error.get("code") else None


def _request_region(http_request: Any) -> str | None:
    match = _LOCATION_IN_PATH.search(urlsplit(http_request.url).path)
    if match:
        return match.group(1)
    if http_request.method in {"PUT", "PATCH"}:
        try:
            body = json.loads(http_request.body or b"{}")
        except (ValueError, TypeError):
            return None
        location = body.get("location") if isinstance(body, dict) else None
        return str(location) if location else None
    return None


def describe_error(exc: AzureError, action: str, permission: str | None = None) -> CloudirError:
    """Turn an Azure SDK failure into a one-line error naming the call and, on denial, the missing permission."""
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) != 403:
        return CloudAccessError(
            f"Azure authentication failed while trying to {action}",
            hint="run 'az login', set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or pass --token",
        )
    if isinstance(exc, ServiceRequestError):
        return CloudAccessError(f"cannot reach Azure Resource Manager while trying to {action}: {exc.message}")
    if isinstance(exc, HttpResponseError):
        code = (exc.error.code if exc.error else None) or str(exc.status_code)
        message = ((exc.error.message if exc.error else None) or exc.reason or "").splitlines()[0].strip()
        if isinstance(exc, ResourceNotFoundError) or exc.status_code == 404:
            return TargetNotFoundError(f"{action}: {code}: {message}")
        if exc.status_code == 403 or code in {"AuthorizationFailed", "LinkedAuthorizationFailed"}:
            return CloudAccessError(
                f"access denied ({action}): {code}: {message}",
                hint=f"grant {permission} to the responder identity (cloudir iam-policy azure)"
                if permission
                else "grant the responder identity the role listed by 'cloudir iam-policy azure'",
            )
        if exc.status_code == 429:
            return CloudAccessError(f"Azure throttled the request after retries ({action}): {message or code}")
        return CloudAccessError(f"{action} failed: {code}: {message}")
    return CloudAccessError(f"Azure SDK error while trying to {action}: {exc}")


@contextmanager
def azure_errors(action: str, permission: str | None = None) -> Iterator[None]:
    """Translate Azure SDK exceptions raised inside the block into :class:`CloudirError`."""
    try:
        yield
    except AzureError as exc:
        raise describe_error(exc, action, permission) from None
