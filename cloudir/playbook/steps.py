"""The engine's own playbook steps: timeline, analysis, report and notification, over :mod:`cloudir.ops`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudir.case import REPORTS_DIR, TIMELINE_DB
from cloudir.config import load_config
from cloudir.errors import CloudirError
from cloudir.plan import Step, StepContext, StepKind
from cloudir.playbook.model import PlaybookStep
from cloudir.safepath import id_folder
from cloudir.textsafe import esc
from cloudir.triggers import Trigger

REPORT_FILE = f"{REPORTS_DIR}/report.html"


def missing_step(pb_step: PlaybookStep, message: str) -> Step:
    """A step whose implementation is missing from this build: it fails with a clear error when run."""

    def run(ctx: StepContext) -> dict[str, Any]:
        raise CloudirError(message)

    return Step(pb_step.id, f"{pb_step.title} (unavailable)", StepKind.READ, [], run)


def approval_step(pb_step: PlaybookStep, trigger: Trigger) -> Step:
    def run(ctx: StepContext) -> dict[str, Any]:
        return {"status": "awaiting approval", "finding_id": trigger.finding_id}

    return Step(f"{pb_step.id}.awaiting-approval", f"{pb_step.title}: awaiting approval", StepKind.READ, [], run)


def timeline_step(ctx: StepContext) -> dict[str, Any]:
    from cloudir.ops.investigate import build_timeline

    stats = build_timeline(ctx.case)
    return {"timeline": TIMELINE_DB, "events": stats.ingested}


def analyze_step(params: dict[str, Any]) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        from cloudir.ops.investigate import AnalyzeRequest, analyze

        db_path = ctx.case.root / TIMELINE_DB
        if not db_path.is_file():
            raise CloudirError(f"the analyze step needs {db_path}; run the timeline step first")
        rules = params.get("sigma_rules")
        summary = analyze(AnalyzeRequest(db_path, sigma_rules=Path(rules) if rules else None), ctx.case)
        return {"findings": summary.findings}

    return run


def report_step(ctx: StepContext) -> dict[str, Any]:
    from cloudir.ops.investigate import ReportRequest, report

    path = report(ReportRequest(ctx.case.root, ctx.case.root / REPORT_FILE), ctx.case)
    return {"report": path.relative_to(ctx.case.root).as_posix()}


def notify_step(trigger: Trigger, fmt: str, channels: list[str] | None) -> Callable[[StepContext], dict[str, Any]]:
    """Write the incident summary into the case, then send it on the configured channels (all, or ``channels``)."""

    def run(ctx: StepContext) -> dict[str, Any]:
        from cloudir.notify import channels_from_config, deliver, message_for
        from cloudir.report import incident_summary, render_summary

        summary = incident_summary(ctx.case.root)
        rel = f"notifications/{id_folder(trigger.finding_id)}.{fmt}"
        ctx.case.write_bytes(rel, render_summary(summary, fmt).encode())
        ctx.console.print(f"incident summary written to {esc(ctx.case.root / rel)}", soft_wrap=True)
        message = message_for(summary, str(ctx.case.root))
        sent = [
            deliver(channel, message, case=ctx.case) for channel in channels_from_config(load_config().notify, channels)
        ]
        for item in sent:
            style = "green" if item["outcome"] == "sent" else "red"
            detail = esc(f"{item['channel']} ({item['type']})" + (f": {item['error']}" if "error" in item else ""))
            ctx.console.print(f"[{style}]notification {item['outcome']}[/] on {detail}", soft_wrap=True)
        return {"channel": "file", "path": rel, "sent": sent}

    return run
