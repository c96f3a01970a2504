"""``cloudir demo``: the whole flow against sandboxed clouds with a planted incident, no credentials.

The sandboxes come from the registry's ``cloudir.sandboxes: demo`` hook (cloudir's own: ``moto_fixtures``).
For each cloud: plant the incident, acquire the compromised workload, pull the control-plane logs for the
attack window, contain; then build one timeline, analyze it, write the report and verify the case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from rich.console import Console

from cloudir import ops
from cloudir.case import TIMELINE_DB, Case
from cloudir.config import load_config
from cloudir.custody import VerifyResult
from cloudir.ops import Progress
from cloudir.ops.investigate import VerifyRequest, verify
from cloudir.plan import StepObserver
from cloudir.provider import AcquireOptions, Capability, LogPullRequest
from cloudir.registry import demo_sandboxes
from cloudir.textsafe import esc

if TYPE_CHECKING:
    from cloudir.sandbox import Sandbox


@dataclass
class DemoResult:
    """What the demo produced."""

    case: Case
    clouds: list[str]
    events: int = 0
    findings: int = 0
    report: Path | None = None
    verification: VerifyResult | None = None
    top_findings: list[tuple[int, str, str]] = field(default_factory=list)  # (score, actor, title)


def run_demo(
    out: Path,
    clouds: list[str],
    *,
    console: Console,
    observer: StepObserver | None = None,
    sigma_rules: Path | None = None,
) -> DemoResult:
    """Run the full flow on each sandboxed cloud into one case at ``out``."""
    sandboxes = demo_sandboxes()
    opened = {cloud: sandboxes.open_sandbox(cloud) for cloud in clouds}  # a missing package fails before the case
    description = f"cloudir demo: planted incident on {', '.join(clouds)} (sandboxed)"
    store = load_config().seal_store
    with sandboxes.sandbox_environment(), sandboxes.seal_store_sandbox(store):
        result = _acquire_and_investigate(
            out, opened, description=description, console=console, observer=observer, sigma_rules=sigma_rules
        )
        if store is not None:  # the case's seal was stored as the case closed: compare the stored copies
            console.print(
                f"seal store {esc(store)} is sandboxed for the demo: it is gone when the demo ends", soft_wrap=True
            )
            result.verification = verify(VerifyRequest(out, remote=True))
    return result


def _acquire_and_investigate(
    out: Path,
    opened: dict[str, Sandbox],
    *,
    description: str,
    console: Console,
    observer: StepObserver | None,
    sigma_rules: Path | None,
) -> DemoResult:
    progress = Progress(console=console, observer=observer)
    with Case.create(out, description=description) as case:
        for cloud, unstarted in opened.items():
            console.rule(f"[bold]{esc(cloud)}: planted incident")
            with unstarted as sandbox:
                incident = sandbox.plant_incident()
                provider = sandbox.provider()
                options = AcquireOptions(
                    forensic_account=incident.forensic_account,
                    encryption_key=incident.encryption_key,
                    raw_image=Capability.IMAGE in provider.capabilities,
                )
                acquired = ops.acquire(provider, ops.AcquireRequest(incident.target, out, options), progress, case=case)
                target = acquired.target
                console.print(
                    f"acquired {esc(target.ref)} (attacker acted as {esc(incident.attacker_principal)})", soft_wrap=True
                )
                if Capability.PULL_LOGS in provider.capabilities:
                    # Up to now: the pull then also shows the tool's own acquisition calls, tagged as responder.
                    request = LogPullRequest(start=incident.window_start, end=max(incident.window_end, _now()))
                    ops.collect_logs(provider, ops.LogsRequest(request, out), progress, case=case)
                    if Capability.PULL_FLOWS in provider.capabilities:  # the network side: the target's flow logs
                        flows = ops.target_flows(request, target)
                        ops.collect_logs(provider, ops.LogsRequest(flows, out), progress, case=case)
                if Capability.ISOLATE in provider.capabilities:
                    ops.contain(provider, ops.ContainRequest(incident.target, out), progress, case=case)
                provider.bind(None)
        return _investigate(case, list(opened), console, sigma_rules)


def _now() -> str:
    """A minute from now, so that calls made within the current second are inside the window."""
    return (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _investigate(case: Case, clouds: list[str], console: Console, sigma_rules: Path | None) -> DemoResult:
    from cloudir.ops.investigate import AnalyzeRequest, ReportRequest, analyze, build_timeline, report

    console.rule("[bold]timeline, analysis, report")
    stats = build_timeline(case)
    db_path = case.root / TIMELINE_DB
    summary = analyze(AnalyzeRequest(db_path, sigma_rules=sigma_rules), case)
    report_path = report(ReportRequest(case.root), case)
    result = DemoResult(case=case, clouds=clouds, events=stats.ingested, findings=summary.findings, report=report_path)
    with duckdb.connect(str(db_path), read_only=True) as con:
        top = "SELECT score, actor, title FROM findings ORDER BY score DESC, first_time LIMIT 5"
        rows = con.execute(top).fetchall()
    result.top_findings = [(int(score), str(actor), str(title)) for score, actor, title in rows]
    result.verification = verify(VerifyRequest(case.root))
    return result
