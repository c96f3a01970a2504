"""Entra ID log collection through Microsoft Graph: sign-ins and directory audits, raw pages kept as evidence.

``GET /v1.0/auditLogs/signIns`` and ``GET /v1.0/auditLogs/directoryAudits`` are paged with
``@odata.nextLink``; each page body is stored as received before it is parsed, 429 answers are retried after
``Retry-After``, every request is a custody record, and a re-run after a failure continues from the last
stored page's ``nextLink``. A ``nextLink`` that leaves the Graph endpoint is refused, never followed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from functools import partial
from itertools import count
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest

from cloudir.coverage import SourceCoverage, parse_utc
from cloudir.errors import CloudAccessError
from cloudir.plan import PlannedCall, Step, StepContext, StepKind
from cloudir.safepath import path_part
from providers.azure.session import GRAPH_SERVICE, describe_error, last_page_number, page_span

if TYPE_CHECKING:
    from cloudir.provider import LogPullRequest
    from providers.azure.provider import AzureProvider

GRAPH_PERMISSION = "AuditLog.Read.All"  # Microsoft Graph application permission (plus Directory.Read.All for audits)
RETENTION_DAYS = 30  # Entra ID P1/P2; 7 days on the free tier
OBJECT_ID = re.compile(r"^[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}$", re.IGNORECASE)


@dataclass(frozen=True)
class EntraLog:
    """One Graph audit log collection: its path, time property, principal filter and timeline source."""

    key: str
    path: str
    time_property: str
    principal_property: str  # filters by user principal name
    principal_id_property: str  # filters by object id (a principal given as a GUID)
    source: str
    page_size: int | None

    @property
    def operation(self) -> str:
        """The call as custody records it (``auditLogs/signIns/read``)."""
        return f"{self.path.removeprefix('/v1.0/')}/read"


LOGS = (
    EntraLog(
        "signins", "/v1.0/auditLogs/signIns", "createdDateTime", "userPrincipalName", "userId", "entra:signins", 1000
    ),
    EntraLog(
        "audits",
        "/v1.0/auditLogs/directoryAudits",
        "activityDateTime",
        "initiatedBy/user/userPrincipalName",
        "initiatedBy/user/id",
        "entra:directory-audits",
        None,
    ),
)


def odata_literal(value: str) -> str:
    """``value`` as an OData string literal: quoted, with each single quote doubled (data is never syntax)."""
    return "'" + value.replace("'", "''") + "'"


def graph_filter(log: EntraLog, start: str, end: str, principals: list[str]) -> str:
    """The ``$filter`` of one query: the window and, when given, the principals (by UPN, or object id if a GUID)."""
    text = f"{log.time_property} ge {_graph_time(start)} and {log.time_property} le {_graph_time(end)}"
    if principals:
        either = " or ".join(f"{_principal_property(log, p)} eq {odata_literal(p)}" for p in principals)
        text += f" and ({either})" if len(principals) > 1 else f" and {either}"
    return text


def _principal_property(log: EntraLog, principal: str) -> str:
    return log.principal_id_property if OBJECT_ID.match(principal) else log.principal_property


def first_url(base_url: str, log: EntraLog, request: LogPullRequest) -> str:
    """The URL of the first page of one query."""
    query = f"$filter={quote(graph_filter(log, request.start, request.end, request.principals), safe='')}"
    if log.page_size:
        query += f"&$top={log.page_size}"
    return f"{base_url}{log.path}?{query}"


def page_dir(tenant: str, log: EntraLog) -> str:
    """Folder of one log's raw pages: ``logs/azure/entra/<tenant>/<signins|audits>``."""
    return f"logs/azure/entra/{path_part(tenant)}/{log.key}"


def plan_steps(provider: AzureProvider, request: LogPullRequest, target: str, coverage: dict[str, Any]) -> list[Step]:
    """One READ step per Graph log (sign-ins, directory audits) of the tenant."""
    return [
        Step(
            f"entra-{log.key}",
            f"Pull the Entra ID {log.key.replace('signins', 'sign-in logs').replace('audits', 'directory audits')}",
            StepKind.READ,
            [
                PlannedCall(
                    GRAPH_SERVICE,
                    log.operation,
                    None,
                    {"filter": graph_filter(log, request.start, request.end, request.principals)},
                )
            ],
            partial(_pull, provider=provider, log=log, request=request, plan_target=target, out=coverage),
        )
        for log in LOGS
    ]


def plan_notes(request: LogPullRequest) -> list[str]:
    """What the plan should say about Entra's retention and permissions."""
    permission = (
        f"Microsoft Graph needs the application permission {GRAPH_PERMISSION} (and Directory.Read.All for"
        " directory audits) granted to the responder identity"
    )
    notes = [permission]
    oldest = dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS)
    if parse_utc(request.start) < oldest:
        notes.append(
            f"Entra ID keeps sign-ins and audits {RETENTION_DAYS} days (7 on the free tier): events before "
            f"{oldest:%Y-%m-%d} are gone unless a diagnostic setting exported them"
        )
    return notes


def _pull(
    ctx: StepContext,
    *,
    provider: AzureProvider,
    log: EntraLog,
    request: LogPullRequest,
    plan_target: str,
    out: dict[str, Any],
) -> dict[str, Any]:
    """Page through one Graph log; each page body is stored before it is parsed."""
    session = provider.session
    client = session.graph_client()
    tenant = session.tenant_id()
    folder = page_dir(tenant, log)
    stored = ctx.case.failed_step_files(plan_target, f"entra-{log.key}")
    throttled_before = session.throttled[f"{GRAPH_SERVICE}/{log.operation}"]
    scope = " or ".join(f"{_principal_property(log, p)} eq {p}" for p in request.principals) or "tenant"
    report: dict[str, Any] = {"tenant": tenant, "scope": scope, "stopped_early": False, "reason": None}
    url: str | None = first_url(session.graph_url, log, request)
    if stored:
        url = json.loads((ctx.case.root / stored[-1]).read_bytes()).get("@odata.nextLink")
    numbers = count(last_page_number(ctx.case.root / folder) + 1)
    try:
        while url:
            check_same_endpoint(url, session.graph_url)
            response = client.send_request(HttpRequest("GET", url))
            response.raise_for_status()
            body = response.read()
            stored.append(ctx.case.write_bytes(f"{folder}/page-{next(numbers):05d}.json", body).path)
            page = json.loads(body)
            url = page.get("@odata.nextLink") if isinstance(page, dict) else None
    except AzureError as exc:
        error = describe_error(exc, f"list {log.path} of tenant {tenant}", GRAPH_PERMISSION)
        report.update(stopped_early=True, reason=str(error))
        raise error from None
    except CloudAccessError as exc:
        report.update(stopped_early=True, reason=str(exc))
        raise
    finally:
        report.update(
            pages=len(stored),
            files=stored,
            throttled=session.throttled[f"{GRAPH_SERVICE}/{log.operation}"] - throttled_before,
            **page_span(ctx.case.root, stored, log.time_property),
        )
        out[log.key] = report
    return report


def check_same_endpoint(url: str, base_url: str) -> None:
    """Refuse a ``nextLink`` to another host or scheme than the Graph endpoint (it would carry our token)."""
    got, want = urlsplit(url), urlsplit(base_url)
    if (got.scheme, got.netloc.lower()) != (want.scheme, want.netloc.lower()):
        raise CloudAccessError(
            f"Microsoft Graph returned a nextLink to {got.scheme}://{got.netloc}, not {want.netloc}: not followed"
        )


def coverage_sources(pulled: dict[str, Any]) -> list[tuple[SourceCoverage, str | None]]:
    """The coverage entries of the Entra pulls (with the first event, for the retention clock)."""
    sources: list[tuple[SourceCoverage, str | None]] = []
    for log in LOGS:
        report = pulled.get(log.key)
        if report is None:
            sources.append(
                (SourceCoverage(log.source, "tenant", status="unavailable", stopped_reason="not pulled"), None)
            )
            continue
        status = "stopped" if report["stopped_early"] else "complete" if report["events"] else "empty"
        sources.append(
            (
                SourceCoverage(
                    log.source,
                    report["tenant"],
                    scope=report["scope"],
                    status=status,
                    items=report["events"],
                    first_event=report["first_event"],
                    last_event=report["last_event"],
                    stopped_reason=report["reason"],
                    details={"pages": report["pages"], "throttled": report["throttled"], "files": report["files"]},
                ),
                report["first_event"],
            )
        )
    return sources


def _graph_time(value: str) -> str:
    """A window bound as Graph wants it in ``$filter``: an unquoted ISO 8601 UTC timestamp."""
    return parse_utc(value).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
