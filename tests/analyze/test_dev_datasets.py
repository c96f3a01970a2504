"""The dev-dataset benchmark's fast each-alone mode gives the findings a fresh ingest of the fixture alone gives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cloudir.analyze import run_analysis
from cloudir.timeline.ingest import ingest_paths
from tests.analyze.conftest import SHARED
from tests.benchmarks import load_benchmark

PANTHER = SHARED / "datasets" / "panther-rule-tests"
pytestmark = pytest.mark.skipif(not PANTHER.is_dir(), reason="no shared Panther fixtures")

PICKS = (
    ("aws_cloudtrail", 92),  # lower-case keys, eventid shared with 94: the id collides in the all-together timeline
    ("aws_cloudtrail", 362),  # no id at all, the same record as 361: an exact duplicate there
    ("azure_activity", 0),
    ("azure_entra_signin_audit", 0),
    ("gcp_audit", 8),
    ("aws_cloudtrail", 94),
    ("aws_cloudtrail", 361),
)
COMPARED = 5
"""The first picks are analyzed alone both ways; the last two are there for the collision and the duplicate."""


def _findings(db: Path) -> list[tuple[Any, ...]]:
    run_analysis(db)
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT analyzer, rule, score, title, explanation, event_count FROM findings ORDER BY ALL"
        ).fetchall()


def test_each_alone_from_the_together_timeline_equals_a_fresh_ingest(tmp_path: Path) -> None:
    bench: Any = load_benchmark("dev_datasets")
    lines = {name: (PANTHER / f"{name}.jsonl").read_text().splitlines() for name, _ in PICKS}
    records = [bench._own_id(json.loads(lines[name][line])["event"], i) for i, (name, line) in enumerate(PICKS)]
    fixtures = tmp_path / "together" / bench.PANTHER_EVENTS
    fixtures.parent.mkdir()
    fixtures.write_text("".join(json.dumps(record) + "\n" for record in records))
    together = tmp_path / "together.duckdb"
    stats = ingest_paths(together, [fixtures])
    assert (stats.duplicates, stats.id_collisions) == (1, 2)  # both fallbacks are exercised
    flagged = 0
    for index, record in enumerate(records[:COMPARED]):
        fast = tmp_path / f"fast-{index}.duckdb"
        events = bench.alone_timeline(together, record, index, fast)
        single = tmp_path / f"fresh-{index}" / "fixture.jsonl"
        single.parent.mkdir()
        single.write_text(json.dumps(record) + "\n")
        fresh = tmp_path / f"fresh-{index}.duckdb"
        assert ingest_paths(fresh, [single]).ingested == events == 1, PICKS[index]
        found = _findings(fast)
        assert found == _findings(fresh), PICKS[index]
        flagged += bool(found)
    assert flagged >= 2  # the comparison covers findings, not only empty timelines
