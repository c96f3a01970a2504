"""Core commands: verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudir.cli.apps import app
from cloudir.cli.common import console, err_console
from cloudir.custody import verify_case
from cloudir.textsafe import esc


@app.command()
def verify(
    case_dir: Annotated[Path, typer.Argument(help="Case folder holding custody.jsonl.")],
    expect_head: Annotated[
        str | None,
        typer.Option(help="Chain head hash noted at acquisition time; detects records removed from the end."),
    ] = None,
) -> None:
    """Check a case offline: the custody hash chain and every artifact's SHA-256.

    Exit 0 when intact; exit 1 naming the first broken artifact or record.
    """
    result = verify_case(case_dir, expect_head=expect_head)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {esc(warning)}", soft_wrap=True)
    if not result.ok:
        err_console.print(f"[bold red]BROKEN:[/] {esc(result.first_problem)}", soft_wrap=True)
        for problem in result.problems[1:]:
            err_console.print(f"  also: {esc(problem)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(
        f"[green]OK[/] {result.records} custody records chained, {result.artifacts_checked} artifacts match; "
        f"head {esc(result.head)}",
        soft_wrap=True,
    )
