"""`cloudir acquire gcp`, `cloudir contain gcp` and `cloudir logs pull gcp`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cloudir.cli.apps import acquire_app, contain_app, pull_app
from cloudir.cli.aws_logs import resolve_window
from cloudir.cli.common import (
    AfterOpt,
    AroundOpt,
    BeforeOpt,
    CaseOpt,
    DryRunOpt,
    EndOpt,
    ExaminerCidrOpt,
    ForceOpt,
    ForensicOpt,
    Grammar,
    LogTargetOpt,
    ResumeOpt,
    StartOpt,
    TargetOpt,
    acquire_target,
    contain_target,
    forensic_destination,
    hidden,
    log_case,
    one_target,
    pull_logs,
)
from cloudir.cli.rows import FormatOpt, RowFormat
from cloudir.errors import CloudirError
from cloudir.provider import AcquireOptions, ContainOptions, LogPullRequest, TargetKind, TargetQuery, resource_kind

ProjectOpt = Annotated[
    str | None, typer.Option("--project", help="Project of the target (default: GOOGLE_CLOUD_PROJECT).")
]
ZoneOpt = Annotated[str | None, typer.Option("--zone", help="Zone of the instance (default: search all zones).")]
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


def _config(project: str | None, endpoint: str | None, anonymous: bool, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"project": project, "anonymous": anonymous, **extra}
    if endpoint:
        config |= {"api_endpoint": endpoint, "url_scheme": "http" if endpoint.startswith("http://") else "https"}
    return config


def _numeric(value: str, option: str) -> str:
    """An organization or folder id: digits only (it becomes part of a resource name and a log name)."""
    if not value.strip().isdigit():
        raise CloudirError(f"{option} {value!r} is not a numeric id", hint="e.g. --organization 123456789012")
    return value.strip()


def _query(value: str, zone: str | None) -> TargetQuery:
    """A service account by its email; anything else names an instance."""
    if "@" in value:
        return TargetQuery(TargetKind.PRINCIPAL, value)
    return TargetQuery(resource_kind(value) or TargetKind.INSTANCE, value, zone)


@acquire_app.command("gcp")
def acquire_gcp(  # noqa: PLR0917 - one parameter per CLI option
    target: TargetOpt = None,
    project: ProjectOpt = None,
    zone: ZoneOpt = None,
    forensic: ForensicOpt = None,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    api_endpoint: EndpointOpt = None,
    anonymous: AnonymousOpt = False,
    instance: Annotated[str | None, hidden("--instance")] = None,
    ip: Annotated[str | None, hidden("--ip")] = None,
    principal: Annotated[str | None, hidden("--principal")] = None,
    forensic_project: Annotated[str | None, hidden("--forensic-project")] = None,
) -> None:
    """Preserve a Compute Engine instance and acquire its evidence into a case folder.

    \b
    --target: the instance (its name, numeric id, or internal or external IP) or a compromised service
    account (NAME@PROJECT.iam.gserviceaccount.com).
    In order:
      1. preserve: deletion protection; abandon it from its managed instance group
         (so the group cannot delete or recreate it; the group's size drops by one)
      2. capture: instance, disks, applicable firewall rules, service account (IAM record and keys),
         labels, metadata incl. startup-script, serial port output
         -> artifacts/gcp/<project>/<zone>/<instance>/
      3. snapshot every attached disk, labelled cloudir-case-id (a re-run never duplicates them)
      4. with --forensic (project): an image copy of each snapshot in that project
    A service account (--target EMAIL): the account, its keys and the project IAM policy
    -> artifacts/gcp/service-accounts/<email>/
    Raw disk image export is not supported on gcp. Every API call and artifact SHA-256 goes
    into custody.jsonl; check it with `cloudir verify`.

    \b
    Examples:
      cloudir acquire gcp --target web-1 --project prod-1 --zone us-central1-a --dry-run
      cloudir acquire gcp --target 34.118.42.7 --project prod-1 --case cases/IR-42
      cloudir acquire gcp --target web-1 --project prod-1 --forensic ir-vault
      cloudir acquire gcp --target web-1 --project prod-1 --case cases/IR-42 --resume   # after a failure

    Exit codes: 0 done, 2 bad input / not found / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    query = _query(one_target(target, instance=instance, ip=ip, principal=principal), zone)
    destination = forensic_destination("gcp", forensic, forensic_project, source=project)
    config = _config(project, api_endpoint, anonymous, forensic_project=destination)
    options = AcquireOptions(forensic_account=destination)
    acquire_target("gcp", config, query, options, Grammar(case, dry_run, resume, fmt=output))


@contain_app.command("gcp")
def contain_gcp(  # noqa: PLR0917 - one parameter per CLI option
    target: TargetOpt = None,
    project: ProjectOpt = None,
    zone: ZoneOpt = None,
    examiner_cidr: ExaminerCidrOpt = None,
    force: ForceOpt = False,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    api_endpoint: EndpointOpt = None,
    anonymous: AnonymousOpt = False,
    instance: Annotated[str | None, hidden("--instance")] = None,
    ip: Annotated[str | None, hidden("--ip")] = None,
    principal: Annotated[str | None, hidden("--principal")] = None,
    remove_bindings_since: Annotated[
        str | None,
        typer.Option(
            "--remove-bindings-since",
            help="Service account: remove the project IAM bindings added by or for it since this time (audit log).",
        ),
    ] = None,
    remove_binding: Annotated[
        list[str] | None,
        typer.Option("--remove-binding", help="Service account: remove this ROLE=MEMBER project binding (repeatable)."),
    ] = None,
) -> None:
    """Isolate a Compute Engine instance (refused until `cloudir acquire gcp` completed in the case, or --force).

    \b
    --target: the instance (its name, numeric id, or internal or external IP) or a compromised service
    account (NAME@PROJECT.iam.gserviceaccount.com).
    What it does:
      - firewall rules on the instance's network(s) for a new network tag cloudir-isolate-<id>:
        deny all ingress and all egress (priority 1); with --examiner-cidr, allow that range
        first (priority 0)
      - adds the tag to the instance, which activates the rules
    A service account (--principal): every user-managed key is disabled, then the account; with
    --remove-bindings-since / --remove-binding, the project IAM bindings the Admin Activity audit log shows
    added by or for it since then (or named) are removed, the whole policy (version 3) saved first and
    written back with its etag; each step records in custody the gcloud command that undoes it.

    \b
    Examples:
      cloudir contain gcp --target web-1 --project prod-1 --zone us-central1-a --case cases/IR-42 --dry-run
      cloudir contain gcp --target web-1 --project prod-1 --case cases/IR-42 --examiner-cidr 198.51.100.7/32
      cloudir contain gcp --target 10.128.0.17 --project prod-1 --force   # no acquisition first: only when you must
      cloudir contain gcp --target web@prod-1.iam.gserviceaccount.com --project prod-1 --case cases/IR-42 \\
          --remove-bindings-since 2026-11-20T08:00:00Z

    Exit codes: 0 done, 2 refused / bad input / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    query = _query(one_target(target, instance=instance, ip=ip, principal=principal), zone)
    config = _config(project, api_endpoint, anonymous)
    options = ContainOptions(
        examiner_cidr=examiner_cidr,
        revoke_credentials=False,
        window_start=remove_bindings_since,
        extra={"iam_bindings": remove_binding or []},
    )
    contain_target("gcp", config, query, options, Grammar(case, dry_run, resume, force, output))


@pull_app.command("gcp")
def pull_gcp(  # noqa: PLR0917 - one parameter per CLI option
    target: LogTargetOpt = None,
    case: CaseOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    around: AroundOpt = None,
    before: BeforeOpt = "24h",
    after: AfterOpt = "6h",
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
    workspace: Annotated[
        bool,
        typer.Option("--workspace", help="Also pull Google Workspace admin, login and token activity reports."),
    ] = False,
    flows: Annotated[
        bool,
        typer.Option(
            "--flows", help="Pull VPC Flow Logs (compute.googleapis.com/vpc_flows) instead of the audit logs."
        ),
    ] = False,
    instance: Annotated[
        list[str] | None,
        typer.Option("--instance", help="With --flows: only connections of this instance, name or id (repeatable)."),
    ] = None,
    workspace_admin: Annotated[
        str | None,
        typer.Option(
            "--workspace-admin", help="Workspace administrator the service account acts as (domain-wide delegation)."
        ),
    ] = None,
    organization: Annotated[
        list[str] | None,
        typer.Option("--organization", help="Also this organization's own audit logs (numeric id; repeatable)."),
    ] = None,
    folder: Annotated[
        list[str] | None,
        typer.Option("--folder", help="Also this folder's own audit logs (numeric id; repeatable)."),
    ] = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    api_endpoint: EndpointOpt = None,
    anonymous: AnonymousOpt = False,
) -> None:
    """Pull Cloud Audit Logs (and with --workspace the Workspace reports) for a window into a case, as evidence.

    \b
    Each entries:list response body is stored unmodified as
    logs/gcp/audit/<project>/page-00001.json, … before it is parsed. Throttling
    (429 RESOURCE_EXHAUSTED) is retried with backoff; if collection still stops early,
    logs/gcp/coverage.json says so and --resume continues from the last page.
    A pull narrowed by --principal/--resource/--log-kind keeps its pages in
    logs/gcp/audit/<project>/<scope id>/ and its report in logs/gcp/scopes/<scope id>/coverage.json.
    With --flows, VPC Flow Log entries go to logs/gcp/flows/<project>/ the same way, with
    logs/gcp/flows/coverage.json.
    With --workspace, Admin SDK Reports pages (admin, login, token; per --principal when given) go to
    logs/gcp/workspace/<application>/<user>/ the same way, with logs/gcp/workspace/coverage.json.
    --organization / --folder add that level's own audit logs (IAM and policy changes made on the
    organization or folder, not its projects' logs) under logs/gcp/audit/organizations_<id>/ or folders_<id>/.

    --target (an instance's name, id or IP, or a service account) narrows the pull to it: the entries of the
    service accounts the instance runs as (or, running as none, those naming it), a service account's
    own entries; with --flows, the instance's connections.

    \b
    Examples:
      cloudir logs pull gcp --case cases/IR-42 --project prod-1 --around 2026-11-20T10:00:00Z --before 2h --dry-run
      cloudir logs pull gcp --target web-1 --project prod-1 --around 2026-11-20T10:00:00Z --case cases/IR-42
      cloudir logs pull gcp --case cases/IR-42 --project prod-1 --start 2026-11-20T08:00:00Z \\
          --end 2026-11-20T12:00:00Z --principal web@prod-1.iam.gserviceaccount.com
      cloudir logs pull gcp --case cases/IR-42 --project prod-1 --start … --end … --resume   # after throttling
      cloudir logs pull gcp --case cases/IR-42 --project prod-1 --around … --workspace \\
          --workspace-admin admin@victim.example --principal jdoe@victim.example
      cloudir logs pull gcp --case cases/IR-42 --project prod-1 --around … --flows --instance web-1

    Exit codes: 0 done, 2 bad input / access problem, 3 collection stopped early (re-run with --resume).
    """
    window_start, window_end = resolve_window(start, end, around, before, after)
    projects = list(project or [])
    parents = [f"organizations/{_numeric(o, '--organization')}" for o in organization or []]
    parents += [f"folders/{_numeric(f, '--folder')}" for f in folder or []]
    if flows and (principal or resource or log_kind or workspace or parents):
        raise CloudirError(
            "--flows takes --instance only", hint="flow logs are scoped by instance, not principal or resource name"
        )
    if instance and not flows:
        raise CloudirError("--instance scopes a --flows pull", hint="add --flows, or use --resource for audit logs")
    query = _query(target, None) if target else None
    grammar = Grammar(log_case(case, target) if not dry_run else case, dry_run, resume, fmt=output)
    config = _config(projects[0] if projects else None, api_endpoint, anonymous)
    if flows:
        request = LogPullRequest(
            start=window_start,
            end=window_end,
            resources=list(instance or []),
            extra={"projects": projects, "flows": True},
        )
        description = f"VPC Flow Logs pull {window_start} .. {window_end}"
        pull_logs("gcp", config, request, grammar, target=query, description=description)
        return
    request = LogPullRequest(
        start=window_start,
        end=window_end,
        principals=list(principal or []),
        resources=list(resource or []),
        extra={
            "projects": projects + parents,
            "log_kinds": list(log_kind or []),
            "workspace": workspace,
            "workspace_admin": workspace_admin,
        },
    )
    description = f"Cloud Audit Logs pull {window_start} .. {window_end}"
    pull_logs("gcp", config, request, grammar, target=query, description=description)
