"""`cloudir acquire azure`, `cloudir contain azure` and `cloudir logs pull azure`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cloudir.case import Case, safe_name
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
    PullCaseOpt,
    ResumeOpt,
    StartOpt,
    case_path,
    console,
    execute_plan,
    open_case,
    open_containment_case,
    pull_logs,
    refuse_repeat,
    resolve_acquired_target,
    resolve_target,
    show_dry_run,
)
from cloudir.errors import CloudirError
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

TargetArg = Annotated[str, typer.Argument(help="The VM: its name, its ARM resource id, or a private or public IP.")]
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


def _provider(
    subscription: str | None,
    token: str | None,
    endpoint: str | None,
    ca_bundle: Path | None,
    *,
    polling_interval: float,
    soc_subscription: str | None = None,
    soc_resource_group: str | None = None,
) -> Provider:
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
    return get_provider("azure", **config)


@acquire_app.command("azure")
def acquire_azure(  # noqa: PLR0917 - one parameter per CLI option
    target: TargetArg,
    subscription: SubscriptionOpt = None,
    resource_group: GroupOpt = None,
    case: CaseOpt = None,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    soc_subscription: Annotated[
        str | None, typer.Option("--soc-subscription", help="Subscription to copy every snapshot into.")
    ] = None,
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
) -> None:
    """Preserve an Azure VM and acquire its evidence into a case folder.

    \b
    In order:
      1. capture: VM, disks, NICs, NSGs, public IPs, scale set, tags, disk encryption settings
         -> artifacts/azure/<resource group>/<vm>/metadata/
      2. preserve: a CanNotDelete lock on the VM and every disk; protectFromScaleIn on a scale set member
      3. snapshot the OS disk and every data disk (full copies), tagged cloudir-case-id (a re-run reuses them)
      4. optional: copy into --soc-subscription / --copy-region; --raw-image streams each snapshot as a VHD
         through a read-only SAS, hashing it, then revokes the SAS
    Every ARM call and artifact SHA-256 goes into custody.jsonl; check it with `cloudir verify`.

    \b
    Examples:
      cloudir acquire azure web-vm-01 --subscription 6f1c2a9e-... --dry-run
      cloudir acquire azure 10.0.1.4 --subscription 6f1c2a9e-... --case cases/IR-42
      cloudir acquire azure /subscriptions/.../virtualMachines/web-vm-01 --soc-subscription 9a8b7c6d-... --raw-image
      cloudir acquire azure web-vm-01 --subscription 6f1c2a9e-... --case cases/IR-42 --resume   # after a failure

    Exit codes: 0 done, 2 bad input / access problem, 3 a step failed (fix it, re-run with --resume).
    """
    provider = _provider(
        subscription,
        token,
        endpoint,
        ca_bundle,
        polling_interval=polling_interval,
        soc_subscription=soc_subscription,
        soc_resource_group=soc_resource_group,
    )
    query = TargetQuery(TargetKind.INSTANCE, target.strip(), resource_group)
    options = AcquireOptions(
        forensic_account=soc_subscription,
        forensic_location=copy_region,
        encryption_key=disk_encryption_set,
        raw_image=raw_image,
    )
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_acquire(provider.find_target(query), options))
        return
    the_case = open_case(provider, case_path(case, safe_name(target.rsplit("/", 1)[-1])), resume=resume)
    resolved = resolve_target(provider, query, the_case)
    execute_plan(provider.plan_acquire(resolved, options), the_case)


@contain_app.command("azure")
def contain_azure(  # noqa: PLR0917 - one parameter per CLI option
    target: TargetArg,
    subscription: SubscriptionOpt = None,
    resource_group: GroupOpt = None,
    case: CaseOpt = None,
    examiner_cidr: ExaminerCidrOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    dry_run: DryRunOpt = False,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    ca_bundle: CaBundleOpt = None,
    polling_interval: PollOpt = 5.0,
) -> None:
    """Isolate an Azure VM after acquisition (refused until `cloudir acquire azure` completed in the case, or --force).

    \b
    What it does:
      - creates NSG cloudir-isolate-<vm>: deny all inbound and outbound traffic (priority 4096),
        allowing only --examiner-cidr (priority 100)
      - attaches it to every NIC of the VM (the NIC as it was is saved first under containment/)
    Not done, and said so: revoking Entra sign-in sessions or tokens is not possible through ARM;
    revoke them in Entra ID (Microsoft Graph revokeSignInSessions) and remove role assignments yourself.

    \b
    Examples:
      cloudir contain azure web-vm-01 --subscription 6f1c2a9e-... --case cases/IR-42 --dry-run
      cloudir contain azure web-vm-01 --subscription 6f1c2a9e-... --case cases/IR-42 --examiner-cidr 198.51.100.7/32
      cloudir contain azure 10.0.1.4 --subscription 6f1c2a9e-... --force   # no acquisition first: only when you must

    Exit codes: 0 done, 2 refused / bad input / access problem, 3 a step failed (re-run with --resume).
    """
    provider = _provider(subscription, token, endpoint, ca_bundle, polling_interval=polling_interval)
    query = TargetQuery(TargetKind.INSTANCE, target.strip(), resource_group)
    options = ContainOptions(examiner_cidr=examiner_cidr, revoke_credentials=True)
    if dry_run:
        show_dry_run(provider, lambda: provider.plan_contain(provider.find_target(query), options))
        return
    root = case_path(case, safe_name(target.rsplit("/", 1)[-1]))
    the_case = open_containment_case(provider, root, cloud="azure", force=force, what="the VM")
    resolved = resolve_acquired_target(provider, query, the_case, force=force)
    plan = provider.plan_contain(resolved, options)
    refuse_repeat(the_case, plan, resume)
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {esc(note)}", soft_wrap=True)
    execute_plan(plan, the_case)
    console.print(f"[green]contained[/] {esc(resolved.ref)}", soft_wrap=True)


@pull_app.command("azure")
def pull_azure(  # noqa: PLR0917 - one parameter per CLI option
    case_dir: PullCaseOpt,
    start: StartOpt = None,
    end: EndOpt = None,
    around: AroundOpt = None,
    before: BeforeOpt = "24h",
    after: AfterOpt = "6h",
    subscription: Annotated[
        list[str] | None,
        typer.Option("--subscription", help="Subscription to pull (repeatable; default: AZURE_SUBSCRIPTION_ID)."),
    ] = None,
    resource_group: Annotated[
        list[str] | None, typer.Option("--resource-group", help="Only events of this resource group (repeatable).")
    ] = None,
    resource: Annotated[
        list[str] | None, typer.Option("--resource", help="Only events of this resource id (repeatable).")
    ] = None,
    max_pages: Annotated[
        int | None, typer.Option("--max-pages", help="Stop after this many pages (recorded as an early stop).")
    ] = None,
    dry_run: DryRunOpt = False,
    resume: ResumeOpt = False,
    token: TokenOpt = None,
    endpoint: EndpointOpt = None,
    ca_bundle: CaBundleOpt = None,
) -> None:
    """Pull the Azure Activity Log for a window and scope into a case; every raw page is kept as evidence.

    \b
    Pages are stored as logs/azure/activity/<subscription>/page-00001.json exactly as ARM returned them
    ({"value": [...], "nextLink": ...}) before they are parsed; 429 answers are retried after Retry-After;
    logs/azure/coverage.json says what span was covered, how often Azure throttled, and any early stop.
    The Activity Log keeps 90 days.

    \b
    Examples:
      cloudir logs pull azure --case cases/IR-42 --subscription 6f1c2a9e-... --around 2026-05-01T10:00Z --before 3d
      cloudir logs pull azure --case cases/IR-42 --start 2026-05-01T00:00Z --end 2026-05-02T00:00Z \\
          --subscription 6f1c2a9e-... --resource-group rg-prod-web
      cloudir logs pull azure --case cases/IR-42 --start ... --end ... --resume   # after throttling stopped it

    Exit codes: 0 done, 2 bad input / access problem, 3 a pull failed (pages so far are kept; --resume).
    """
    window_start, window_end = resolve_window(start, end, around, before, after)
    subscriptions = subscription or []
    provider = _provider(subscriptions[0] if subscriptions else None, token, endpoint, ca_bundle, polling_interval=5.0)
    request = LogPullRequest(
        start=window_start,
        end=window_end,
        resources=resource or [],
        extra={
            "subscriptions": subscriptions,
            "resource_groups": resource_group or [],
            **({"max_pages": max_pages} if max_pages else {}),
        },
    )
    description = f"Azure Activity Log pull {window_start} .. {window_end}"
    pull_logs(
        provider, request, case_dir, dry_run=dry_run, resume=resume, description=description, summary=_coverage_summary
    )


def _coverage_summary(case: Case) -> None:
    path = case.root / "logs/azure/coverage.json"
    if not path.is_file():
        return
    coverage = json.loads(path.read_text(encoding="utf-8"))
    table = Table(title=esc(f"Activity Log {coverage['window_start']} .. {coverage['window_end']}"), expand=True)
    for column in ("subscription", "scope", "status", "events", "pages", "throttled", "first event", "last event"):
        table.add_column(column)
    for source in coverage["sources"]:
        details = source["details"]
        table.add_row(
            *map(
                esc,
                (
                    source["location"],
                    source["scope"],
                    source["status"],
                    source["items"],
                    details.get("pages", "-"),
                    details.get("throttled", "-"),
                    source["first_event"] or "-",
                    source["last_event"] or "-",
                ),
            )
        )
    console.print(table)
    for warning in coverage["warnings"]:
        console.print(f"[yellow]warning:[/] {esc(warning)}", soft_wrap=True)
