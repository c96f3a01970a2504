"""Every shared dataset is accounted for: input records = events + duplicates + quarantined."""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from cloudir.timeline.ingest import ingest_paths

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def json_records(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            document = json.load(handle)
        total += len(document["Records"] if isinstance(document, dict) else document)
    return total


def lines(paths: list[Path]) -> int:
    return sum(1 for path in paths for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def csv_rows(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with path.open(newline="", encoding="utf-8") as handle:
            total += sum(1 for _ in csv.DictReader(handle))
    return total


CASES: list[tuple[str, str, Callable[[list[Path]], int], bool]] = [
    ("flaws2-cloudtrail", "logs/*.json.gz", json_records, True),
    ("stratus-red-team-detonations-aws", "logs/*.json", json_records, True),
    ("otrf-aws-cloud-breach-s3", "*.jsonl", lines, True),
    ("otrf-aws-s3-honeybucket", "*.csv", csv_rows, True),
    ("panther-rule-tests", "*.jsonl", lines, False),
]

pytestmark = pytest.mark.skipif(not DATASETS.is_dir(), reason="shared datasets not present")


def test_every_dataset_folder_is_covered() -> None:
    assert {name for name, *_ in CASES} == {p.name for p in DATASETS.iterdir() if p.is_dir()}


@pytest.mark.parametrize(("name", "pattern", "count", "clean"), CASES, ids=[c[0] for c in CASES])
def test_dataset_accounting(
    tmp_path: Path, name: str, pattern: str, count: Callable[[list[Path]], int], clean: bool
) -> None:
    files = sorted((DATASETS / name).glob(pattern))
    assert files
    expected = count(files)
    db = tmp_path / "t.duckdb"
    stats = ingest_paths(db, files)
    assert stats.ingested + stats.duplicates + stats.quarantined == expected
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT event_uid) FROM events").fetchone() == (
            stats.ingested,
            stats.ingested,
        )
        assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (stats.quarantined,)
        per_file = con.execute(
            "SELECT file, records, events, duplicates, quarantined, sha256 FROM ingest_files ORDER BY file"
        ).fetchall()
    assert [row[0] for row in per_file] == sorted(str(f) for f in files)
    for _, records, events, duplicates, quarantined, sha256 in per_file:
        assert records == events + duplicates + quarantined
        assert len(sha256) == 64
    assert sum(row[1] for row in per_file) == expected
    if clean:
        assert (stats.duplicates, stats.quarantined) == (0, 0)
    else:
        assert stats.ingested > expected // 3
