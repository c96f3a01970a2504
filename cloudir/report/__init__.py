"""Investigation reports: one self-contained HTML file, and an incident summary in Markdown or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudir.case import Case
from cloudir.report.data import ReportData, load_report_data
from cloudir.report.html import render_html
from cloudir.report.summary import build_summary, render_summary

FORMATS = ("html", "md", "json")

__all__ = ["FORMATS", "ReportData", "incident_summary", "load_report_data", "render_summary", "write_report"]


def incident_summary(case_dir: Path) -> dict[str, Any]:
    """The incident summary of a case (see :func:`cloudir.report.summary.build_summary`)."""
    return build_summary(load_report_data(case_dir))


def write_report(case_dir: Path, out: Path, *, fmt: str = "html", case: Case | None = None) -> Path:
    """Write the report; a file written inside the case folder is hashed into its custody log."""
    data = load_report_data(case_dir)
    summary = build_summary(data)
    text = render_html(data, summary) if fmt == "html" else render_summary(summary, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    root = case_dir.resolve()
    if out.resolve().is_relative_to(root):
        rel = out.resolve().relative_to(root).as_posix()
        if case is not None:
            case.record_existing(rel)
        else:
            opened = Case.open(case_dir)
            with opened.action("report.write", target=rel, format=fmt):
                opened.record_existing(rel)
    return out
