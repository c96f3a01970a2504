"""Options, case handling, console output and plan execution shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloudir.case import CASE_FILE, Case
from cloudir.errors import CloudirError
from cloudir.plan import Plan, RunResult, Step, StepKind, require_completed, run_plan
from cloudir.provider import LogPullRequest, Provider, Target, TargetQuery
from cloudir.textsafe import esc, text_console

CaseOpt = Annotated[
    Path | None, typer.Option("--case", help="Case folder (default: ./cases/<target>).", show_default=False)
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in the same --case.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print every API call the plan would make; change nothing.")]
ExaminerCidrOpt = Annotated[
    str | None, typer.Option("--examiner-cidr", help="Still allow traffic from this CIDR (e.g. 198.51.100.7/32).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Contain even without a completed acquisition in the case (logged).")
]
PullCaseOpt = Annotated[Path, typer.Option("--case", help="Case folder (created when missing).")]
StartOpt = Annotated[str | None, typer.Option(help="Window start, ISO 8601 UTC.")]
EndOpt = Annotated[str | None, typer.Option(help="Window end, ISO 8601 UTC.")]
AroundOpt = Annotated[str | None, typer.Option(help="Trigger time to build the window around.")]
BeforeOpt = Annotated[str, typer.Option(help="With --around: how far back (e.g. 24h, 3d).")]
AfterOpt = Annotated[str, typer.Option(help="With --around: how far forward.")]

console = text_console()
err_console = text_console(stderr=True)

_STATUS_STYLE = {
    "running": "cyan",
    "done": "green",
    "resumed": "dim green",
    "failed": "bold red",
    "blocked": "yellow",
}
_KIND_STYLE = {StepKind.READ: "blue", StepKind.PRESERVE: "green", StepKind.ACQUIRE: "cyan", StepKind.CONTAIN: "red"}


def render_plan(plan: Plan, *, out: Console | None = None) -> None:
    """Print every step of a plan and each API call it would make (the dry-run output)."""
    out = out or console
    table = Table(title=esc(f"Plan: {plan.name} {plan.cloud} {plan.target}"), show_lines=True, expand=True)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("kind")
    table.add_column("API calls", overflow="fold")
    for index, step in enumerate(plan.steps, start=1):
        calls = "\n".join(esc(call.describe()) for call in step.calls) or "-"
        style = _KIND_STYLE[step.kind]
        table.add_row(str(index), esc(step.title), f"[{style}]{step.kind}[/]", calls)
    out.print(table)
    for note in plan.notes:
        out.print(f"[yellow]note:[/] {esc(note)}", soft_wrap=True)
    out.print("[bold]dry run:[/] nothing was changed.")


def print_step_status(step: Step, status: str) -> None:
    """A live status line on stderr for each finished, resumed, failed or blocked step."""
    if status == "running":
        return
    style = _STATUS_STYLE.get(status, "white")
    err_console.print(f"[{style}]{status:>8}[/] {esc(step.title)}")


def execute_plan(plan: Plan, case: Case) -> RunResult:
    """Run a plan with live step status lines on stderr."""
    result = run_plan(plan, case, console=err_console, observer=print_step_status)
    err_console.print(
        f"[green]{esc(plan.name)} complete[/] case {esc(case.case_id)} at {esc(case.root)} "
        f"(custody head {case.custody.head[:16]}…, {case.custody.length} records)"
    )
    return result


def case_path(value: Path | None, default_name: str) -> Path:
    """The case folder to use: the given one or ``./cases/<default_name>``."""
    return value if value is not None else Path("cases") / default_name


def show_dry_run(provider: Provider, plan: Callable[[], Plan]) -> None:
    """Print the plan ``plan()`` builds with ``provider`` recording nothing (--dry-run)."""
    provider.bind(None)
    render_plan(plan())


def refuse_repeat(case: Case, plan: Plan, resume: bool) -> None:
    """Refuse to run ``plan`` again in ``case`` unless the responder said --resume."""
    if plan.key in case.load_state().get("runs", {}) and not resume:
        raise CloudirError(
            f"this {plan.name} plan already ran in {case.root}", hint="add --resume to continue or repeat it"
        )


def open_case(
    provider: Provider, root: Path, *, resume: bool, repeat_of: Plan | None = None, description: str = ""
) -> Case:
    """Open or create the case at ``root`` for an acquisition or log pull and bind ``provider`` to it.

    An existing case needs --resume; with ``repeat_of`` (a log pull) only a repeat of that plan does.
    """
    if repeat_of is not None and (root / CASE_FILE).exists():
        case = Case.open(root)
        refuse_repeat(case, repeat_of, resume)
    else:
        case = Case.open_or_create(root, resume=resume, description=description)
    provider.bind(case)
    return case


def pull_logs(
    provider: Provider,
    request: LogPullRequest,
    case_dir: Path,
    *,
    dry_run: bool,
    resume: bool,
    description: str,
    summary: Callable[[Case], None],
) -> None:
    """Print (--dry-run) or run a log pull into ``case_dir``, then print ``summary`` of what it covered."""
    plan = provider.plan_pull_logs(request)
    if dry_run:
        render_plan(plan)
        return
    case = open_case(provider, case_dir, resume=resume, repeat_of=plan, description=description)
    try:
        execute_plan(plan, case)
    finally:
        summary(case)


def open_containment_case(provider: Provider, root: Path, *, cloud: str, force: bool, what: str = "the target") -> Case:
    """Open the case holding the acquisition of what is to be contained (a new one only with --force); bind to it."""
    if (root / CASE_FILE).exists():
        case = Case.open(root)
    elif force:
        case = Case.create(root)
    else:
        raise CloudirError(
            f"no case at {root}", hint=f"acquire {what} into a case first (cloudir acquire {cloud}), or pass --force"
        )
    provider.bind(case)
    return case


def resolve_target(provider: Provider, query: TargetQuery, case: Case) -> Target:
    """Resolve the target, recording what it resolved to in the case's custody log."""
    with case.action("target.resolve", target=query.value) as act:
        target = provider.find_target(query)
        act.details |= {"ref": target.ref, "kind": target.kind.value, "name": target.name, **target.details}
    return target


def resolve_acquired_target(provider: Provider, query: TargetQuery, case: Case, *, force: bool) -> Target:
    """Resolve the target to contain; refuse unless the case holds its completed acquisition (or --force)."""
    target = resolve_target(provider, query, case)
    require_completed(case, "acquire", target.ref, force=force)
    return target
