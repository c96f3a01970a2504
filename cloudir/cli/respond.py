"""``cloudir playbook``, ``cloudir respond``, ``cloudir report`` and ``cloudir iam-policy``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cloudir.cli.apps import app, sub_app
from cloudir.cli.common import console, err_console, print_step_status, render_plan
from cloudir.cli.consoles import say
from cloudir.cli.rows import FormatOpt, RowFormat, print_rows
from cloudir.errors import CloudirError
from cloudir.provider import TargetKind, get_provider
from cloudir.textsafe import esc

if TYPE_CHECKING:
    from cloudir.playbook import Outcome
    from cloudir.triggers import Trigger

playbook_app = sub_app("Response playbooks: list, validate, and print what one would do for a finding.")
app.add_typer(playbook_app, name="playbook")

PlaybooksOpt = Annotated[
    Path | None, typer.Option("--playbooks", help="Folder of playbook YAML files (default: the shipped ones).")
]
TriggerOpt = Annotated[
    Path | None,
    typer.Option(
        "--trigger", help="Finding JSON: GuardDuty, Security Hub (ASFF), Defender for Cloud alert, SCC notification."
    ),
]
ParamOpt = Annotated[
    list[str] | None, typer.Option("--param", help="Override a playbook parameter: KEY=VALUE (YAML value).")
]
PlaybookIdOpt = Annotated[str | None, typer.Option("--playbook", help="Use this playbook id instead of matching.")]
CloudOpt = Annotated[str | None, typer.Option(help="Manual trigger: aws | azure | gcp.")]
InstanceOpt = Annotated[str | None, typer.Option(help="Manual trigger: instance id / VM name / GCE instance name.")]
AccessKeyOpt = Annotated[str | None, typer.Option(help="Manual trigger: AWS access key id.")]
PrincipalOpt = Annotated[str | None, typer.Option(help="Manual trigger: user, role or service account.")]
LocationOpt = Annotated[str | None, typer.Option(help="Manual trigger: region / resource group / zone.")]
AccountOpt = Annotated[str, typer.Option(help="Manual trigger: account / subscription / project.")]
SeverityOpt = Annotated[str, typer.Option(help="Manual trigger severity.")]
AroundOpt = Annotated[
    str | None,
    typer.Option(
        "--around",
        help="Manual trigger: when the activity happened, ISO 8601 with an offset (2026-05-01T10:00Z) or a time ago "
        "(-6h, -2d, resolved to the second when the command runs, so the same command later is another response); "
        "it sets the log window and the analysis's incident window (default: now).",
    ),
]


def _params(values: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` overrides, typed as the playbook parameter they set (strings stay strings)."""
    import yaml

    from cloudir.playbook.model import PARAMETERS

    params: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CloudirError(f"--param {item!r}: expected KEY=VALUE")
        if key not in PARAMETERS:
            raise CloudirError(f"--param {key}: unknown parameter", hint=f"known: {', '.join(sorted(PARAMETERS))}")
        if str in PARAMETERS[key] and value not in {"", "null"}:
            params[key] = value
            continue
        parsed = yaml.safe_load(value) if value else None
        if not isinstance(parsed, PARAMETERS[key]) or (isinstance(parsed, bool) and bool not in PARAMETERS[key]):
            raise CloudirError(f"--param {key}: {value!r} is not a valid value")
        params[key] = parsed
    return params


def _triggers(
    trigger: Path | None,
    *,
    cloud: str | None,
    instance: str | None,
    access_key: str | None,
    principal: str | None,
    location: str | None,
    account: str,
    severity: str,
    around: str | None = None,
) -> list[Trigger]:
    from cloudir.triggers import load_triggers, manual_trigger

    named = [
        (k, v)
        for k, v in (
            (TargetKind.INSTANCE, instance),
            (TargetKind.ACCESS_KEY, access_key),
            (TargetKind.PRINCIPAL, principal),
        )
        if v
    ]
    if trigger is not None:
        if named:
            raise CloudirError("pass either --trigger or a manual target (--instance/--access-key/--principal)")
        if around is not None:
            raise CloudirError("--around is for a manual trigger: a finding carries its own time")
        return load_triggers(trigger)
    if len(named) != 1:
        raise CloudirError(
            "name what to respond to",
            hint="pass --trigger FINDING.json, or one of --instance, --access-key, --principal with --cloud",
        )
    if cloud is None:
        raise CloudirError("a manual trigger needs --cloud aws|azure|gcp")
    kind, value = named[0]
    return [
        manual_trigger(cloud, kind, str(value), location=location, account=account, severity=severity, around=around)
    ]


@playbook_app.command("list")
def list_playbooks(playbooks: PlaybooksOpt = None, output: FormatOpt = RowFormat.table) -> None:
    """List the available playbooks and what each applies to."""
    from cloudir.playbook import load_playbooks

    rows = []
    for book in load_playbooks(playbooks):
        match = book.match
        scope = " ".join(
            part
            for part in (
                "/".join(match.clouds) or "any cloud",
                "/".join(match.target_kinds) or "any target",
                f">= {match.condition.min_severity}" if match.condition.min_severity else "",
            )
            if part
        )
        has_contain = any(s.action == "contain" for s in book.steps)
        approval = "needs approval" if book.containment_requires_approval else "automatic"
        steps = " → ".join(s.id for s in book.steps)
        rows.append([book.id, book.title, book.priority, scope, steps, approval if has_contain else "never"])
    print_rows(["id", "title", "priority", "applies to", "steps", "containment"], rows, output, title="Playbooks")


@playbook_app.command("validate")
def validate_playbooks(
    paths: Annotated[list[Path] | None, typer.Argument(help="Playbook files (default: every playbook).")] = None,
    playbooks: PlaybooksOpt = None,
) -> None:
    """Validate playbooks; errors name the file, the step and the field."""
    from cloudir.playbook import load_playbook, load_playbooks

    books = [load_playbook(path) for path in paths] if paths else load_playbooks(playbooks)
    for book in books:
        console.print(f"[green]valid[/] {esc(book.path)}: {esc(book.id)} ({len(book.steps)} steps)", soft_wrap=True)


@playbook_app.command("plan")
def plan_playbook(  # noqa: PLR0917 - typer options are parameters
    trigger: TriggerOpt = None,
    cloud: CloudOpt = None,
    instance: InstanceOpt = None,
    access_key: AccessKeyOpt = None,
    principal: PrincipalOpt = None,
    location: LocationOpt = None,
    account: AccountOpt = "",
    severity: SeverityOpt = "high",
    playbook: PlaybookIdOpt = None,
    playbooks: PlaybooksOpt = None,
    param: ParamOpt = None,
    around: AroundOpt = None,
    resolve: Annotated[
        bool,
        typer.Option(
            help="Resolve the target (read-only describe calls) to list the exact API calls; without it no "
            "cloud call is made and the target's unknown details are shown as <placeholders>."
        ),
    ] = False,
    output: FormatOpt = RowFormat.table,
) -> None:
    """Print every step a playbook would run for a finding, and each API call, without changing anything."""
    from cloudir.ops.respond import RespondRequest, plan_response
    from cloudir.playbook import load_playbooks

    found = _triggers(
        trigger,
        cloud=cloud,
        instance=instance,
        access_key=access_key,
        principal=principal,
        location=location,
        account=account,
        severity=severity,
        around=around,
    )
    request = RespondRequest(found, load_playbooks(playbooks), playbook_id=playbook, params=_params(param))
    out = console if output is RowFormat.table else err_console
    for planned in plan_response(request, resolve=resolve):
        item = planned.trigger
        say(
            out,
            f"[bold]{esc(item.source)}[/] finding {esc(item.finding_id)} ({esc(item.finding_type)}, "
            f"{esc(item.severity)}) at {esc(item.time)} on {esc(item.cloud)} {item.target.kind.value} "
            f"{esc(item.target.value)} → playbook [bold]{esc(planned.playbook.id)}[/]",
        )
        render_plan(planned.response.plan, output)


def _report_outcome(outcome: Outcome) -> None:
    style = {"completed": "green", "awaiting-approval": "yellow", "duplicate": "cyan", "in-progress": "cyan"}.get(
        outcome.status, "yellow"
    )
    if outcome.status == "failed":
        style = "bold red"
    console.print(f"[{style}]{esc(outcome.status)}[/] {esc(outcome.message)}", soft_wrap=True)


@app.command("respond")
def respond_command(  # noqa: PLR0917 - typer options are parameters
    trigger: TriggerOpt = None,
    case: Annotated[Path | None, typer.Option("--case", help="Case folder (default: ./cases/<finding id>).")] = None,
    approve_containment: Annotated[
        bool, typer.Option(help="Approve containment up front (playbooks that require approval).")
    ] = False,
    approve: Annotated[
        bool, typer.Option("--approve", help="Run the containment awaiting approval in --case.")
    ] = False,
    resume: Annotated[bool, typer.Option(help="Continue a response that stopped at a failed step.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the plan (no cloud call) and change nothing.")] = False,
    output: FormatOpt = RowFormat.table,
    cloud: CloudOpt = None,
    instance: InstanceOpt = None,
    access_key: AccessKeyOpt = None,
    principal: PrincipalOpt = None,
    location: LocationOpt = None,
    account: AccountOpt = "",
    severity: SeverityOpt = "high",
    playbook: PlaybookIdOpt = None,
    playbooks: PlaybooksOpt = None,
    param: ParamOpt = None,
    around: AroundOpt = None,
) -> None:
    """Run the matching playbook for a finding: preserve, collect, analyze, contain (with approval), report.

    A second delivery of the same finding id does nothing new. Examples:
    cloudir respond --trigger finding.json --case ./case-1;
    cloudir respond --case ./case-1 --approve
    """
    from cloudir import ops
    from cloudir.ops.respond import RespondRequest, check_case_folder, respond_all
    from cloudir.ops.respond import approve as approve_held
    from cloudir.playbook import load_playbooks

    books = load_playbooks(playbooks)
    progress = ops.Progress(console=err_console, observer=print_step_status)
    if approve:
        if case is None:
            raise CloudirError("--approve needs --case DIR")
        outcomes = approve_held(case, books, progress)
        for outcome in outcomes:
            _report_outcome(outcome)
        _exit_for(outcomes)
        return
    params = _params(param)
    found = _triggers(
        trigger,
        cloud=cloud,
        instance=instance,
        access_key=access_key,
        principal=principal,
        location=location,
        account=account,
        severity=severity,
        around=around,
    )
    check_case_folder(found, case)
    if dry_run:
        plan_playbook(
            trigger,
            cloud,
            instance,
            access_key,
            principal,
            location,
            account,
            severity,
            playbook,
            playbooks,
            param,
            around,
            resolve=False,
            output=output,
        )
        return
    request = RespondRequest(
        found, books, case_dir=case, playbook_id=playbook, approve=approve_containment, resume=resume, params=params
    )
    _exit_for(respond_all(request, progress, on_outcome=lambda _trigger, outcome: _report_outcome(outcome)))


def _exit_for(outcomes: list[Outcome]) -> None:
    if any(outcome.status == "failed" for outcome in outcomes):
        raise typer.Exit(3)


class ReportFormat(StrEnum):
    """Report formats."""

    html = "html"
    md = "md"
    json = "json"


class NoticeRegime(StrEnum):
    """Notification regimes with a draft notice."""

    ccspa = "ccspa"
    gdpr = "gdpr"
    nis2 = "nis2"
    sec = "sec"


@app.command("report")
def report_command(
    case_dir: Annotated[Path, typer.Argument(help="Case folder.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Output file (default: CASE_DIR/reports/report.<format>); inside the case only reports/."),
    ] = None,
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="html: full report; md/json: incident summary.")
    ] = ReportFormat.html,
    notice: Annotated[
        list[NoticeRegime] | None,
        typer.Option(
            help="Also draft the incident notice for this regime (repeatable): notice-<regime>.md beside the "
            "report, and a section of the HTML report, with the regime's deadlines from the detection time."
        ),
    ] = None,
    contact: Annotated[str | None, typer.Option(help="Contact named in the notices.")] = None,
) -> None:
    """Write the investigation report (one self-contained HTML file) or the incident summary (md/json)."""
    from cloudir.ops.investigate import ReportRequest, report
    from cloudir.report import notice_path

    regimes = tuple(dict.fromkeys(r.value for r in notice or []))
    path = report(ReportRequest(case_dir, out, fmt.value, regimes, contact))
    console.print(f"[green]report written[/] {esc(path)}", soft_wrap=True)
    for regime in regimes:
        console.print(f"[green]draft {regime} notice written[/] {esc(notice_path(path, regime))}", soft_wrap=True)


class PolicyCloud(StrEnum):
    """Clouds with a least-privilege policy."""

    aws = "aws"
    azure = "azure"
    gcp = "gcp"


# Enough configuration to build each provider without credentials or network (placeholders, never used).
_OFFLINE_CONFIG: dict[str, dict[str, Any]] = {
    "aws": {"region": "us-east-1"},
    "azure": {"subscription_id": "00000000-0000-0000-0000-000000000000"},
    "gcp": {"project": "cloudir-policy", "anonymous": True},
}


@app.command("iam-policy")
def iam_policy(
    cloud: Annotated[
        PolicyCloud,
        typer.Argument(
            help="aws: IAM policy; azure: role definitions and assignments; gcp: custom roles and bindings."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Print each statement / role / grant, why it exists and its scope, not the JSON."
        ),
    ] = False,
    output: FormatOpt = RowFormat.table,
) -> None:
    """Print the least-privilege permissions for cloudir, generated from what the provider declares.

    Needs no cloud credentials. Example: cloudir iam-policy aws > cloudir-policy.json
    (docs/permissions.md explains the scoping of each cloud.)
    """
    from cloudir.serverless.policy import least_privilege_policy

    provider = get_provider(cloud.value, **_OFFLINE_CONFIG[cloud.value])
    if explain:
        _explain_policy(cloud.value, provider.required_permissions(), output)
        return
    text = json.dumps(least_privilege_policy(cloud.value, provider.required_permissions()), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"written {esc(out)}", soft_wrap=True)


def _explain_policy(cloud: str, permissions: list[str], output: RowFormat) -> None:
    """One row per statement / role / grant (``--explain``), its permissions space-separated and its scope and
    conditions separated by ``; ``."""
    from cloudir.serverless.policy import explain_policy

    rows = [
        (name, effect, why, " ".join(actions), "; ".join(scope))
        for name, effect, why, actions, scope in explain_policy(cloud, permissions)
    ]
    columns = ("grant", "effect", "why", "permissions", "scope and conditions")
    print_rows(columns, rows, output, title=f"cloudir iam-policy {cloud}")
