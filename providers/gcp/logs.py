"""Cloud Audit Log collection through Logging v2 ``entries:list``, raw pages kept as evidence.

Each page's exact HTTP response body is written to ``logs/gcp/audit/<project>/page-00001.json`` from
the HTTP layer, before the SDK parses it. Throttling (429 / RESOURCE_EXHAUSTED) is retried with
exponential backoff; a collection that still stops early says so in ``logs/gcp/coverage.json`` and
resumes from its last page token on ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import requests
from google.api_core import exceptions as gexc

from cloudir.case import Case
from cloudir.coverage import CoverageReport, SourceCoverage, iso_utc, parse_utc
from cloudir.errors import CloudAccessError, CloudirError
from cloudir.plan import Plan, Step, StepContext, StepKind
from cloudir.provider import LogPullRequest
from cloudir.safepath import path_part
from providers.gcp import workspace
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


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parent_name(scope: str) -> str:
    """The Logging parent of a scope: ``organizations/ID`` or ``folders/ID`` as given, else ``projects/ID``."""
    return scope if scope.startswith(("organizations/", "folders/")) else f"projects/{scope}"


def scope_label(scope: str) -> str:
    """``project P``, ``organization O`` or ``folder F`` (for titles and messages)."""
    kind, _, name = parent_name(scope).partition("/")
    return f"{kind.removesuffix('s')} {name}"


def window_clauses(request: LogPullRequest) -> list[str]:
    """The Logging query terms of the request's window (start included, end excluded)."""
    return [f"timestamp>={quote(request.start)}", f"timestamp<{quote(request.end)}"]


def audit_filter(project: str, request: LogPullRequest) -> str:
    """The Logging query for one project, organization or folder: audit log names, the window, principal/resource."""
    kinds = request.extra.get("log_kinds") or list(AUDIT_LOGS)
    parent = parent_name(project)
    names = " OR ".join(f"logName={quote(f'{parent}/logs/{AUDIT_LOGS[kind]}')}" for kind in kinds)
    clauses = [f"({names})", *window_clauses(request)]
    scope = [f"protoPayload.authenticationInfo.principalEmail={quote(p)}" for p in request.principals]
    scope += [f"protoPayload.authenticationInfo.serviceAccountKeyName:{quote(k)}" for k in request.access_keys]
    if scope:
        clauses.append("(" + " OR ".join(scope) + ")")
    if request.resources:
        clauses.append("(" + " OR ".join(f"protoPayload.resourceName:{quote(r)}" for r in request.resources) + ")")
    return " AND ".join(clauses)


@dataclass(frozen=True)
class LogSource:
    """One kind of Cloud Logging collection: its query, where its pages and coverage go, its run-state key."""

    folder: str  # logs/gcp/<folder>/<project>[/<scope>]/page-NNNNN.json
    state_key: str
    coverage_source: str
    what: str  # for messages: "audit log", "VPC flow log"
    query: Callable[[str, LogPullRequest], str]
    coverage: Callable[[str], str]  # scope id -> coverage file


def coverage_file(scope: str) -> str:
    """``logs/gcp/coverage.json`` for a whole-project pull, ``logs/gcp/scopes/<scope>/coverage.json`` otherwise."""
    return f"logs/gcp/scopes/{scope}/coverage.json" if scope else COVERAGE_FILE


def scope_id(request: LogPullRequest) -> str:
    """'' for a whole-project pull; else 8 hex characters naming its principal/key/resource/log-kind scope.

    Scoped pulls keep their pages in their own folder, so they never overwrite a whole-project pull's pages.
    """
    scope = [request.principals, request.access_keys, request.resources, request.extra.get("log_kinds") or []]
    if not any(scope):
        return ""
    return hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:8]


def utc_time(value: str, what: str) -> str:
    """``value`` in canonical UTC (``...Z``), refused in one line when it is not an ISO 8601 time."""
    try:
        return iso_utc(parse_utc(value))
    except ValueError:
        raise CloudirError(
            f"window {what} {value!r} is not an ISO 8601 time", hint="e.g. 2026-11-20T08:00:00Z"
        ) from None


AUDIT = LogSource("audit", "gcp_audit", "gcp:cloud-audit-logs", "audit log", audit_filter, coverage_file)


def in_window(request: LogPullRequest) -> LogPullRequest:
    """The request with its window in canonical UTC, refused when a bound is not a time."""
    return replace(request, start=utc_time(request.start, "start"), end=utc_time(request.end, "end"))


def plan_audit_pull(provider: GcpProvider, request: LogPullRequest) -> Plan:
    """One READ step per project, organization or folder; every page is one ``entries:list`` call.

    An organization or folder (``organizations/ID``, ``folders/ID`` in ``extra["projects"]``) gives its own audit
    logs (IAM and policy changes made at that level), not those of the projects under it.
    """
    request = in_window(request)
    projects: list[str] = list(request.extra.get("projects") or [provider.project])
    unknown = set(request.extra.get("log_kinds") or []) - set(AUDIT_LOGS)
    if unknown:
        raise CloudirError(
            f"unknown audit log kind(s): {', '.join(sorted(unknown))}", hint=f"choose from {', '.join(AUDIT_LOGS)}"
        )
    scope = scope_id(request)
    target = f"gcp:{','.join(projects)}:{request.start}/{request.end}" + (f":{scope}" if scope else "")
    steps = [
        Step(
            f"logs:audit:{project}",
            f"Pull Cloud Audit Logs of {scope_label(project)}, {request.start} to {request.end}",
            StepKind.READ,
            [
                call(
                    "logging",
                    "entries.list",
                    None,
                    resourceNames=parent_name(project),
                    filter=audit_filter(project, request),
                    orderBy="timestamp asc",
                    pageSize=provider.log_page_size,
                )
            ],
            ProjectPull(AUDIT, provider, request, target=target, project=project, scope=scope).run,
        )
        for project in projects
    ]
    folder = "logs/gcp/audit/<project>" + (f"/{scope}" if scope else "")
    notes = [f"raw pages go to {folder}/page-NNNNN.json; coverage to {coverage_file(scope)}"]
    if request.extra.get("workspace") or request.extra.get("identity"):
        steps += workspace.plan_steps(provider, request, target)
        notes += workspace.plan_notes(request)
    return Plan("logs", provider.cloud, target, steps, notes)


_FRESH_PROGRESS: dict[str, Any] = {
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


class ProjectPull:
    """Pages through one project's entries of a log source; progress lives in the case state so a re-run continues."""

    def __init__(
        self,
        source: LogSource,
        provider: GcpProvider,
        request: LogPullRequest,
        *,
        target: str,
        project: str,
        scope: str,
    ) -> None:
        self.source = source
        self.provider = provider
        self.request = request
        self.target = target
        self.project = project
        self.scope = scope
        # organizations/N, folders/N -> organizations_N (no project id has an underscore, so none lands there)
        parent = path_part(project.replace("/", "_"))
        self.folder = f"logs/gcp/{source.folder}/{parent}" + (f"/{scope}" if scope else "")
        self.query = {"resourceNames": [parent_name(project)], "filter": source.query(project, request)}

    def run(self, ctx: StepContext) -> dict[str, Any]:
        """Fetch every page from where the last run stopped; store each raw body before it is parsed."""
        return self.pull(ctx.case)

    def pull(self, case: Case) -> dict[str, Any]:
        """Page through the entries into the case (see :meth:`run`)."""
        self._claim_folder(case)
        progress = self._load(case)
        progress.update(stopped_early=False, reason=None)
        attempts = 0
        while True:
            body = {**self.query, "orderBy": "timestamp asc", "pageSize": self.provider.log_page_size}
            if progress["next_page_token"]:
                body["pageToken"] = progress["next_page_token"]
            page_path = f"{self.folder}/page-{progress['pages'] + 1:05d}.json"
            try:
                with self.provider.api.raw_bodies(partial(_store_page, case, page_path)):
                    response = self.provider.api.logging().logging_api.api_request(
                        method="POST", path="/entries:list", data=body
                    )
            except _THROTTLED as exc:
                attempts += 1
                progress["throttled"] += 1
                if attempts > self.provider.log_max_retries:
                    reason = f"entries.list still throttled ({exc.code} {_status(exc)}) after {attempts - 1} retries"
                    self._stop(case, progress, reason)
                    raise CloudAccessError(
                        f"{self.source.what} collection for {self.project} stopped early: {reason}",
                        hint=f"pages so far are kept and {self.source.coverage(self.scope)} says so; "
                        "re-run with --resume to continue",
                    ) from None
                time.sleep(self.provider.log_backoff * 2 ** (attempts - 1))
                continue
            except (gexc.GoogleAPICallError, requests.RequestException) as exc:
                detail = (
                    f"{exc.code} {_status(exc)}" if isinstance(exc, gexc.GoogleAPICallError) else type(exc).__name__
                )
                self._stop(case, progress, f"entries.list failed: {detail}")
                with gcp_errors(
                    f"list {self.source.what} entries of {scope_label(self.project)}", "logging.logEntries.list"
                ):
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
            progress["complete"] = not progress["next_page_token"]
            self._save(case, progress)
            if progress["complete"]:
                break
        _write_coverage(case, self.source, self.request, self.target, self.scope)
        return {key: progress[key] for key in ("pages", "entries", "throttled", "first_timestamp", "last_timestamp")}

    def _claim_folder(self, case: Case) -> None:
        """Record the query in ``<folder>/request.json``; refuse a folder holding a different query's pages."""
        case.claim_folder(
            self.folder,
            self.query,
            f"{self.folder} already holds {self.source.what} pages of a different window or scope",
            "pull into a new --case folder for a different window",
        )

    def _stop(self, case: Case, progress: dict[str, Any], reason: str) -> None:
        progress.update(stopped_early=True, reason=reason)
        self._save(case, progress)
        _write_coverage(case, self.source, self.request, self.target, self.scope)

    def _load(self, case: Case) -> dict[str, Any]:
        saved = case.load_state().get(self.source.state_key, {}).get(self.target, {}).get(self.project)
        return {**_FRESH_PROGRESS, **(saved if saved and not saved.get("complete") else {})}

    def _save(self, case: Case, progress: dict[str, Any]) -> None:
        state = case.load_state()
        state.setdefault(self.source.state_key, {}).setdefault(self.target, {})[self.project] = dict(progress)
        case.save_state(state)


def _store_page(case: Case, rel_path: str, raw: bytes) -> None:
    """Write the page body exactly as received (throttled attempts never reach here: only 2xx bodies do)."""
    case.write_bytes(rel_path, raw)


def _status(exc: gexc.GoogleAPICallError) -> str:
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors else {}
    reason = first.get("reason") if isinstance(first, dict) else None
    return str(reason or exc.message).splitlines()[0]


def _write_coverage(case: Case, source: LogSource, request: LogPullRequest, target: str, scope: str) -> None:
    """The source's coverage report (cloudir.coverage): window, span covered, pages, throttling, early stops."""
    projects: dict[str, dict[str, Any]] = case.load_state().get(source.state_key, {}).get(target, {})
    report = CoverageReport("gcp", ",".join(sorted(projects)), request.start, request.end)
    kinds = list(request.extra.get("log_kinds") or AUDIT_LOGS) if source is AUDIT else []
    for name, progress in sorted(projects.items()):
        if progress["stopped_early"]:
            status = "stopped"
        elif progress["complete"]:
            status = "complete" if progress["entries"] else "empty"
        else:
            status = "partial"
        report.add_source(
            SourceCoverage(
                source=source.coverage_source,
                location=name,
                scope=source.query(name, request),
                status=status,
                items=progress["entries"],
                first_event=progress["first_timestamp"],
                last_event=progress["last_timestamp"],
                stopped_reason=progress["reason"],
                details={
                    "pages": progress["pages"],
                    "throttled_responses": progress["throttled"],
                    **({"log_kinds": kinds} if kinds else {}),
                    "complete_through": request.end if progress["complete"] else progress["last_timestamp"],
                },
            )
        )
    if "data_access" in kinds:
        firsts = [p["first_timestamp"] for p in projects.values() if p["first_timestamp"]]
        oldest = parse_utc(min(firsts)[:19] + "Z") if firsts else parse_utc(request.start)
        report.add_retention("gcp:data-access-logs (_Default bucket)", DATA_ACCESS_RETENTION_DAYS, oldest)
    case.write_json(source.coverage(scope), report.to_dict())
