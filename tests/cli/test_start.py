"""Ecosystem conventions and fast start: --version, python -m cloudir, completion, lazy heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb

from cloudir import __version__
from tests.analyze.builder import routine, write_db

HEAVY = (
    "sigma",
    "duckdb",
    "boto3",
    "botocore",
    "azure",
    "google",
    "yaml",
    "moto",
    "rich.markdown",
    "cryptography",
    "asn1crypto",
)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )


def _loaded_after(argv: list[str]) -> set[str]:
    """Top-level modules (and rich.markdown) that running the CLI with ``argv`` imports in a fresh interpreter
    (modules the interpreter loaded before cloudir, such as namespace packages of ``.pth`` files, do not count)."""
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "from cloudir.cli import app\n"
        f"try:\n    app({argv!r}, prog_name='cloudir')\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = _run("-c", code)
    modules = set(json.loads(done.stderr.strip().splitlines()[-1]))
    return {name for name in HEAVY if name in modules or any(m.startswith(name + ".") for m in modules)}


def test_version_and_python_dash_m() -> None:
    done = _run("-m", "cloudir", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cloudir {__version__}"
    assert "Usage: cloudir" in _run("-m", "cloudir", "--help").stdout


def test_help_imports_no_heavy_library() -> None:
    assert _loaded_after(["--help"]) == set()
    assert _loaded_after(["acquire", "aws", "--help"]) == set()


def test_timeline_query_imports_only_duckdb(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    duckdb.connect(str(db)).close()
    assert _loaded_after(["timeline", "query", str(db), "SELECT 1 AS one", "--format", "json"]) == {"duckdb"}


def test_shell_completion_completes_commands() -> None:
    done = _run(
        "-m", "cloudir", env={"_CLOUDIR_COMPLETE": "complete_bash", "COMP_WORDS": "cloudir acquire ", "COMP_CWORD": "2"}
    )
    assert done.stdout.split() == ["aws", "azure", "gcp"]


def test_analyze_imports_pysigma_only_for_sigma_rules(tmp_path: Path) -> None:
    """pySigma (about a second of start-up) is loaded by ``analyze --sigma-rules DIR`` alone."""
    db = write_db(tmp_path / "t.duckdb", routine(["ListBuckets", "DescribeInstances"], days=3))
    rules = tmp_path / "rules"
    rules.mkdir()
    assert "sigma" not in _loaded_after(["analyze", str(db), "--format", "json"])
    assert "sigma" in _loaded_after(["analyze", str(db), "--format", "json", "--sigma-rules", str(rules)])
