"""The cost benchmarks' own reporting: a failed command's reason stays visible, a missing figure says so."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.benchmarks import load_benchmark


def test_a_failed_command_keeps_its_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    detection = load_benchmark("detection_benchmark")
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('disk full at block 7'); sys.exit(3)"]
    with pytest.raises(SystemExit, match="exit 3"):
        detection.measured(failing, tmp_path / "out.txt")
    assert "disk full at block 7" in capfd.readouterr().err


def test_an_ingest_without_cpu_figures_is_not_printed_as_none() -> None:
    cost = load_benchmark("analysis_cost")
    row = {
        "events": 1_000_000,
        "actors": 10_000,
        "ingest": {"seconds": 90.1, "peak_rss_mib": 924, "cpu_seconds": None},
        "analyze": {"seconds": 168.7, "peak_rss_mib": 1731, "cpu_seconds": 150.0},
        "analyze_vs_ingest": 1.87,
        "analyze_vs_ingest_cpu": None,
    }
    line = cost.table_row(row)
    assert "None" not in line
    assert "| 1.87x (CPU not measured) |" in line
    assert "| 150.0 |" in line
