"""`cloudir acquire gcp`, `cloudir contain gcp` and `cloudir logs pull gcp`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cloudir.case import Case, safe_name
from cloudir.cli.apps import acquire_app, contain_app, pull_app
from cloudir.cli.common import (
    CaseOpt,
    DryRunOpt,
    ExaminerCidrOpt,
    ForceOpt,
    ResumeOpt,
    case_path,
    console,
    execute_plan,
    open_case,
    open_containment_case,
    resolve_acquired_target,
    resolve_target,
    show_dry_run,
)
from cloudir.errors import CloudirError
from cloudir.plan import Plan
from cloudir.provider import (
    AcquireOptions,
    ContainOptions,
    LogPullRequest,
    Provider,
    TargetKind,
    TargetQuery,
    get_provider,
)
from cloudir.textsafe import esc

ProjectOpt = Annotated[
    str | None, typer.Option("--project", help="Project of the target (default: GOOGLE_CLOUD_PROJECT).")
]
ZoneOpt = Annotated[str | None, typer.Option("--zone", help="Zone of the instance (default: search all zones).")]
InstanceOpt = Annotated[str | None, typer.Option("--instance", help="Instance name (or numeric id).")]
IpOpt = Annotated[str | None, typer.Option("--ip", help="Internal or external IP of the instance.")]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--api-endpoint",
        help="Send Compute, IAM and Logging calls to this endpoint (e.g. a Private Service Connect address).",
    ),
]
AnonymousOpt = Annotated[
    bool, typer.Option("--anonymous", hidden=True, help="Send no credentials (local fake endpoints only).")
]


def _provider(project: str | None, endpoint: str | None, anonymous: bool, **extra: Any) -> Provider:
    config: dict[str, Any] = {"project": project, "anonymous": anonymous, **extra}
    if endpoint:
        config |= {"api_endpoint": endpoint, "url_scheme": "http" if endpoint.startswith("http://") else "https"}
    return get_provider("gcp", **config)


def _query(instance: str | None, ip: str | None, zone: str | None) -> TargetQuery:
    if bool(instance) == bool(ip):
        raise CloudirError("name exactly one target", hint="use --instance NAME or --ip ADDRESS")
    return TargetQuery(TargetKind.INSTANCE, str(instance or ip).strip(), zone)


def _refuse_silent_resume(case: Case, plan: Plan, resume: bool) -> None:
    """A failed earlier run of the same plan in this case continues only when the responder says --resume."""
    run = case.load_state().get("runs", {}).get(plan.key, {})
    if run.get("status") == "failed" and not resume:
        raise CloudirError(
            f"an earlier {plan.name} of {plan.target} in case {case.case_id} failed",
            hint="add --resume to continue it from the failed step",
        )


@acquire_app.command("gcp")
def acquire_gcp(  # noqa: PLR0917 - one parameter per CLI option
    instance: InstanceOpt = None,
    ip: IpOpt = None,
    project: ProjectOpt = None,
    zone: ZoneOpt = None,
    forensic_project: Annotated[
        str | None,
        typer.Option("--forensic-project", help="Project that receives an image copy of every snapshot."),
    ] = None,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    api_endpoint: EndpointOpt = None,
    anonymous: AnonymousOpt = False,
) -> None:
    """Preserve a Compute Engine instance and acquire its evidence into a case folder.

    \b
    In order:
      1. preserve: deletion protection; abandon it from its managed instance group
         (so the group cannot delete or recreate it; the group's size drops by one)
      2. capture: instance, disks, applicable firewall rules, service account (IAM record and keys),
         labels, metadata incl. startup-script, serial port output
         -> metadata/gcp/<project>/<zone>/<instance>/
      3. snapshot every attached disk, labelled cloudir-case-id (a re-run never duplicates them)
      4. with --forensic-project: an image copy of each snapshot in that project
    Raw disk image export is not supported on gcp. Every API call and artifact SHA-256 goes
    into custody.jsonl; check it with `cloudir verify`.

    \b
    Examples:
      cloudir acquire gcp --instance web-1 --project prod-1 --zone us-central1-a --dry-run
      cloudir acquire gcp --ip 34.118.42.7 --project prod-1 --case cases/IR-42
      cloudir acquire gcp --instance web-1 --project prod-1 --forensic-project ir-vault
      cloudir acquire gcp --instance web-1 --project prod-1 --case cases/IR-42 --resume   # after a failure

    Exit codes: 0 done, 2 bad input / not found / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    query = _query(instance, ip, zone)
    provider = _provider(project, api_endpoint, anonymous, forensic_project=forensic_project)
    options = AcquireOptions(forensic_account=forensic_project)
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_acquire(provider.find_target(query), options))
        return
    the_case = open_case(provider, case_path(case, safe_name(query.value)), resume=resume)
    target = resolve_target(provider, query, the_case)
    execute_plan(provider.plan_acquire(target, options), the_case)


@contain_app.command("gcp")
def contain_gcp(  # noqa: PLR0917 - one parameter per CLI option
    instance: InstanceOpt = None,
    ip: IpOpt = None,
    project: ProjectOpt = None,
    zone: ZoneOpt = None,
    examiner_cidr: ExaminerCidrOpt = None,
    force: ForceOpt = False,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    api_endpoint: EndpointOpt = None,
    anonymous: AnonymousOpt = False,
) -> None:
    """Isolate a Compute Engine instance (refused until `cloudir acquire gcp` completed in the case, or --force).

    \b
    What it does:
      - firewall rules on the instance's network(s) for a new network tag cloudir-isolate-<id>:
        deny all ingress and all egress (priority 1); with --examiner-cidr, allow that range
        first (priority 0)
      - adds the tag to the instance, which activates the rules
    Credentials are not revoked on gcp: disable the instance's service account or its keys in IAM.

    \b
    Examples:
      cloudir contain gcp --instance web-1 --project prod-1 --zone us-central1-a --case cases/IR-42 --dry-run
      cloudir contain gcp --instance web-1 --project prod-1 --case cases/IR-42 --examiner-cidr 198.51.100.7/32
      cloudir contain gcp --ip 10.128.0.17 --project prod-1 --force   # no acquisition first: only when you must

    Exit codes: 0 done, 2 refused / bad input / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    query = _query(instance, ip, zone)
    provider = _provider(project, api_endpoint, anonymous)
    options = ContainOptions(examiner_cidr=examiner_cidr, revoke_credentials=False)
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_contain(provider.find_target(query), options))
        return
    the_case = open_containment_case(provider, case_path(case, safe_name(query.value)), cloud="gcp", force=force)
    target = resolve_acquired_target(provider, query, the_case, force=force)
    plan = provider.plan_contain(target, options)
    _refuse_silent_resume(the_case, plan, resume)
    execute_plan(plan, the_case)
    console.print(f"[green]contained[/] {esc(target.ref)}", soft_wrap=True)


@pull_app.command("gcp")
def pull_gcp(  # noqa: PLR0917 - one parameter per CLI option
    start: Annotated[str, typer.Option("--start", help="Window start, ISO 8601 UTC (e.g. 2026-11-20T08:00:00Z).")],
    end: Annotated[str, typer.Option("--end", help="Window end, ISO 8601 UTC (exclusive).")],
    project: Annotated[
        list[str] | None,
        typer.Option("--project", help="Project to collect (repeatable; default: GOOGLE_CLOUD_PROJECT)."),
    ] = None,
    principal: Annotated[
        list[str] | None,
        typer.Option("--principal", help="Only entries by this principal email (repeatable)."),
    ] = None,
    resource: Annotated[
        list[str] | None,
        typer.Option("--resource", help="Only entries whose resourceName contains this (repeatable)."),
    ] = None,
    log_kind: Annotated[
        list[str] | None,
        typer.Option(
            "--log-kind", help="admin_activity, data_access, system_event or policy_denied (repeatable; default: all)."
        ),
    ] = None,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    api_endpoint: EndpointOpt = None,
    anonymous: AnonymousOpt = False,
) -> None:
    """Pull Cloud Audit Logs for a window into a case; every raw page is kept as evidence.

    \b
    Each entries:list response body is stored unmodified as
    logs/gcp/audit/<project>/page-00001.json, … before it is parsed. Throttling
    (429 RESOURCE_EXHAUSTED) is retried with backoff; if collection still stops early,
    logs/gcp/coverage.json says so and --resume continues from the last page.
    A pull narrowed by --principal/--resource/--log-kind keeps its pages in
    logs/gcp/audit/<project>/<scope id>/ and its report in logs/gcp/scopes/<scope id>/coverage.json.

    \b
    Examples:
      cloudir logs pull gcp --project prod-1 --start 2026-11-20T08:00:00Z --end 2026-11-20T12:00:00Z --dry-run
      cloudir logs pull gcp --project prod-1 --start 2026-11-20T08:00:00Z --end 2026-11-20T12:00:00Z \\
          --principal web@prod-1.iam.gserviceaccount.com --case cases/IR-42
      cloudir logs pull gcp --project prod-1 --start … --end … --case cases/IR-42 --resume   # after throttling

    Exit codes: 0 done, 2 bad input / access problem, 3 collection stopped early (re-run with --resume).
    """
    projects = list(project or [])
    provider = _provider(projects[0] if projects else None, api_endpoint, anonymous)
    request = LogPullRequest(
        start=start,
        end=end,
        principals=list(principal or []),
        resources=list(resource or []),
        extra={"projects": projects, "log_kinds": list(log_kind or [])},
    )
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_pull_logs(request))
        return
    default_name = safe_name(f"gcp-logs-{'-'.join(projects) or 'default'}")
    plan = provider.plan_pull_logs(request)
    the_case = open_case(provider, case_path(case, default_name), resume=resume, repeat_of=plan)
    execute_plan(plan, the_case)
