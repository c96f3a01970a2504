"""google-cloud clients that report every HTTP call to the case's custody log and tag the tool's activity.

Compute Engine clients use their REST transport; Cloud Logging uses the library's JSON-over-HTTP
connection. Both run over a ``google.auth`` AuthorizedSession whose response hook records each call
(operation derived from the URL, zone, operation id, outcome) and can hand raw response bodies to
the caller before the SDK parses them. A call refused by a rate quota (Compute's 403 ``rateLimitExceeded``, or
429 ``RESOURCE_EXHAUSTED`` as IAM, Resource Manager and the other APIs answer) is sent again with doubling backoff,
each refusal in custody; it never ran, so resending is safe. Cloud Logging and Admin Reports pages are resent by
their collectors instead, which count the refusals in the coverage report.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1.client_info import ClientInfo
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import DefaultCredentialsError
from google.auth.transport.requests import AuthorizedSession
from google.cloud import compute_v1
from google.cloud import logging as gcp_logging

from cloudir import __version__
from cloudir.case import Case
from cloudir.custody import ApiCall
from cloudir.errors import CloudAccessError, CloudirError, TargetNotFoundError
from cloudir.progress import ProgressCallback

RESPONDER_USER_AGENT = f"cloudir/{__version__}"
COMPUTE_HOST = "compute.googleapis.com"
LOGGING_ENDPOINT = "https://logging.googleapis.com"
IAM_ENDPOINT = "https://iam.googleapis.com"
RESOURCE_MANAGER_ENDPOINT = "https://cloudresourcemanager.googleapis.com"
ADMIN_ENDPOINT = "https://admin.googleapis.com"
REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
# Regional collections whose API name carries a "region" prefix because a zonal one exists too.
_ALSO_ZONAL = {"instanceGroupManagers", "instanceGroups", "disks", "autoscalers", "instances", "instanceTemplates"}
_COLLECTION_VERBS = {"GET": "list", "POST": "insert"}
_ITEM_VERBS = {"GET": "get", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}
_RENAMED_VERBS = {"serialPort": "getSerialPortOutput"}
_RATE_LIMITED = {"rateLimitExceeded", "userRateLimitExceeded"}  # Compute's reasons for a rate quota refusal
_API_NAMES = {
    "compute": "Compute Engine",
    "iam": "IAM",
    "cloudresourcemanager": "Resource Manager",
    "logging": "Cloud Logging",
    "admin": "Admin SDK Reports",
}
RATE_ATTEMPTS = 8  # a refused call is sent at most this many times (backoff doubling: about 2 minutes at 1 s)
MAX_BACKOFF = 60.0  # Compute's quotas refill each minute: no gap is longer
OPERATION_TIMEOUT = 3600.0  # a snapshot of a large disk takes many minutes; give up on an operation after an hour
EARLY_ANSWER = 10.0  # an operations.wait answered sooner than this (its deadline is 2 minutes) and not DONE is early

ClientT = TypeVar("ClientT")
BodySink = Callable[[bytes], None]


def describe_request(method: str, url: str) -> tuple[str, str, str | None]:
    """(service, operation, zone / region / "global") of a Compute or Logging REST call, from its method and URL.

    Operation names follow the API's method names: ``instances.setDeletionProtection``,
    ``regionInstanceGroupManagers.abandonInstances``, ``zoneOperations.wait``, ``entries.list``.
    """
    path = unquote(urlsplit(url).path)
    if path.startswith("/admin/reports/v1/activity/"):
        return "admin", "activities.list", None
    if path.startswith("/v2/"):
        resource, _, verb = path.removeprefix("/v2/").partition(":")
        return "logging", f"{resource.split('/')[-1]}.{verb or method.lower()}", None
    if path.startswith("/v1/projects/") and "/serviceAccounts/" in path:
        rest, _, verb = path.split("/serviceAccounts/", 1)[1].partition(":")
        tail = rest.split("/")[1:]  # e.g. ["keys"] or ["keys", "<key id>"]
        default = "list" if len(tail) % 2 else "get"
        return "iam", ".".join(["serviceAccounts", *tail[::2], verb or default]), None
    if re.fullmatch(r"/v1/projects/[^/:]+:\w+", path):
        return "cloudresourcemanager", f"projects.{path.rsplit(':', 1)[1]}", None
    parts = path.split("/projects/", 1)[-1].split("/")[1:]
    if parts[:1] == ["aggregated"]:
        return "compute", f"{parts[1]}.aggregatedList", None
    scope, location = "global", "global"
    if parts[:1] == ["global"]:
        parts = parts[1:]
    elif parts[:1] and parts[0] in {"zones", "regions"}:
        scope, location, parts = parts[0], parts[1], parts[2:]
    if not parts:
        return "compute", f"projects.{method.lower()}", location
    collection = parts[0]
    if collection == "operations":
        collection = {"global": "globalOperations", "zones": "zoneOperations", "regions": "regionOperations"}[scope]
    elif scope == "regions" and collection in _ALSO_ZONAL:
        collection = "region" + collection[0].upper() + collection[1:]
    if len(parts) == 1:
        verb = _COLLECTION_VERBS.get(method, method.lower())
    elif len(parts) == 2:
        verb = _ITEM_VERBS.get(method, method.lower())
    else:
        verb = _RENAMED_VERBS.get(parts[2], parts[2])
    return "compute", f"{collection}.{verb}", location


class GcpApi:
    """Authenticated Compute Engine and Logging clients bound to a case for custody recording."""

    def __init__(
        self,
        *,
        project: str,
        credentials: Credentials | None = None,
        api_endpoint: str | None = None,
        url_scheme: str = "https",
        backoff: float = 1.0,
    ) -> None:
        self.project = project
        self.backoff = (
            backoff  # seconds before the first resend of a rate-limited call or re-poll after an early answer
        )
        self.credentials = credentials or _default_credentials()
        self.api_endpoint = api_endpoint
        self.url_scheme = url_scheme
        self.case: Case | None = None
        self.case_tag: str | None = None
        self._clients: dict[type[Any], Any] = {}
        self._logging: gcp_logging.Client | None = None
        self._iam: AuthorizedSession | None = None
        self._workspace: dict[str | None, AuthorizedSession] = {}
        self._body_sinks: list[BodySink] = []

    def bind(self, case: Case | None) -> None:
        """Record later calls into ``case`` (None stops recording); tags the user agent with the case id."""
        self.case = case
        self.case_tag = case.case_id if case else self.case_tag
        self._clients.clear()
        self._logging = None
        self._iam = None
        self._workspace = {}

    @property
    def user_agent(self) -> str:
        """``cloudir/<version>`` plus the case id when bound."""
        return RESPONDER_USER_AGENT + (f" case/{self.case_tag}" if self.case_tag else "")

    # -- clients ---------------------------------------------------------------------------------
    def _instrument(self, session: AuthorizedSession, *, resend_refused: bool = True) -> AuthorizedSession:
        """Tag the session's requests and record each one (a call that got no response too); with
        ``resend_refused``, resend a call a rate quota refused (at most ``RATE_ATTEMPTS`` sends, backoff doubling)."""
        session.headers["User-Agent"] = self.user_agent
        session.hooks["response"].append(self._on_response)
        send = session.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
            def once() -> requests.Response:
                try:
                    response: requests.Response = send(method, url, *args, **kwargs)  # type: ignore[no-untyped-call]
                except requests.RequestException as exc:
                    if self.case is not None:
                        service, operation, location = describe_request(method, url)
                        self.case.record_api_call(ApiCall(service, operation, location, None, type(exc).__name__))
                    raise
                return response

            return send_until_quota_allows(once, self.backoff) if resend_refused else once()

        session.request = request  # type: ignore[method-assign]
        return session

    def compute(self, client_class: type[ClientT]) -> ClientT:
        """A cached Compute Engine client (e.g. ``compute_v1.InstancesClient``) on the recording session."""
        if client_class not in self._clients:
            transport_class = client_class.get_transport_class("rest")  # type: ignore[attr-defined]
            host = self.api_endpoint or COMPUTE_HOST
            transport = transport_class(
                host=host,
                credentials=self.credentials,
                client_info=ClientInfo(user_agent=self.user_agent),  # type: ignore[no-untyped-call]
                url_scheme=self.url_scheme,
            )
            # The transport builds its own AuthorizedSession: have it record every call it makes.
            self._instrument(transport._session)
            self._clients[client_class] = client_class(transport=transport)  # type: ignore[call-arg]
        client: ClientT = self._clients[client_class]
        return client

    def logging(self) -> gcp_logging.Client:
        """The Cloud Logging client, forced onto the JSON-over-HTTP API so raw bodies can be kept."""
        if self._logging is None:
            endpoint = self.api_endpoint or LOGGING_ENDPOINT
            if "://" not in endpoint:
                endpoint = f"{self.url_scheme}://{endpoint}"
            self._logging = gcp_logging.Client(  # type: ignore[no-untyped-call]
                project=self.project,
                credentials=self.credentials,
                _http=self._instrument(AuthorizedSession(self.credentials), resend_refused=False),  # type: ignore[no-untyped-call]
                _use_grpc=False,
                client_info=ClientInfo(user_agent=self.user_agent),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": endpoint},
            )
        return self._logging

    def iam_get(self, path: str) -> bytes:
        """GET an IAM v1 resource (e.g. ``projects/-/serviceAccounts/<email>/keys``) and return the raw body."""
        return self.rest("GET", path)

    def rest(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, endpoint: str = IAM_ENDPOINT
    ) -> bytes:
        """Call a v1 REST method of IAM (or of ``endpoint``, e.g. Resource Manager) and return the raw body.

        No client library for them is installed, so this uses google-auth's AuthorizedSession directly; errors
        become the same google-api-core exceptions the SDK clients raise.
        """
        if self._iam is None:
            self._iam = self._instrument(AuthorizedSession(self.credentials))  # type: ignore[no-untyped-call]
        base = self.api_endpoint or endpoint
        if "://" not in base:
            base = f"{self.url_scheme}://{base}"
        response = self._iam.request(method, f"{base}/v1/{path}", json=body, timeout=60)  # type: ignore[no-untyped-call]
        if not response.ok:
            raise gexc.from_http_response(response)  # type: ignore[no-untyped-call]
        return bytes(response.content)

    def workspace_get(self, path: str, subject: str | None) -> bytes:
        """GET an Admin SDK Reports path (``activity/users/all/applications/login?...``) and return the raw body.

        With ``subject``, service-account credentials act as that Workspace administrator (domain-wide
        delegation for the ``admin.reports.audit.readonly`` scope); without it, the credentials as they are.
        """
        if subject not in self._workspace:
            credentials = self.credentials
            if subject:
                if not hasattr(credentials, "with_subject"):
                    raise CloudirError(
                        "--workspace-admin needs service-account credentials (domain-wide delegation)",
                        hint="use a service account key or impersonation, or drop --workspace-admin",
                    )
                credentials = credentials.with_subject(subject).with_scopes([REPORTS_SCOPE])
            session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
            self._workspace[subject] = self._instrument(session, resend_refused=False)
        base = self.api_endpoint or ADMIN_ENDPOINT
        if "://" not in base:
            base = f"{self.url_scheme}://{base}"
        response = self._workspace[subject].request("GET", f"{base}/admin/reports/v1/{path}", timeout=60)  # type: ignore[no-untyped-call]
        if not response.ok:
            raise gexc.from_http_response(response)  # type: ignore[no-untyped-call]
        return bytes(response.content)

    # -- recording --------------------------------------------------------------------------------
    @contextmanager
    def raw_bodies(self, sink: BodySink) -> Iterator[None]:
        """Hand every successful response body received inside the block to ``sink``, before the SDK parses it."""
        self._body_sinks.append(sink)
        try:
            yield
        finally:
            self._body_sinks.remove(sink)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.ok:
            for sink in list(self._body_sinks):
                sink(response.content)
        if self.case is None:
            return response
        service, operation, location = describe_request(response.request.method or "GET", response.url)
        request_id, outcome = _response_facts(response, parse_body=service == "compute" or not response.ok)
        self.case.record_api_call(
            ApiCall(service, operation, location, request_id, outcome, http_status=response.status_code)
        )
        return response

    # -- operations -------------------------------------------------------------------------------
    def wait(
        self,
        operation: compute_v1.Operation,
        *,
        project: str,
        zone: str | None = None,
        region: str | None = None,
        timeout: float = OPERATION_TIMEOUT,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Block until a zonal, regional or global Compute operation is DONE; raise if it finished with an error.

        Each ``*Operations.wait`` answers at DONE or near its 2-minute deadline, and may answer early (Compute
        documents it as best effort): after an early answer the next one waits a doubling backoff (at most 10 s).
        Every poll is a custody record naming the operation. ``on_progress`` hears the operation's progress
        (percent) each time Compute Engine reports it."""
        deadline = time.monotonic() + timeout
        current = operation
        gap = self.backoff
        while current.status != compute_v1.Operation.Status.DONE:
            if on_progress is not None:
                on_progress(int(current.progress or 0), 100)
            if time.monotonic() > deadline:
                raise CloudAccessError(f"operation {operation.name} ({operation.operation_type}) did not finish")
            asked = time.monotonic()
            if zone:
                client: Any = self.compute(compute_v1.ZoneOperationsClient)
                current = client.wait(project=project, zone=zone, operation=operation.name)
            elif region:
                client = self.compute(compute_v1.RegionOperationsClient)
                current = client.wait(project=project, region=region, operation=operation.name)
            else:
                client = self.compute(compute_v1.GlobalOperationsClient)
                current = client.wait(project=project, operation=operation.name)
            if current.status != compute_v1.Operation.Status.DONE and time.monotonic() - asked < EARLY_ANSWER:
                time.sleep(max(0.0, min(gap, 10.0, deadline - time.monotonic())))
                gap *= 2
        if on_progress is not None:
            on_progress(100, 100)
        if current.error and current.error.errors:
            first = current.error.errors[0]
            raise CloudAccessError(
                f"operation {current.name} ({current.operation_type} on {current.target_link}) failed: "
                f"{first.code}: {first.message}"
            )


def send_until_quota_allows(send: Callable[[], requests.Response], backoff: float) -> requests.Response:
    """``send()``, sent again while a rate quota refuses it (Compute's 403 ``rateLimitExceeded`` or any API's 429):
    at most ``RATE_ATTEMPTS`` sends, the gap doubling from ``backoff`` to ``MAX_BACKOFF``. A refused call never ran,
    so resending is safe; each refusal reaches the session's response hooks (custody)."""
    response = send()
    for attempt in range(RATE_ATTEMPTS - 1):
        if not _rate_limited(response):
            break
        time.sleep(min(backoff * 2**attempt, MAX_BACKOFF))
        response = send()
    return response


@contextmanager
def gcp_errors(action: str, permission: str | None = None) -> Iterator[None]:
    """Translate google-api-core / transport exceptions raised inside the block into :class:`CloudirError`."""
    try:
        yield
    except gexc.NotFound as exc:
        raise TargetNotFoundError(f"{action}: not found: {_message(exc)}") from None
    except (gexc.Forbidden, gexc.TooManyRequests) as exc:
        if isinstance(exc, gexc.TooManyRequests) or _RATE_LIMITED & {
            str(error.get("reason")) for error in exc.errors if isinstance(error, dict)
        }:
            api = _api_name(exc)
            raise CloudAccessError(
                f"{action}: {api}'s rate quota still refused the call after {RATE_ATTEMPTS} tries ({_message(exc)})",
                hint=f"wait a minute and resume the case, or raise the project's {api} API rate quota",
            ) from None
        needs = f"; the responder needs {permission}" if permission else ""
        raise CloudAccessError(
            f"permission denied while trying to {action}: {_message(exc)}{needs}",
            hint="grant the permissions listed by the gcp provider's required_permissions()",
        ) from None
    except gexc.GoogleAPICallError as exc:
        raise CloudAccessError(f"{action} failed: HTTP {exc.code}: {_message(exc)}") from None
    except requests.RequestException as exc:
        url = exc.request.url if exc.request is not None else None
        where = str(url).split("?")[0] if url else "the endpoint"
        raise CloudAccessError(
            f"cannot reach the Google Cloud endpoint while trying to {action}: {type(exc).__name__} calling {where}",
            hint="check network access to Google APIs (or --api-endpoint)",
        ) from None


def _api_name(exc: gexc.GoogleAPICallError) -> str:
    """The name of the API that answered ``exc`` (from its response's URL)."""
    response = exc.response
    if not isinstance(response, requests.Response):
        return "the API"
    service = describe_request(response.request.method or "GET", response.url)[0]
    return _API_NAMES.get(service, service)


def _message(exc: gexc.GoogleAPICallError) -> str:
    return str(exc.message).splitlines()[0] if exc.message else type(exc).__name__


def _response_facts(response: requests.Response, *, parse_body: bool) -> tuple[str | None, str]:
    """(operation id or request id, outcome) read from a Compute/Logging response."""
    request_id = response.headers.get("x-goog-request-id") or response.headers.get("x-request-id")
    if not parse_body or not response.headers.get("content-type", "").startswith("application/json"):
        return request_id, "ok" if response.ok else str(response.status_code)
    try:
        payload = json.loads(response.content or b"{}")
    except ValueError:
        return request_id, "ok" if response.ok else str(response.status_code)
    if not isinstance(payload, dict):
        return request_id, "ok" if response.ok else str(response.status_code)
    if payload.get("kind") == "compute#operation":
        request_id = str(payload.get("name"))
    if response.ok:
        return request_id, "ok"
    error = payload.get("error") or {}
    if _quota_refusal(response):
        return request_id, "rateLimitExceeded"
    return request_id, str(error.get("status") or error.get("code") or response.status_code)


def _rate_limited(response: requests.Response) -> bool:
    """Whether a response is a rate quota refusal: 429, or Compute's 403 with reason ``rateLimitExceeded``."""
    return response.status_code == 429 or _quota_refusal(response)


def _quota_refusal(response: requests.Response) -> bool:
    """Whether a response is Compute's rate quota refusal: 403 with reason ``rateLimitExceeded``."""
    if response.status_code != 403:
        return False
    try:
        errors = response.json()["error"]["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(errors, list) and any(isinstance(e, dict) and e.get("reason") in _RATE_LIMITED for e in errors)


# A key file, or a Google runtime whose metadata server serves credentials (Cloud Run, Functions, App Engine).
_ADC_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "GCE_METADATA_HOST", "K_SERVICE", "FUNCTION_TARGET", "GAE_ENV")


def credentials_found(**config: Any) -> bool:
    """Whether application default credentials exist (variable, gcloud login, or a Google machine), without a call.

    ``google.auth.default`` would otherwise probe the metadata server for many seconds before giving up.
    """
    if config.get("anonymous") or config.get("credentials"):
        return True
    if any(os.environ.get(name) for name in _ADC_VARIABLES):
        return True
    gcloud_dir = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    if (gcloud_dir / "application_default_credentials.json").is_file():
        return True
    product = Path("/sys/class/dmi/id/product_name")
    return product.is_file() and product.read_text(encoding="utf-8", errors="replace").startswith("Google")


def _default_credentials() -> Credentials:
    if not credentials_found():
        raise CloudAccessError(
            "no Google Cloud credentials found (no GOOGLE_APPLICATION_CREDENTIALS, no gcloud login, not on Google)",
            hint="run 'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS",
        )
    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError as exc:
        raise CloudirError(
            f"no Google Cloud credentials found: {exc}".splitlines()[0],
            hint="run 'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS",
        ) from None
    resolved: Credentials = credentials
    return resolved


def anonymous_credentials() -> Credentials:
    """Credentials that send no token (local fake endpoints only)."""
    return AnonymousCredentials()  # type: ignore[no-untyped-call]
