"""Google Workspace audit collection through the Admin SDK Reports API, raw pages kept as evidence.

``GET admin/reports/v1/activity/users/{userKey}/applications/{admin|login|token}`` with ``startTime`` /
``endTime`` and ``maxResults=1000``, paged by ``nextPageToken``. Each page body is stored as received before it
is parsed; throttling (429, 503) is retried with backoff; every request is a custody record; a re-run after a
failure continues from the last stored page's token. Workspace keeps these reports about six months.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from google.api_core import exceptions as gexc

from cloudir.coverage import CoverageReport, SourceCoverage, parse_utc
from cloudir.errors import CloudAccessError
from cloudir.plan import PlannedCall, Step, StepContext, StepKind
from cloudir.safepath import path_part
from providers.gcp.session import gcp_errors

if TYPE_CHECKING:
    from cloudir.provider import LogPullRequest
    from providers.gcp.provider import GcpProvider

APPLICATIONS = ("admin", "login", "token")  # admin console changes, sign-ins, OAuth token grants
COVERAGE_FILE = "logs/gcp/workspace/coverage.json"
RETENTION_DAYS = 180
PAGE_SIZE = 1000  # the documented maximum of maxResults
_THROTTLED = (gexc.TooManyRequests, gexc.ServiceUnavailable)


def user_keys(request: LogPullRequest) -> list[str]:
    """``all``, or each principal's email (the API takes one user key per query)."""
    return list(request.principals) or ["all"]


def activity_path(application: str, user_key: str, request: LogPullRequest, page_token: str | None = None) -> str:
    """The path and query of one page; a user key is one escaped path segment, never more."""
    query = {"startTime": _rfc3339(request.start), "endTime": _rfc3339(request.end), "maxResults": str(PAGE_SIZE)}
    if page_token:
        query["pageToken"] = page_token
    return f"activity/users/{quote(user_key, safe='@')}/applications/{application}?{urlencode(query)}"


def page_dir(application: str, user_key: str) -> str:
    """``logs/gcp/workspace/<application>/<user key>``."""
    return f"logs/gcp/workspace/{application}/{path_part(user_key)}"


def plan_steps(provider: GcpProvider, request: LogPullRequest, target: str) -> list[Step]:
    """One READ step per application and user key, then the Workspace coverage report."""
    subject = request.extra.get("workspace_admin")
    steps = [
        Step(
            f"workspace:{application}:{user_key}",
            f"Pull the Workspace {application} activity report for {user_key}",
            StepKind.READ,
            [PlannedCall("admin", "activities.list", None, {"path": activity_path(application, user_key, request)})],
            partial(
                _pull, provider=provider, request=request, key=(application, user_key), subject=subject, target=target
            ),
        )
        for application in APPLICATIONS
        for user_key in user_keys(request)
    ]
    steps.append(
        Step(
            "workspace:coverage",
            "Write the Workspace coverage report",
            StepKind.READ,
            [],
            partial(_write_coverage, request=request, target=target),
        )
    )
    return steps


def plan_notes(request: LogPullRequest) -> list[str]:
    """Permissions and retention, said in the plan."""
    who = request.extra.get("workspace_admin")
    notes = [
        "Workspace reports need the admin.reports.audit.readonly scope: "
        + (f"the service account acts as {who} (domain-wide delegation)" if who else "the credentials must carry it")
    ]
    if parse_utc(request.start) < dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS):
        notes.append(f"Workspace keeps activity reports about {RETENTION_DAYS} days: older events are gone")
    return notes


def _pull(
    ctx: StepContext,
    *,
    provider: GcpProvider,
    request: LogPullRequest,
    key: tuple[str, str],
    subject: str | None,
    target: str,
) -> dict[str, Any]:
    application, user_key = key
    folder = page_dir(application, user_key)
    step_id = f"workspace:{application}:{user_key}"
    stored = [p for p in ctx.case.failed_step_files(target, step_id) if p.startswith(folder)]  # to continue after
    token = json.loads((ctx.case.root / stored[-1]).read_bytes()).get("nextPageToken") if stored else None
    report: dict[str, Any] = {"application": application, "user_key": user_key, "throttled": 0, "reason": None}
    attempts = 0
    try:
        while True:
            try:
                body = provider.api.workspace_get(activity_path(application, user_key, request, token), subject)
            except _THROTTLED:
                attempts += 1
                report["throttled"] += 1
                if attempts > provider.log_max_retries:
                    raise CloudAccessError(
                        f"Workspace {application} report still throttled after {attempts - 1} retries",
                        hint="pages so far are kept; re-run with --resume to continue",
                    ) from None
                time.sleep(provider.log_backoff * 2 ** (attempts - 1))
                continue
            attempts = 0
            number = len(list((ctx.case.root / folder).glob("page-*.json"))) + 1
            stored.append(ctx.case.write_bytes(f"{folder}/page-{number:05d}.json", body).path)
            token = json.loads(body).get("nextPageToken")
            if not token:
                break
    except gexc.GoogleAPICallError as exc:
        report["reason"] = f"{exc.code} {exc.message}"
        with gcp_errors(f"list the Workspace {application} report", "admin.reports.audit.readonly (scope)"):
            raise
    except CloudAccessError as exc:
        report["reason"] = str(exc)
        raise
    finally:
        report.update(pages=len(stored), files=stored, **_span(ctx.case.root, stored))
    return report


def _span(case_root: Any, files: list[str]) -> dict[str, Any]:
    """Activities and the time span the stored pages cover."""
    times = sorted(
        item["id"]["time"]
        for rel in files
        for item in json.loads((case_root / rel).read_bytes()).get("items", [])
        if isinstance(item, dict) and isinstance(item.get("id"), dict) and item["id"].get("time")
    )
    if not times:
        return {"events": 0, "first_event": None, "last_event": None}
    return {"events": len(times), "first_event": times[0], "last_event": times[-1]}


def _write_coverage(ctx: StepContext, *, request: LogPullRequest, target: str) -> dict[str, Any]:
    report = CoverageReport("gcp", "workspace", request.start, request.end)
    for application in APPLICATIONS:
        for user_key in user_keys(request):
            pulled = ctx.results.get(f"workspace:{application}:{user_key}")
            if pulled is None:
                source = SourceCoverage(f"workspace:{application}", user_key, status="unavailable")
                report.add_source(source)
                continue
            report.add_source(
                SourceCoverage(
                    f"workspace:{application}",
                    "workspace",
                    scope=f"userKey={user_key}",
                    status="complete" if pulled["events"] else "empty",
                    items=pulled["events"],
                    first_event=pulled["first_event"],
                    last_event=pulled["last_event"],
                    details={"pages": pulled["pages"], "throttled": pulled["throttled"], "files": pulled["files"]},
                )
            )
            if pulled["first_event"]:
                report.add_retention(f"workspace:{application}", RETENTION_DAYS, parse_utc(pulled["first_event"]))
    ctx.case.write_json(COVERAGE_FILE, report.to_dict())
    return {"sources": len(report.sources), "target": target}


def _rfc3339(value: str) -> str:
    return parse_utc(value).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
