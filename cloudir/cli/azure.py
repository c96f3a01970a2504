"""`cloudir acquire azure`, `cloudir contain azure` and `cloudir logs pull azure`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from cloudir.cli.apps import acquire_app, contain_app, pull_app
from cloudir.cli.aws_logs import flow_summary, resolve_window
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
    print_warnings,
    pull_logs,
)
from cloudir.cli.rows import FormatOpt, RowFormat, print_rows
from cloudir.config import load_config
from cloudir.errors import CloudirError
from cloudir.provider import AcquireOptions, ContainOptions, LogPullRequest, TargetKind, TargetQuery, resource_kind

TENANT_SCOPE = "all-subscriptions"  # the adapter's home subscription in a tenant-wide pull that names none

OldTargetArg = Annotated[str | None, typer.Argument(hidden=True, show_default=False)]
SubscriptionOpt = Annotated[
    str | None,
    typer.Option("--subscription", help="Subscription id holding the target (default: AZURE_SUBSCRIPTION_ID)."),
]
GroupOpt = Annotated[
    str | None, typer.Option("--resource-group", help="Only look in this resource group (or region) for a VM name.")
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="ARM bearer token (e.g. from 'az account get-access-token'); default: AZURE_ACCESS_TOKEN, "
        "else DefaultAzureCredential (environment, managed identity, Azure CLI login).",
        show_default=False,
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint", help="ARM endpoint for sovereign clouds (default: https://management.azure.com)."),
]
CaBundleOpt = Annotated[
    Path | None, typer.Option("--ca-bundle", help="CA bundle for TLS-inspecting proxies.", show_default=False)
]
PollOpt = Annotated[float, typer.Option("--polling-interval", help="Seconds between long-running-operation polls.")]
PrincipalOpt = Annotated[
    str | None,
    typer.Option(
        "--principal",
        help="An Entra principal instead of a VM: a user (UPN or object id), a service principal (object id or "
        "appId), an app registration or a managed identity (object id). A --target with an @ is a user too.",
        show_default=False,
    ),
]
GraphEndpointOpt = Annotated[
    str | None,
    typer.Option("--graph-endpoint", help="Microsoft Graph endpoint (default: https://graph.microsoft.com)."),
]


def _query(target: str | None, old_target: str | None, principal: str | None, group: str | None) -> TargetQuery:
    """A VM by name, id or IP; an Entra principal with --principal, or a --target that is a user principal name."""
    name = one_target(target, positional=old_target, principal=principal)
    if principal or ("@" in name and not name.startswith("/")):
        return TargetQuery(TargetKind.PRINCIPAL, name)
    return TargetQuery(resource_kind(name) or TargetKind.INSTANCE, name, group)


def _config(
    subscription: str | None,
    token: str | None,
    endpoint: str | None,
    ca_bundle: Path | None,
    *,
    polling_interval: float,
    soc_subscription: str | None = None,
    soc_resource_group: str | None = None,
    graph_endpoint: str | None = None,
) -> dict[str, object]:
    subscription = subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        raise CloudirError("no subscription given", hint="pass --subscription or set AZURE_SUBSCRIPTION_ID")
    config: dict[str, object] = {
        "subscription_id": subscription,
        "token": token or os.environ.get("AZURE_ACCESS_TOKEN"),
        "base_url": endpoint,
        "connection_verify": str(ca_bundle) if ca_bundle else True,
        "polling_interval": polling_interval,
        "soc_subscription": soc_subscription,
    }
    if soc_resource_group:
        config["soc_resource_group"] = soc_resource_group
    if graph_endpoint:
        config["graph_url"] = graph_endpoint
    return config


@acquire_app.command("azure")
def acquire_azure(  # noqa: PLR0917 - one parameter per CLI option
    old_target: OldTargetArg = None,
    target: TargetOpt = None,
    subscription: SubscriptionOpt = None,
    resource_group: GroupOpt = None,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    forensic: ForensicOpt = None,
    soc_resource_group: Annotated[
        str | None,
        typer.Option(
            "--soc-resource-group", help="Existing resource group for the copies (default: rg-cloudir-evidence)."
        ),
    ] = None,
    copy_region: Annotated[
        str | None, typer.Option("--copy-region", help="Region to copy the snapshots to (CopyStart).")
    ] = None,
    disk_encryption_set: Annotated[
        str | None, typer.Option("--disk-encryption-set", help="Disk encryption set id to encrypt the snapshots with.")
    ] = None,
    raw_image: Annotated[
        bool,
        typer.Option("--raw-image", help="Also stream each snapshot as a VHD into images/azure/ (read-only SAS)."),
    ] = False,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    ca_bundle: CaBundleOpt = None,
    polling_interval: PollOpt = 5.0,
    principal: PrincipalOpt = None,
    graph_endpoint: GraphEndpointOpt = None,
    soc_subscription: Annotated[str | None, hidden("--soc-subscription")] = None,
) -> None:
    """Preserve an Azure VM and acquire its evidence into a case folder.

    \b
    --target: the VM (its name, ARM resource id, or a private or public IP) or an Entra user (UPN).
    In order:
      1. capture: VM, disks, NICs, NSGs, public IPs, scale set, tags, disk encryption settings
         -> artifacts/azure/<resource group>/<vm>/metadata/
      2. preserve: a CanNotDelete lock on the VM and every disk; protectFromScaleIn on a scale set member
      3. snapshot the OS disk and every data disk (full copies), tagged cloudir-case-id (a re-run reuses them)
      4. optional: copy into --forensic (subscription) / --copy-region; --raw-image streams each snapshot as a VHD
         through a read-only SAS, hashing it, then revokes the SAS
    An Entra principal (--principal, or a --target UPN): its IAM state before any change, as served
    -> artifacts/azure/principals/<object id>/ (Graph: the user or service principal, groups and roles,
    app role grants, authentication methods or credentials and owners; ARM: the subscription's role
    assignments). Graph needs the application permissions listed in docs/permissions.md.
    Every ARM and Graph call and artifact SHA-256 goes into custody.jsonl; check it with `cloudir verify`.

    \b
    Examples:
      cloudir acquire azure --target web-vm-01 --subscription 6f1c2a9e-... --dry-run
      cloudir acquire azure --target 10.0.1.4 --subscription 6f1c2a9e-... --case cases/IR-42
      cloudir acquire azure --target /subscriptions/.../virtualMachines/web-vm-01 --forensic 9a8b7c6d-... \\
          --raw-image
      cloudir acquire azure --target web-vm-01 --subscription 6f1c2a9e-... --case cases/IR-42 --resume # after failure
      cloudir acquire azure --principal jdoe@contoso.example --subscription 6f1c2a9e-... --case cases/IR-42

    Exit codes: 0 done, 2 bad input / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    query = _query(target, old_target, principal, resource_group)
    source = subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
    destination = forensic_destination("azure", forensic, soc_subscription, source=source)
    config = _config(
        subscription,
        token,
        endpoint,
        ca_bundle,
        polling_interval=polling_interval,
        soc_subscription=destination,
        soc_resource_group=soc_resource_group,
        graph_endpoint=graph_endpoint,
    )
    options = AcquireOptions(
        forensic_account=destination,
        forensic_location=copy_region,
        encryption_key=disk_encryption_set,
        raw_image=raw_image,
    )
    acquire_target("azure", config, query, options, Grammar(case, dry_run, resume, fmt=output))


@contain_app.command("azure")
def contain_azure(  # noqa: PLR0917 - one parameter per CLI option
    old_target: OldTargetArg = None,
    target: TargetOpt = None,
    subscription: SubscriptionOpt = None,
    resource_group: GroupOpt = None,
    case: CaseOpt = None,
    examiner_cidr: ExaminerCidrOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    ca_bundle: CaBundleOpt = None,
    polling_interval: PollOpt = 5.0,
    principal: PrincipalOpt = None,
    graph_endpoint: GraphEndpointOpt = None,
    remove_assignments_since: Annotated[
        str | None,
        typer.Option(
            "--remove-assignments-since",
            help="Principal: remove the role assignments created for or by it since this time (ISO 8601 UTC).",
            show_default=False,
        ),
    ] = None,
    remove_assignment: Annotated[
        list[str] | None,
        typer.Option("--remove-assignment", help="Principal: remove this role assignment id (repeatable)."),
    ] = None,
) -> None:
    """Isolate an Azure VM, or contain an Entra principal, once `cloudir acquire azure` completed in the case.

    Refused until then, unless --force.

    \b
    --target: the VM (its name, ARM resource id, or a private or public IP) or an Entra user (UPN).
    What it does:
      - creates NSG cloudir-isolate-<vm>: deny all inbound and outbound traffic (priority 4096),
        allowing only --examiner-cidr (priority 100)
      - attaches it to every NIC of the VM (the NIC as it was is saved first under containment/)
    An Entra principal (--principal, or a --target UPN):
      - a user: every sign-in session revoked (revokeSignInSessions), then accountEnabled=false
      - a service principal: accountEnabled=false
      - a managed identity: detached from the VMs that carry it (each VM's identity block saved first)
      - with --remove-assignments-since / --remove-assignment: the role assignments created for or by it
        in that window (or named) deleted, each saved first under containment/ with the command that
        re-creates it; each step's result records how to undo it

    \b
    Examples:
      cloudir contain azure --target web-vm-01 --subscription 6f1c2a9e-... --case cases/IR-42 --dry-run
      cloudir contain azure --target web-vm-01 --subscription 6f1c2a9e-... --case cases/IR-42 \\
          --examiner-cidr 198.51.100.7/32
      cloudir contain azure --target 10.0.1.4 --subscription 6f1c2a9e-... --force   # no acquisition first
      cloudir contain azure --principal jdoe@contoso.example --subscription 6f1c2a9e-... --case cases/IR-42 \
          --remove-assignments-since 2026-05-01T08:00:00Z

    Exit codes: 0 done, 2 refused / bad input / access problem, 3 a step failed (re-run with --resume).
    """
    query = _query(target, old_target, principal, resource_group)
    config = _config(
        subscription, token, endpoint, ca_bundle, polling_interval=polling_interval, graph_endpoint=graph_endpoint
    )
    options = ContainOptions(
        examiner_cidr=examiner_cidr,
        revoke_credentials=True,
        window_start=remove_assignments_since,
        extra={"role_assignments": remove_assignment or []},
    )
    contain_target("azure", config, query, options, Grammar(case, dry_run, resume, force, output))


@pull_app.command("azure")
def pull_azure(  # noqa: PLR0917 - one parameter per CLI option
    target: LogTargetOpt = None,
    case: CaseOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    around: AroundOpt = None,
    before: BeforeOpt = "24h",
    after: AfterOpt = "6h",
    subscription: Annotated[
        list[str] | None,
        typer.Option("--subscription", help="Subscription to pull (repeatable; default: AZURE_SUBSCRIPTION_ID)."),
    ] = None,
    all_subscriptions: Annotated[
        bool,
        typer.Option(
            "--all-subscriptions",
            help="Tenant-wide: every subscription the identity can read (ARM GET /subscriptions), each pulled.",
        ),
    ] = False,
    resource_group: Annotated[
        list[str] | None, typer.Option("--resource-group", help="Only events of this resource group (repeatable).")
    ] = None,
    resource: Annotated[
        list[str] | None, typer.Option("--resource", help="Only events of this resource id (repeatable).")
    ] = None,
    max_pages: Annotated[
        int | None, typer.Option("--max-pages", help="Stop after this many pages (recorded as an early stop).")
    ] = None,
    entra: Annotated[
        bool,
        typer.Option(
            "--entra", help="Also pull Entra ID sign-ins and directory audits from Microsoft Graph (AuditLog.Read.All)."
        ),
    ] = False,
    principal: Annotated[
        list[str] | None,
        typer.Option(
            "--principal", help="Entra logs of this user principal name or object id only (repeatable; with --entra)."
        ),
    ] = None,
    flows: Annotated[
        bool,
        typer.Option(
            "--flows",
            help="Pull the NSG and VNet flow logs (Network Watcher configuration, PT1H.json blobs from their storage "
            "accounts; Storage Blob Data Reader) instead of the Activity Log.",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    output: FormatOpt = RowFormat.table,
    resume: ResumeOpt = False,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    graph_endpoint: Annotated[
        str | None,
        typer.Option("--graph-endpoint", help="Microsoft Graph endpoint (default: https://graph.microsoft.com)."),
    ] = None,
    ca_bundle: CaBundleOpt = None,
) -> None:
    """Pull the Azure Activity Log (and with --entra the Entra ID logs, with --flows the flow logs instead) for a
    window into a case, as evidence.

    \b
    Pages are stored as logs/azure/activity/<subscription>/page-00001.json exactly as ARM returned them
    ({"value": [...], "nextLink": ...}) before they are parsed; 429 answers are retried after Retry-After;
    logs/azure/coverage.json says what span was covered, how often Azure throttled, and any early stop,
    per subscription. --subscription is repeatable; --all-subscriptions lists the tenant's subscriptions
    the identity can read (ARM GET /subscriptions, pages kept under artifacts/azure/subscriptions/) and pulls
    each. Without either, [logs.azure] in the configuration file (subscriptions = [...] or
    all_subscriptions = true) decides, then AZURE_SUBSCRIPTION_ID.
    The Activity Log keeps 90 days. With --entra, Microsoft Graph auditLogs/signIns and
    auditLogs/directoryAudits pages go to logs/azure/entra/<tenant>/signins|audits/ the same way
    (Entra keeps them 30 days, 7 on the free tier). With --flows, every Network Watcher flow log of the
    subscription is read (logs/azure/flows/<subscription>/, with its NICs and VMs) and the hourly PT1H.json
    blobs of the window are copied from the storage account, hashed while streaming (logs/azure/flows/blobs/),
    with logs/azure/flows/coverage.json saying which NSGs and VNets had flow logging and from which hour;
    AZURE_STORAGE_ACCESS_TOKEN, when set, is the token for Blob storage.

    --target (a VM's name, resource id or IP, or an Entra principal) narrows the pull to it: the VM's
    Activity Log events (its resource id) and, in the Entra logs, its managed identities; a principal's
    own Entra entries; with --flows, the VM's network.

    \b
    Examples:
      cloudir logs pull azure --case cases/IR-42 --subscription 6f1c2a9e-... --around 2026-05-01T10:00Z --before 3d
      cloudir logs pull azure --target web-vm-01 --subscription 6f1c2a9e-... --around 2026-05-01T10:00Z --entra
      cloudir logs pull azure --case cases/IR-42 --start 2026-05-01T00:00Z --end 2026-05-02T00:00Z \\
          --subscription 6f1c2a9e-... --resource-group rg-prod-web
      cloudir logs pull azure --case cases/IR-42 --subscription 6f1c2a9e-... --around 2026-05-01T10:00Z \\
          --entra --principal jdoe@contoso.example
      cloudir logs pull azure --case cases/IR-42 --all-subscriptions --around 2026-05-01T10:00Z --before 3d
      cloudir logs pull azure --case cases/IR-42 --start ... --end ... --resume   # after throttling stopped it
      cloudir logs pull azure --case cases/IR-42 --subscription 6f1c2a9e-... --around 2026-05-01T10:00Z --flows

    Exit codes: 0 done, 2 bad input / access problem, 3 a pull failed (pages so far are kept; --resume).
    """
    window_start, window_end = resolve_window(start, end, around, before, after)
    if all_subscriptions and subscription:
        raise CloudirError("--all-subscriptions pulls every subscription", hint="drop --subscription, or it")
    defaults = load_config()
    subscriptions = subscription or ([] if all_subscriptions else defaults.azure_log_subscriptions)
    tenant_wide = all_subscriptions or (not subscriptions and defaults.azure_log_all_subscriptions)
    home = subscriptions[0] if subscriptions else os.environ.get("AZURE_SUBSCRIPTION_ID")
    config = _config(home or (TENANT_SCOPE if tenant_wide else None), token, endpoint, ca_bundle, polling_interval=5.0)
    if graph_endpoint:
        config["graph_url"] = graph_endpoint
    if principal and not entra:
        raise CloudirError("--principal filters the Entra logs", hint="add --entra")
    if flows and (entra or resource_group or resource or max_pages):
        raise CloudirError(
            "--flows takes --subscription only", hint="flow logs are read per subscription, not per resource or page"
        )
    request = LogPullRequest(
        start=window_start,
        end=window_end,
        principals=principal or [],
        resources=resource or [],
        extra={
            "entra": entra,
            "flows": flows,
            "subscriptions": subscriptions,
            "all_subscriptions": tenant_wide,
            "resource_groups": resource_group or [],
            **({"max_pages": max_pages} if max_pages else {}),
        },
    )
    query = _query(target, None, None, None) if target else None
    description = f"Azure {'flow log' if flows else 'Activity Log'} pull {window_start} .. {window_end}"
    grammar = Grammar(log_case(case, target) if not dry_run else case, dry_run, resume, fmt=output)
    try:
        pull_logs("azure", config, request, grammar, target=query, description=description)
    finally:
        if grammar.case is not None and not dry_run and flows:
            flow_summary(grammar.case / "logs/azure/flows/coverage.json", output, "Azure flow logs")
        elif grammar.case is not None and not dry_run:
            _coverage_summary(grammar.case, output)


def _coverage_summary(case_dir: Path, output: RowFormat) -> None:
    path = case_dir / "logs/azure/coverage.json"
    if not path.is_file():
        return
    coverage = json.loads(path.read_text(encoding="utf-8"))
    columns = ("source", "location", "scope", "status", "events", "pages", "throttled", "first event", "last event")
    rows = [
        (
            source["source"],
            source["location"],
            source["scope"],
            source["status"],
            source["items"],
            source["details"].get("pages", "-"),
            source["details"].get("throttled", "-"),
            source["first_event"] or "-",
            source["last_event"] or "-",
        )
        for source in coverage["sources"]
    ]
    print_rows(columns, rows, output, title=f"Azure logs {coverage['window_start']} .. {coverage['window_end']}")
    print_warnings(coverage["warnings"], output)
