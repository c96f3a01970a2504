"""Console output and plan execution shared by the CLI commands."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from cloudir.case import Case
from cloudir.plan import Plan, RunResult, Step, StepKind, run_plan

console = Console()
err_console = Console(stderr=True)

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
    table = Table(title=f"Plan: {plan.name} {plan.cloud} {plan.target}", show_lines=True, expand=True)
    table.add_column("#", justify="right")
    table.add_column("step")
    table.add_column("kind")
    table.add_column("API calls")
    for index, step in enumerate(plan.steps, start=1):
        calls = "\n".join(call.describe() for call in step.calls) or "-"
        style = _KIND_STYLE[step.kind]
        table.add_row(str(index), step.title, f"[{style}]{step.kind}[/]", calls)
    out.print(table)
    for note in plan.notes:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    out.print("[bold]dry run:[/] nothing was changed.")


def execute_plan(plan: Plan, case: Case) -> RunResult:
    """Run a plan with live step status lines on stderr."""

    def observe(step: Step, status: str) -> None:
        if status == "running":
            return
        style = _STATUS_STYLE.get(status, "white")
        err_console.print(f"[{style}]{status:>8}[/] {step.title}", highlight=False)

    result = run_plan(plan, case, console=err_console, observer=observe)
    err_console.print(
        f"[green]{plan.name} complete[/] case {case.case_id} at {case.root} "
        f"(custody head {case.custody.head[:16]}…, {case.custody.length} records)",
        highlight=False,
    )
    return result


def case_path(value: Path | None, default_name: str) -> Path:
    """The case folder to use: the given one or ``./cases/<default_name>``."""
    return value if value is not None else Path("cases") / default_name
