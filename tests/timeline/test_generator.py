"""The benchmark generator makes distinct, ingestible events from the real datasets."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cloudir.timeline.ingest import ingest_paths
from tests.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "datasets").is_dir(), reason="no shared datasets")


def test_generated_events_are_unique_and_ingest_cleanly(tmp_path: Path) -> None:
    shape = "records"
    generator: object = load_benchmark("generate_events")
    files = generator.generate(tmp_path / "gen", 3000, chunk=1000, actors=50, shape=shape, gzip=True)  # type: ignore[attr-defined]
    assert [f.name for f in files] == [f"events-0000{i}.{'jsonl' if shape == 'jsonl' else 'json'}.gz" for i in range(3)]
    stats = ingest_paths(tmp_path / "t.duckdb", files)
    assert (stats.ingested, stats.duplicates, stats.quarantined) == (3000, 0, 0)
    with duckdb.connect(str(tmp_path / "t.duckdb"), read_only=True) as con:
        actors, accounts, first, last = con.execute(
            "SELECT count(DISTINCT actor) FILTER (WHERE actor LIKE '%:user/user-%'), count(DISTINCT account), "
            "min(time), max(time) FROM events"
        ).fetchone()  # type: ignore[misc]
    assert actors == 50
    assert accounts >= 20
    assert (last - first).days >= 89
