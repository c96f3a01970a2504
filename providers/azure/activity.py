"""Activity Log collection: every raw REST page stored before parsing, throttling honoured, coverage reported."""

from __future__ import annotations

import datetime as dt
import json
from functools import partial
from itertools import count
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from cloudir.coverage import CoverageReport, SourceCoverage, parse_utc
from cloudir.errors import CloudirError
from cloudir.plan import Plan, Step, StepContext, StepKind
from cloudir.safepath import path_part
from providers.azure import calls, entra
from providers.azure.principals import store_pages
from providers.azure.session import describe_error, last_page_number, page_span

if TYPE_CHECKING:
    from cloudir.provider import LogPullRequest
    from providers.azure.provider import AzureProvider

ACTIVITY_OPERATION = "Microsoft.Insights/eventtypes/values/read"
RETENTION_DAYS = 90
COVERAGE_PATH = "logs/azure/coverage.json"
SOURCE = "azure:activity"
SUBSCRIPTION_API_VERSION = "2022-12-01"
TENANT_STEP = "activity-tenant"


def activity_filter(start: str, end: str, scope: tuple[str, str] | None) -> str:
    """The $filter of one Activity Log query: the window and at most one scope (resource group or resource)."""
    text = f"eventTimestamp ge '{start}' and eventTimestamp le '{end}'"
    if scope is not None:
        text += f" and {scope[0]} eq '{scope[1]}'"
    return text


def page_dir(subscription: str, scope: tuple[str, str] | None) -> str:
    """Folder of a subscription's raw pages: ``logs/azure/activity/<subscription>[/<scope>]``."""
    base = f"logs/azure/activity/{path_part(subscription)}"
    return base if scope is None else f"{base}/{path_part(scope[1])}"


def plan_pull(provider: AzureProvider, request: LogPullRequest) -> Plan:
    """One READ step per subscription (or, tenant-wide, one listing every subscription and pulling each), then the
    coverage report."""
    tenant_wide = bool(request.extra.get("all_subscriptions"))
    subscriptions: list[str] = list(request.extra.get("subscriptions") or [provider.subscription_id])
    if tenant_wide and (
        request.extra.get("subscriptions") or request.extra.get("resource_groups") or request.resources
    ):
        raise CloudirError(
            "a tenant-wide pull takes every subscription, whole",
            hint="drop --subscription, --resource-group and --resource, or drop --all-subscriptions",
        )
    scopes: list[tuple[str, str] | None] = [
        *(("resourceGroupName", group) for group in request.extra.get("resource_groups", [])),
        *(("resourceUri", resource) for resource in request.resources),
    ] or [None]
    max_pages: int | None = request.extra.get("max_pages")
    coverage: dict[str, dict[str, Any]] = {}
    target = f"activity:{'tenant' if tenant_wide else ','.join(subscriptions)}:{request.start}/{request.end}"
    steps = (
        [_tenant_step(provider, request, (max_pages, coverage), target)]
        if tenant_wide
        else [
            Step(
                f"activity-{subscription}",
                f"Pull the Activity Log of subscription {subscription}",
                StepKind.READ,
                [
                    calls.call("activity.read", filter=activity_filter(request.start, request.end, scope))
                    for scope in scopes
                ],
                partial(
                    _pull,
                    provider=provider,
                    subscription=subscription,
                    request=request,
                    scopes=scopes,
                    limits=(max_pages, coverage),
                    plan_target=target,
                ),
            )
            for subscription in subscriptions
        ]
    )
    subscriptions = [] if tenant_wide else subscriptions
    entra_pulled: dict[str, Any] = {}
    identity_logs = bool(request.extra.get("entra") or request.extra.get("identity"))
    if identity_logs:
        steps += entra.plan_steps(provider, request, target, entra_pulled)
    pulls = [step.id for step in steps]
    steps.append(
        Step(
            "activity-coverage",
            "Write the coverage report (window, span covered, pages, throttling, early stops)",
            StepKind.READ,
            [],
            lambda ctx: _write_coverage(ctx, request, (subscriptions, pulls), (coverage, entra_pulled)),
        )
    )
    notes = []
    oldest = dt.datetime.now(dt.UTC) - dt.timedelta(days=RETENTION_DAYS)
    if parse_utc(request.start) < oldest:
        notes.append(f"the Activity Log keeps {RETENTION_DAYS} days: events before {oldest:%Y-%m-%d} are gone")
    if request.principals:
        scoped = " of the resources and resource groups named" if scopes != [None] else ""
        notes.append(f"the Activity Log API cannot filter by caller: every event{scoped} in the window is pulled")
    if identity_logs:
        notes += entra.plan_notes(request)
    return Plan("logs", provider.cloud, target, steps, notes)


def _tenant_step(
    provider: AzureProvider, request: LogPullRequest, limits: tuple[int | None, dict[str, dict[str, Any]]], target: str
) -> Step:
    return Step(
        TENANT_STEP,
        "List every subscription the identity can read, then pull the Activity Log of each",
        StepKind.READ,
        [
            calls.call("subscription.read", None, api_version=SUBSCRIPTION_API_VERSION),
            calls.call(
                "activity.read",
                None,
                subscription="<each listed subscription>",
                filter=activity_filter(request.start, request.end, None),
            ),
        ],
        partial(_pull_tenant, provider=provider, request=request, limits=limits, plan_target=target),
    )


def _pull_tenant(
    ctx: StepContext,
    *,
    provider: AzureProvider,
    request: LogPullRequest,
    limits: tuple[int | None, dict[str, dict[str, Any]]],
    plan_target: str,
) -> dict[str, Any]:
    """ARM ``GET /subscriptions`` (each page kept as served), then each listed subscription's Activity Log in its
    own folder. A subscription that fails is reported and the others still pulled; then the step fails, and a
    re-run continues where each one stopped."""
    folder = "artifacts/azure/subscriptions"
    attempt = 1 + len({path.name.split("-")[1] for path in (ctx.case.root / folder).glob("list-*-*.json")})
    url = f"{provider.session.base_url}/subscriptions?api-version={SUBSCRIPTION_API_VERSION}"
    listed = store_pages(ctx, provider.session.arm_client(), url, "subscription.read", f"{folder}/list-{attempt:02d}")
    subscriptions = sorted({str(item["subscriptionId"]) for item in listed})
    failed: dict[str, str] = {}
    for subscription in subscriptions:
        try:
            _pull(
                ctx,
                provider=provider,
                subscription=subscription,
                request=request,
                scopes=[None],
                limits=limits,
                plan_target=plan_target,
                step_id=TENANT_STEP,
            )
        except CloudirError as exc:
            failed[subscription] = str(exc)
    if failed:
        raise CloudirError(
            f"the Activity Log of {len(failed)} of {len(subscriptions)} subscriptions was not pulled: "
            + "; ".join(f"{sub}: {why}" for sub, why in failed.items()),
            hint="the pages pulled are kept; fix the access, then re-run with --resume",
        )
    pulled = {subscription: limits[1][subscription] for subscription in subscriptions}
    return {"subscriptions": subscriptions, "pulled": pulled, "events": sum(r["events"] for r in pulled.values())}


def _pull(
    ctx: StepContext,
    *,
    provider: AzureProvider,
    subscription: str,
    request: LogPullRequest,
    scopes: list[tuple[str, str] | None],
    limits: tuple[int | None, dict[str, dict[str, Any]]],
    plan_target: str,
    step_id: str | None = None,
) -> dict[str, Any]:
    """Page through one subscription's Activity Log; each page body is stored before the SDK parses it.

    A re-run after a failure continues from the nextLink of the last page an earlier attempt stored, and no
    page file is ever overwritten (a second pull into the same case numbers its pages after the first's).
    """
    max_pages, coverage = limits
    session = provider.session
    monitor = session.client("monitor", subscription)
    throttled_before = session.throttled[ACTIVITY_OPERATION]
    earlier = ctx.case.failed_step_files(plan_target, step_id or f"activity-{subscription}")
    stored: list[str] = []
    scope_text = " or ".join(f"{scope[0]} eq {scope[1]}" for scope in scopes if scope) or "subscription"
    report: dict[str, Any] = {"subscription": subscription, "scope": scope_text, "stopped_early": False, "reason": None}
    try:
        for scope in scopes:
            folder = page_dir(subscription, scope)
            resumed = [path for path in earlier if path.rsplit("/", 1)[0] == folder]
            stored.extend(resumed)
            next_link = json.loads((ctx.case.root / resumed[-1]).read_bytes()).get("nextLink") if resumed else None
            if resumed and not next_link:
                continue  # this scope was complete before the failure
            numbers = count(last_page_number(ctx.case.root / folder) + 1)
            session.page_sink.callback = lambda body, folder=folder, numbers=numbers: stored.append(
                ctx.case.write_bytes(f"{folder}/page-{next(numbers):05d}.json", body).path
            )
            listing = monitor.activity_logs.list(filter=activity_filter(request.start, request.end, scope))
            for page in listing.by_page(continuation_token=next_link) if next_link else listing.by_page():
                for _ in page:
                    pass
                if max_pages is not None and len(stored) >= max_pages:
                    report.update(stopped_early=True, reason=f"stopped after --max-pages {max_pages}")
                    break
            if report["stopped_early"]:
                break
    except AzureError as exc:
        error = describe_error(exc, f"list the Activity Log of {subscription}", calls.permission("activity.read"))
        report.update(stopped_early=True, reason=str(error))
        raise error from None
    finally:
        session.page_sink.callback = None
        report.update(
            pages=len(stored),
            files=stored,
            throttled=session.throttled[ACTIVITY_OPERATION] - throttled_before,
            **page_span(ctx.case.root, stored, "eventTimestamp"),
        )
        coverage[subscription] = report
    return report


def _write_coverage(
    ctx: StepContext,
    request: LogPullRequest,
    planned: tuple[list[str], list[str]],
    pulled_now: tuple[dict[str, dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Coverage of this run's pulls and of pulls an earlier run finished (resumed steps).

    Written even when a pull failed; the step then fails too, so that ``--resume`` writes it again."""
    (subscriptions, pulls), (coverage, entra_now) = planned, pulled_now
    tenant = ctx.results.get(TENANT_STEP) or {}
    subscriptions = subscriptions or tenant.get("subscriptions") or sorted(coverage)
    report = CoverageReport("azure", ",".join(subscriptions), request.start, request.end)
    for subscription in subscriptions:
        pulled = (
            ctx.results.get(f"activity-{subscription}")
            or (tenant.get("pulled") or {}).get(subscription)
            or coverage.get(subscription)
        )
        if pulled is None:
            report.add_source(SourceCoverage(SOURCE, subscription, status="unavailable", stopped_reason="not pulled"))
            continue
        status = "stopped" if pulled["stopped_early"] else "complete" if pulled["events"] else "empty"
        report.add_source(
            SourceCoverage(
                SOURCE,
                subscription,
                scope=pulled["scope"],
                status=status,
                items=pulled["events"],
                first_event=pulled["first_event"],
                last_event=pulled["last_event"],
                stopped_reason=pulled["reason"],
                details={"pages": pulled["pages"], "throttled": pulled["throttled"], "files": pulled["files"]},
            )
        )
        if pulled["first_event"]:
            report.add_retention(SOURCE, RETENTION_DAYS, parse_utc(pulled["first_event"]))
    if request.extra.get("entra"):
        earlier = {log.key: ctx.results[f"entra-{log.key}"] for log in entra.LOGS if f"entra-{log.key}" in ctx.results}
        for source, first_event in entra.coverage_sources(earlier | entra_now):
            report.add_source(source)
            if first_event:
                report.add_retention(source.source, entra.RETENTION_DAYS, parse_utc(first_event))
    ctx.case.write_json(COVERAGE_PATH, report.to_dict())
    failed = [step for step in pulls if step not in ctx.results]
    if failed:
        raise CloudirError(
            f"{COVERAGE_PATH} says what {', '.join(failed)} pulled before failing",
            hint="--resume continues the pull and writes the report again",
        )
    return {
        "pages": sum(source.details.get("pages", 0) for source in report.sources),
        "events": sum(source.items for source in report.sources),
        "throttled": sum(source.details.get("throttled", 0) for source in report.sources),
        "stopped_early": any(source.status in {"stopped", "unavailable"} for source in report.sources),
    }
