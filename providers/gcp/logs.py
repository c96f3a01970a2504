"""Cloud Audit Log collection through Logging v2 ``entries:list``, raw pages kept as evidence.

Each page's exact HTTP response body is written to ``logs/gcp/audit/<project>/page-00001.json`` from
the HTTP layer, before the SDK parses it. Throttling (429 / RESOURCE_EXHAUSTED) is retried with
exponential backoff; a collection that still stops early says so in ``logs/gcp/coverage.json`` and
resumes from its last page token on ``--resume``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc

from cloudir.case import Case, safe_name
from cloudir.coverage import CoverageReport, SourceCoverage, iso_utc, parse_utc
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.plan import Plan, Step, StepContext, StepKind
from cloudir.provider import LogPullRequest
from providers.gcp.permissions import call
from providers.gcp.session import gcp_errors

if TYPE_CHECKING:
    from providers.gcp.provider import GcpProvider

AUDIT_LOGS = {
    "admin_activity": "cloudaudit.googleapis.com%2Factivity",
    "data_access": "cloudaudit.googleapis.com%2Fdata_access",
    "system_event": "cloudaudit.googleapis.com%2Fsystem_event",
    "policy_denied": "cloudaudit.googleapis.com%2Fpolicy",
}
COVERAGE_FILE = "logs/gcp/coverage.json"
DATA_ACCESS_RETENTION_DAYS = 30  # default retention of the _Default log bucket (admin activity: 400 days)
_THROTTLED = (gexc.TooManyRequests, gexc.ServiceUnavailable)
_STATE_KEY = "gcp_audit"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def audit_filter(project: str, request: LogPullRequest) -> str:
    """The Logging query for one project: audit log names, the window, and principal/resource scope."""
    kinds = request.extra.get("log_kinds") or list(AUDIT_LOGS)
    names = " OR ".join(f"logName={_quote(f'projects/{project}/logs/{AUDIT_LOGS[kind]}')}" for kind in kinds)
    clauses = [f"({names})", f"timestamp>={_quote(request.start)}", f"timestamp<{_quote(request.end)}"]
    scope = [f"protoPayload.authenticationInfo.principalEmail={_quote(p)}" for p in request.principals]
    scope += [f"protoPayload.authenticationInfo.serviceAccountKeyName:{_quote(k)}" for k in request.access_keys]
    if scope:
        clauses.append("(" + " OR ".join(scope) + ")")
    if request.resources:
        clauses.append("(" + " OR ".join(f"protoPayload.resourceName:{_quote(r)}" for r in request.resources) + ")")
    return " AND ".join(clauses)


def _utc(value: str, what: str) -> str:
    try:
        return iso_utc(parse_utc(value))
    except ValueError:
        raise CloudirError(
            f"window {what} {value!r} is not an ISO 8601 time", hint="e.g. 2026-11-20T08:00:00Z"
        ) from None


def plan_audit_pull(provider: GcpProvider, request: LogPullRequest) -> Plan:
    """One READ step per project; every page is one ``entries:list`` call."""
    request = replace(request, start=_utc(request.start, "start"), end=_utc(request.end, "end"))
    projects: list[str] = list(request.extra.get("projects") or [provider.project])
    unknown = set(request.extra.get("log_kinds") or []) - set(AUDIT_LOGS)
    if unknown:
        raise CloudAccessError(
            f"unknown audit log kind(s): {', '.join(sorted(unknown))}", hint=f"choose from {', '.join(AUDIT_LOGS)}"
        )
    target = f"gcp:{','.join(projects)}:{request.start}/{request.end}"
    steps = [
        Step(
            f"logs:audit:{project}",
            f"Pull Cloud Audit Logs of project {project}, {request.start} to {request.end}",
            StepKind.READ,
            [
                call(
                    "logging",
                    "entries.list",
                    None,
                    resourceNames=f"projects/{project}",
                    filter=audit_filter(project, request),
                    orderBy="timestamp asc",
                    pageSize=provider.log_page_size,
                )
            ],
            partial(_pull_project, provider=provider, request=request, target=target, project=project),
        )
        for project in projects
    ]
    notes = [f"raw pages go to logs/gcp/audit/<project>/page-NNNNN.json; coverage to {COVERAGE_FILE}"]
    return Plan("logs", provider.cloud, target, steps, notes)


def _pull_project(
    ctx: StepContext, *, provider: GcpProvider, request: LogPullRequest, target: str, project: str
) -> dict[str, Any]:
    case = ctx.case
    log_filter = audit_filter(project, request)
    progress = _load_progress(case, target, project)
    progress.update(stopped_early=False, reason=None)
    api = provider.api
    folder = f"logs/gcp/audit/{safe_name(project)}"
    attempts = 0
    while True:
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{project}"],
            "filter": log_filter,
            "orderBy": "timestamp asc",
            "pageSize": provider.log_page_size,
        }
        if progress["next_page_token"]:
            body["pageToken"] = progress["next_page_token"]
        page_path = f"{folder}/page-{progress['pages'] + 1:05d}.json"
        try:
            with api.raw_bodies(partial(_store_page, case, page_path)):
                response = api.logging().logging_api.api_request(method="POST", path="/entries:list", data=body)
        except _THROTTLED as exc:
            attempts += 1
            progress["throttled"] += 1
            if attempts > provider.log_max_retries:
                reason = f"entries.list still throttled ({exc.code} {_status(exc)}) after {attempts - 1} retries"
                _stop(case, request, target, project, progress, reason=reason)
                raise CloudAccessError(
                    f"audit log collection for {project} stopped early: {reason}",
                    hint=f"pages so far are kept and {COVERAGE_FILE} says so; re-run with --resume to continue",
                ) from None
            time.sleep(provider.log_backoff * 2 ** (attempts - 1))
            continue
        except gexc.GoogleAPICallError as exc:
            reason = f"entries.list failed: {exc.code} {_status(exc)}"
            _stop(case, request, target, project, progress, reason=reason)
            with gcp_errors(f"list audit log entries of project {project}", "logging.logEntries.list"):
                raise
        attempts = 0
        entries = response.get("entries", [])
        stamps = [str(entry["timestamp"]) for entry in entries if entry.get("timestamp")]
        progress["pages"] += 1
        progress["entries"] += len(entries)
        if stamps:
            progress["first_timestamp"] = progress["first_timestamp"] or min(stamps)
            progress["last_timestamp"] = max(stamps)
        progress["next_page_token"] = response.get("nextPageToken")
        _save_progress(case, target, project, progress)
        if not progress["next_page_token"]:
            break
    progress["complete"] = True
    _save_progress(case, target, project, progress)
    _write_coverage(case, request, target)
    return {key: progress[key] for key in ("pages", "entries", "throttled", "first_timestamp", "last_timestamp")}


def _store_page(case: Case, rel_path: str, raw: bytes) -> None:
    """Write the page body exactly as received (throttled attempts never reach here: only 2xx bodies do)."""
    case.write_bytes(rel_path, raw)


def _status(exc: gexc.GoogleAPICallError) -> str:
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors else {}
    reason = first.get("reason") if isinstance(first, dict) else None
    return str(reason or exc.message).splitlines()[0]


def _stop(
    case: Case, request: LogPullRequest, target: str, project: str, progress: dict[str, Any], *, reason: str
) -> None:
    progress.update(stopped_early=True, reason=reason)
    _save_progress(case, target, project, progress)
    _write_coverage(case, request, target)


def _load_progress(case: Case, target: str, project: str) -> dict[str, Any]:
    saved = case.load_state().get(_STATE_KEY, {}).get(target, {}).get(project)
    fresh = {
        "pages": 0,
        "entries": 0,
        "throttled": 0,
        "next_page_token": None,
        "first_timestamp": None,
        "last_timestamp": None,
        "stopped_early": False,
        "reason": None,
        "complete": False,
    }
    if saved and not saved.get("complete"):
        fresh.update(saved)
    return fresh


def _save_progress(case: Case, target: str, project: str, progress: dict[str, Any]) -> None:
    state = case.load_state()
    state.setdefault(_STATE_KEY, {}).setdefault(target, {})[project] = dict(progress)
    case.save_state(state)


def _write_coverage(case: Case, request: LogPullRequest, target: str) -> None:
    """``logs/gcp/coverage.json`` (cloudir.coverage): window, span covered, pages, throttling, early stops."""
    projects: dict[str, dict[str, Any]] = case.load_state().get(_STATE_KEY, {}).get(target, {})
    report = CoverageReport("gcp", ",".join(sorted(projects)), request.start, request.end)
    kinds = list(request.extra.get("log_kinds") or AUDIT_LOGS)
    for name, progress in sorted(projects.items()):
        if progress["stopped_early"]:
            status = "stopped"
        elif progress["complete"]:
            status = "complete" if progress["entries"] else "empty"
        else:
            status = "partial"
        report.add_source(
            SourceCoverage(
                source="gcp:cloud-audit-logs",
                location=name,
                scope=audit_filter(name, request),
                status=status,
                items=progress["entries"],
                first_event=progress["first_timestamp"],
                last_event=progress["last_timestamp"],
                stopped_reason=progress["reason"],
                details={
                    "pages": progress["pages"],
                    "throttled_responses": progress["throttled"],
                    "log_kinds": kinds,
                    "complete_through": request.end if progress["complete"] else progress["last_timestamp"],
                },
            )
        )
    if "data_access" in kinds:
        firsts = [p["first_timestamp"] for p in projects.values() if p["first_timestamp"]]
        oldest = parse_utc(min(firsts)[:19] + "Z") if firsts else parse_utc(request.start)
        report.add_retention("gcp:data-access-logs (_Default bucket)", DATA_ACCESS_RETENTION_DAYS, oldest)
    case.write_json(COVERAGE_FILE, report.to_dict())
