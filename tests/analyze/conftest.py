"""Fixtures for analyzer tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.analyze import AnalysisSummary, run_analysis
from cloudir.cli import app
from tests.analyze.builder import T0, write_db

SHARED = Path(__file__).resolve().parents[3] / "shared"
"""The read-only shared folder beside the repository (datasets, SigmaHQ rules)."""

Analyze = Callable[..., tuple[AnalysisSummary, list[dict[str, Any]]]]


@pytest.fixture
def analyze(tmp_path: Path) -> Analyze:
    """Write rows into a fresh timeline, analyze it with the incident window from day 20, return the findings."""

    def run(rows: list[dict[str, Any]], **kwargs: Any) -> tuple[AnalysisSummary, list[dict[str, Any]]]:
        db = write_db(tmp_path / "timeline.duckdb", rows)
        kwargs.setdefault("baseline_until", T0.replace(day=21))
        summary = run_analysis(db, **kwargs)
        with duckdb.connect(str(db), read_only=True) as con:
            cursor = con.execute("SELECT * FROM findings ORDER BY score DESC")
            names = [d[0] for d in cursor.description]
            findings = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return summary, findings

    return run


def rules_through_the_cli(
    folder: Path, records: list[dict[str, Any]], analyzer: str = "sensitive_actions"
) -> dict[str, set[str]]:
    """``records`` written as JSON lines, ``cloudir timeline ingest`` (every record read) and ``cloudir analyze``
    with defaults: each event id a finding of ``analyzer`` (the catalog by default) names -> the rules that named
    it."""
    log = folder / "records.jsonl"
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    db = folder / "timeline.duckdb"
    runner = CliRunner()
    ingested = runner.invoke(app, ["timeline", "ingest", str(log), "--db", str(db)])
    assert f"{len(records)} records = {len(records)} ingested" in ingested.output, ingested.output
    analyzed = runner.invoke(app, ["analyze", str(db), "--format", "json"])
    assert analyzed.exit_code == 0, analyzed.output
    flagged: dict[str, set[str]] = {}
    for finding in json.loads(analyzed.output)["findings"]:
        if finding["analyzer"] == analyzer:
            for event in finding["event_ids"]:
                flagged.setdefault(event, set()).add(finding["rule"])
    return flagged
