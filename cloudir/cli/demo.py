"""``cloudir demo``: the whole flow on sandboxed clouds."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cloudir.cli.apps import app
from cloudir.cli.common import console, err_console, print_step_status
from cloudir.cli.rows import print_rows
from cloudir.errors import CloudirError
from cloudir.textsafe import esc


class DemoCloud(StrEnum):
    """Which sandboxed cloud(s) to run."""

    aws = "aws"
    azure = "azure"
    gcp = "gcp"
    all = "all"


@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option(help="Case folder to write (default: ./cases/demo-<UTC time>); must not exist.")
    ] = None,
    cloud: Annotated[DemoCloud, typer.Option(help="Sandboxed cloud to run the incident on.")] = DemoCloud.aws,
    sigma_rules: Annotated[
        Path | None, typer.Option(help="SigmaHQ rules folder to run as well (e.g. ../shared/sigma-rules).")
    ] = None,
) -> None:
    """Run the whole flow on a sandboxed cloud with a planted incident: no credentials, no network.

    Plants a compromised instance (in an autoscaling group, encrypted volume) and attacker API activity,
    then preserves, snapshots, copies, images, pulls logs, contains, builds the timeline, analyzes it,
    writes reports/report.html and verifies the chain of custody.

    Example: cloudir demo --out ./demo-case && cloudir verify ./demo-case
    """
    from cloudir.demo import run_demo

    clouds = ["aws", "azure", "gcp"] if cloud is DemoCloud.all else [cloud.value]
    out = out or Path("cases") / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    if out.exists() and any(out.iterdir()):
        raise CloudirError(f"{out} already exists and is not empty", hint="choose another --out")

    result = run_demo(out, clouds, console=err_console, observer=print_step_status, sigma_rules=sigma_rules)
    print_rows(["score", "actor", "finding"], result.top_findings, title="Top findings")
    verdict = result.verification
    if verdict is None or not verdict.ok:
        raise CloudirError(f"custody verification failed: {verdict.first_problem if verdict else 'not run'}")
    console.print(
        f"[green]demo complete[/]: case {esc(result.case.case_id)} in {esc(out)}\n"
        f"  {result.events} timeline events, {result.findings} findings, report {esc(result.report)}\n"
        f"  custody verified: {verdict.records} records, {verdict.artifacts_checked} artifacts, head {verdict.head}\n"
        f'  next: cloudir timeline query {esc(out / "timeline.duckdb")} "SELECT * FROM findings ORDER BY score DESC"',
        soft_wrap=True,  # a hash or a path is never cut across lines, on a terminal or piped
    )
