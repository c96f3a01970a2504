"""One writer per case: a second command waits with a message, or fails fast with --no-wait."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import read_records, verify_case

runner = CliRunner()

HOLD = """
import sys, time
from pathlib import Path
from cloudir.case import Case
with Case.open(Path(sys.argv[1]), purpose="cloudir acquire aws (test holder)") as case:
    case.custody.append("note", details={"by": "holder"})
    Path(sys.argv[2]).write_text("held")
    time.sleep(float(sys.argv[3]))
"""


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    with Case.create(tmp_path / "case"):
        pass
    return tmp_path / "case"


@contextmanager
def _hold(case_dir: Path, seconds: float, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(case_dir), str(ready), str(seconds)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert holder.poll() is None, "the holder process died"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield holder
    finally:
        holder.wait(timeout=60)


def test_no_wait_fails_fast_naming_the_holder(case_dir: Path, tmp_path: Path) -> None:
    with _hold(case_dir, 300, tmp_path) as holder:
        result = runner.invoke(app, ["--no-wait", "report", str(case_dir)], env={"COLUMNS": "300"})
        assert holder.poll() is None  # returned while the holder still holds the case
        holder.terminate()
        assert result.exit_code == 2, result.output
        assert "is in use by pid" in result.output
        assert "cloudir acquire aws (test holder)" in result.output
    assert not (case_dir / "reports").exists()


def test_second_command_waits_then_appends_after_the_first(case_dir: Path, tmp_path: Path) -> None:
    with _hold(case_dir, 3, tmp_path):
        result = runner.invoke(app, ["report", str(case_dir)], env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        assert "waiting for pid" in result.output
    records = read_records(case_dir / "custody.jsonl")
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))  # one chain, no fork
    assert [r["action"] for r in records][-2:] == ["note", "report.write"]
    assert verify_case(case_dir).ok
