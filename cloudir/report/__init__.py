"""Investigation reports: one self-contained HTML file, and an incident summary in Markdown or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudir.case import Case, output_in_case
from cloudir.report.data import ReportData, load_report_data
from cloudir.report.html import render_html
from cloudir.report.summary import build_summary, render_summary

FORMATS = ("html", "md", "json")

__all__ = ["FORMATS", "ReportData", "incident_summary", "load_report_data", "render_summary", "write_report"]


def incident_summary(case_dir: Path) -> dict[str, Any]:
    """The incident summary of a case (see :func:`cloudir.report.summary.build_summary`)."""
    return build_summary(load_report_data(case_dir))


def write_report(case_dir: Path, out: Path, *, fmt: str = "html", case: Case | None = None) -> Path:
    """Write the report; inside the case it must go under reports/ and is hashed into the custody log."""
    rel = output_in_case(case_dir, out)
    if rel is None:
        _write(out, _render(case_dir, fmt))
        return out
    if case is not None:
        _write(case.root / rel, _render(case_dir, fmt))
        case.record_existing(rel)
        return out
    with Case.open(case_dir) as opened, opened.action("report.write", target=rel, format=fmt):
        _write(opened.root / rel, _render(case_dir, fmt))
        opened.record_existing(rel)
    return out


def _render(case_dir: Path, fmt: str) -> str:
    data = load_report_data(case_dir)
    summary = build_summary(data)
    return render_html(data, summary) if fmt == "html" else render_summary(summary, fmt)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
