"""Investigation reports: one self-contained HTML file, an incident summary in Markdown or JSON, draft notices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudir.case import Case, output_in_case
from cloudir.report.data import ReportData, load_report_data
from cloudir.report.html import render_html
from cloudir.report.notice import REGIMES, Notice, draft_notice, render_notice
from cloudir.report.summary import build_summary, render_summary

FORMATS = ("html", "md", "json")

__all__ = [
    "FORMATS",
    "REGIMES",
    "ReportData",
    "incident_summary",
    "load_report_data",
    "notice_path",
    "render_summary",
    "write_report",
]


def incident_summary(case_dir: Path) -> dict[str, Any]:
    """The incident summary of a case (see :func:`cloudir.report.summary.build_summary`)."""
    return build_summary(load_report_data(case_dir))


def write_report(
    case_dir: Path,
    out: Path,
    *,
    fmt: str = "html",
    case: Case | None = None,
    notices: tuple[str, ...] = (),
    contact: str | None = None,
) -> Path:
    """Write the report, and a draft notice (:func:`notice_path`) beside it per regime in ``notices``.

    Inside the case every file must go under reports/ and is hashed into the custody log. Returns ``out``.
    """
    outputs = _render(case_dir, fmt, notices, contact)
    paths = [out, *(notice_path(out, key) for key in notices)]
    rels = [output_in_case(case_dir, path) for path in paths]
    if all(rel is None for rel in rels):
        for path, text in zip(paths, outputs, strict=True):
            _write(path, text)
        return out
    if case is not None:
        _write_in_case(case, rels, paths, outputs)
        return out
    with Case.open(case_dir) as opened, opened.action("report.write", target=str(rels[0]), format=fmt):
        _write_in_case(opened, rels, paths, outputs)
    return out


def notice_path(out: Path, regime: str) -> Path:
    """Where the draft notice for ``regime`` is written beside the report ``out``."""
    return out.parent / f"notice-{regime}.md"


def _write_in_case(case: Case, rels: list[str | None], paths: list[Path], outputs: list[str]) -> None:
    for rel, path, text in zip(rels, paths, outputs, strict=True):
        if rel is None:
            _write(path, text)
        else:
            _write(case.root / rel, text)
            case.record_existing(rel)


def _render(case_dir: Path, fmt: str, notices: tuple[str, ...], contact: str | None) -> list[str]:
    data = load_report_data(case_dir)
    summary = build_summary(data)
    drafts: list[Notice] = [
        draft_notice(key, summary, data.story, str(data.meta.get("created")), contact) for key in notices
    ]
    main = render_html(data, summary, drafts) if fmt == "html" else render_summary(summary, fmt)
    case_id = str(data.meta.get("case_id"))
    return [main, *(render_notice(notice, case_id) for notice in drafts)]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
