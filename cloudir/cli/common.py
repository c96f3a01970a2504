"""Options, case handling, console output and plan execution shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from cloudir import ops
from cloudir.case import Case, add_notice_listener
from cloudir.cli.consoles import console as console  # noqa: PLC0414 - re-exported for the commands
from cloudir.cli.consoles import err_console as err_console  # noqa: PLC0414 - re-exported for the commands
from cloudir.cli.consoles import say
from cloudir.cli.rows import RowFormat, print_rows
from cloudir.cli.steps import StepLines
from cloudir.config import load_config
from cloudir.errors import CloudirError
from cloudir.ops import Progress, RunReport
from cloudir.plan import Plan
from cloudir.progress import ProgressCallback
from cloudir.provider import (
    AcquireOptions,
    ContainOptions,
    CustodyCopy,
    EvidenceMirroring,
    LogPullRequest,
    Provider,
    TargetQuery,
    get_provider,
)
from cloudir.safepath import id_folder
from cloudir.textsafe import esc

# -- the grammar: `cloudir acquire|contain|logs pull <cloud> --target --case --dry-run --resume --format ...`, each
# option declared here once and used by every cloud's command (tests/cli/test_grammar.py checks that none drifts);
# per-cloud options (scope, credentials, extras) stay in cli/aws.py, aws_logs.py, azure.py and gcp.py
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="What to act on: an instance by id, name or IP, or a principal or key (this cloud's kinds: see below).",
        show_default=False,
    ),
]
LogTargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="Narrow the pull to this target's identities and resources (resolved with credentials, else as given; "
        "the plan says which).",
        show_default=False,
    ),
]
CaseOpt = Annotated[
    Path | None,
    typer.Option(
        "--case", help="Case folder, created when missing (default: ./cases/<target>-<hash>).", show_default=False
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option("--resume", help="Continue a failed or interrupted run in the same --case (done steps are kept)."),
]
ForensicOpt = Annotated[
    str | None,
    typer.Option(
        "--forensic",
        help="Forensic account / subscription / project receiving evidence copies (default: config [forensic]).",
        show_default=False,
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print every API call the plan would make; change nothing.")]
ExaminerCidrOpt = Annotated[
    str | None, typer.Option("--examiner-cidr", help="Still allow traffic from this CIDR (e.g. 198.51.100.7/32).")
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Contain even without a completed acquisition in the case (logged).")
]


def hidden(name: str) -> Any:
    """An older spelling of an option, still accepted and not shown in --help."""
    return typer.Option(name, hidden=True, show_default=False)


StartOpt = Annotated[str | None, typer.Option("--start", help="Window start, ISO 8601 UTC.")]
EndOpt = Annotated[str | None, typer.Option("--end", help="Window end, ISO 8601 UTC.")]
AroundOpt = Annotated[str | None, typer.Option("--around", help="Trigger time to build the window around.")]
BeforeOpt = Annotated[str, typer.Option("--before", help="With --around: how far back (e.g. 24h, 3d).")]
AfterOpt = Annotated[str, typer.Option("--after", help="With --around: how far forward.")]


def _print_notice(message: str) -> None:
    err_console.print(Text(message, style="dim"), soft_wrap=True)


add_notice_listener(_print_notice)


def _plan_rows(plan: Plan) -> list[list[Any]]:
    """One row per API call of each step (a step that makes none: one row with no call), with the numbers of the
    steps it runs alongside."""
    numbers = {step.id: index for index, step in enumerate(plan.steps, start=1)}
    concurrent = plan.alongside()
    rows: list[list[Any]] = []
    for index, step in enumerate(plan.steps, start=1):
        calls = [call.describe() for call in step.calls] or [""]
        others = ",".join(str(numbers[other]) for other in concurrent[step.id])
        rows += [[index, step.title, step.kind.value, others, call] for call in calls]
    return rows


def render_plan(plan: Plan, fmt: RowFormat = RowFormat.table, *, out: Console | None = None) -> None:
    """Print every step of a plan and each API call it would make (the dry-run output), in ``fmt``.

    The notes and the closing line go to stdout (or ``out``) under a table, and to stderr under json/jsonl/csv/md
    so that stdout stays one document.
    """
    title = f"Plan: {plan.name} {plan.cloud} {plan.target}"
    print_rows(["step", "title", "kind", "alongside", "api_call"], _plan_rows(plan), fmt, title=title, out=out)
    out = (out or console) if fmt is RowFormat.table else err_console
    for note in plan.notes:
        say(out, f"[yellow]note:[/] {esc(note)}")
    out.print("[bold]dry run:[/] nothing was changed.")


def print_warnings(warnings: list[str], fmt: RowFormat) -> None:
    """Warnings after a table of rows: on stdout under a table, on stderr under json/jsonl/csv/md."""
    out = console if fmt is RowFormat.table else err_console
    for warning in warnings:
        say(out, f"[yellow]warning:[/] {esc(warning)}")


print_step_status = StepLines(err_console)  # the CLI's plan observer: step status lines on stderr


@contextmanager
def progress_bar(label: str) -> Iterator[ProgressCallback | None]:
    """A bar on stderr for long work (bytes done of all) when stderr is a terminal; nothing when it is piped."""
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (TextColumn(esc(label)), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with Bar(*columns, console=err_console) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def progress() -> Progress:
    """Live step status lines on stderr."""
    return Progress(console=err_console, observer=print_step_status)


def print_run(report: RunReport) -> None:
    """The plan's notes and the closing line of a run: the case and its custody head."""
    case = report.case
    for note in report.run.plan.notes:
        err_console.print(f"[yellow]note:[/] {esc(note)}", soft_wrap=True)
    err_console.print(
        f"[green]{esc(report.run.plan.name)} complete[/] case {esc(case.case_id)} at {esc(case.root)} "
        f"(custody head {case.custody.head}, {case.custody.length} records)"
    )


_held_cases: list[ExitStack] = []


@contextmanager
def command_scope() -> Iterator[None]:
    """The span of one command: every case it holds is closed (lock released, head announced) at its end."""
    with ExitStack() as stack:
        _held_cases.append(stack)
        try:
            yield
        finally:
            _held_cases.remove(stack)


def held(case: Case) -> Case:
    """Keep ``case`` (and its lock) for the rest of the running command; it is closed when the command ends."""
    return _held_cases[-1].enter_context(case)


def hold(case: Case) -> None:
    """Case hook for ``cloudir.ops`` requests: hold the opened case (sealed, head announced) until the command ends."""
    held(case)


def case_path(value: Path | None, target: str) -> Path:
    """The case folder to use: the given one or ``./cases/<escaped target>-<short hash>`` (distinct per target)."""
    return value if value is not None else Path("cases") / id_folder(target)


def one_target(given: str | None, **aliases: str | None) -> str:
    """The target named by ``--target`` or by one of the older option names kept as hidden aliases."""
    values = [value.strip() for value in (given, *aliases.values()) if value and value.strip()]
    if len(values) != 1:
        raise CloudirError("name exactly one target", hint="pass --target ID, NAME or IP")
    return values[0]


def forensic_destination(cloud: str, *given: str | None, source: str | None = None) -> str | None:
    """The forensic account / subscription / project: the option, else the configuration's ``[forensic]`` for
    evidence from ``source`` (the target's account / subscription / project, when known)."""
    return next((value for value in given if value), None) or load_config().forensic_for(cloud, source)


@dataclass(frozen=True)
class Mirror:
    """Where an adapter that mirrors evidence (``EvidenceMirroring``) copies the case; None: an earlier run's."""

    bucket: str | None = None
    mode: str | None = None
    days: int | None = None


class _Mirrors:
    """The case's evidence mirror, attached once the case is open (when the adapter has one); custody at the end."""

    def __init__(self, provider: Provider, mirror: Mirror) -> None:
        self._provider, self._mirror = provider, mirror
        self._attached: list[tuple[CustodyCopy, Case]] = []

    def attach(self, case: Case) -> None:
        hold(case)
        if not isinstance(self._provider, EvidenceMirroring):
            return
        mirror = self._provider.attach_evidence_mirror(
            case, self._mirror.bucket, retention_mode=self._mirror.mode, retain_days=self._mirror.days
        )
        if mirror is not None:
            self._attached.append((mirror, case))

    def upload_custody(self) -> None:
        for mirror, case in self._attached:
            mirror.upload_custody(case)


@dataclass(frozen=True)
class Grammar:
    """The options every ``acquire|contain <cloud>`` command shares: ``--case --dry-run --resume [--force]`` and
    ``--format`` (of the dry run's plan)."""

    case: Path | None
    dry_run: bool
    resume: bool
    force: bool = False
    fmt: RowFormat = RowFormat.table


def acquire_target(
    cloud: str,
    config: dict[str, Any],
    query: TargetQuery,
    options: AcquireOptions,
    grammar: Grammar,
    *,
    mirror: Mirror | None = None,
) -> None:
    """``cloudir acquire <cloud>``: print the plan (``--dry-run``) or run :func:`cloudir.ops.acquire`."""
    if grammar.dry_run:
        render_plan(ops.dry_run_acquire(cloud, config, query, options), grammar.fmt)
        return
    provider = get_provider(cloud, **config)
    mirrors = _Mirrors(provider, mirror or Mirror())
    root = case_path(grammar.case, query.value)
    try:
        request = ops.AcquireRequest(query, root, options, resume=grammar.resume, on_case=mirrors.attach)
        print_run(ops.acquire(provider, request, progress()))
    finally:
        mirrors.upload_custody()


def contain_target(
    cloud: str, config: dict[str, Any], query: TargetQuery, options: ContainOptions, grammar: Grammar
) -> None:
    """``cloudir contain <cloud>``: print the plan (``--dry-run``) or run :func:`cloudir.ops.contain`."""
    if grammar.dry_run:
        render_plan(ops.dry_run_contain(cloud, config, query, options), grammar.fmt)
        return
    provider = get_provider(cloud, **config)
    mirrors = _Mirrors(provider, Mirror())
    root = case_path(grammar.case, query.value)
    try:
        request = ops.ContainRequest(
            query, root, options, resume=grammar.resume, force=grammar.force, on_case=mirrors.attach
        )
        report = ops.contain(provider, request, progress())
    finally:
        mirrors.upload_custody()
    print_run(report)
    console.print(f"[green]contained[/] {esc(report.target.ref)}", soft_wrap=True)


def log_case(case: Path | None, target: str | None) -> Path:
    """The case folder of a log pull: ``--case``, else the target's default one (``./cases/<target>-<hash>``)."""
    if case is None and not target:
        raise CloudirError("no case folder", hint="pass --case DIR (or --target, for ./cases/<target>-<hash>)")
    return case_path(case, target or "")


def pull_logs(
    cloud: str,
    config: dict[str, Any],
    pull: LogPullRequest,
    grammar: Grammar,
    *,
    target: TargetQuery | None = None,
    description: str,
) -> None:
    """Print (``--dry-run``, in its format) or run a log pull into ``grammar.case``, narrowed to ``target`` when one is
    named."""
    if grammar.dry_run:
        render_plan(ops.dry_run_logs(cloud, config, pull, target), grammar.fmt)
        return
    root = log_case(grammar.case, target.value if target else None)
    request = ops.LogsRequest(pull, root, resume=grammar.resume, description=description, on_case=hold, target=target)
    print_run(ops.collect_logs(get_provider(cloud, **config), request, progress()))
