"""Fixtures for analyzer tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cloudir.analyze import AnalysisSummary, run_analysis
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
