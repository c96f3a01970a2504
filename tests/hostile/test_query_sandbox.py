"""The query sandbox is bounded: one statement as DuckDB parses it, a time limit and a memory limit."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.cli import app
from cloudir.timeline.db import MEMORY_LIMIT, QUERY_TIMEOUT_SECONDS

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE events AS SELECT 'a;b' AS actor")
    return path


def _query(db: Path, sql: str, *options: str) -> tuple[int, str]:
    result = runner.invoke(app, ["timeline", "query", str(db), sql, "--format", "csv", *options])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("SELECT 1; SELECT 2", 2),
        ("SELECT actor FROM events; DROP TABLE events", 2),
        ("SELECT 1;;SELECT 2;", 2),
        ("/* only a comment */", 0),
    ],
)
def test_more_or_fewer_than_one_statement_is_refused(db: Path, sql: str, count: int) -> None:
    code, output = _query(db, sql)
    assert code == 2
    assert output == f"error: query refused: expected exactly one SQL statement, got {count}\n"


def test_a_semicolon_inside_a_string_or_comment_is_still_one_statement(db: Path) -> None:
    code, output = _query(db, "SELECT actor, ';' AS s FROM events WHERE actor <> 'x;y' -- ; SELECT 2\n;")
    assert code == 0, output
    assert output == "actor,s\na;b,;\n"


def test_a_runaway_query_is_interrupted_at_the_time_limit(db: Path) -> None:
    code, output = _query(db, "SELECT count(*) FROM range(100000000000::BIGINT)", "--timeout", "0.5")
    assert code == 2
    assert output == "error: query stopped after the 0.5 s time limit (narrow it, or raise --timeout)\n"


def test_a_memory_hungry_query_stops_at_the_memory_limit(db: Path) -> None:
    sql = "SELECT length(string_agg(repeat('x', 1000), ',')) FROM range(2000000)"
    code, output = _query(db, sql, "--memory-limit", "64MB")
    assert code == 2
    assert (
        output
        == "error: query stopped: it needs more than the 64MB memory limit (narrow it, or raise --memory-limit)\n"
    )
    code, output = _query(db, "SELECT 1", "--memory-limit", "lots")
    assert code == 2
    assert "cannot open timeline database read-only: Parser Error: Memory must have a number" in output


def test_the_help_states_the_defaults_the_sandbox_applies() -> None:
    shown = " ".join(runner.invoke(app, ["timeline", "query", "--help"]).output.split())
    assert f"(default {QUERY_TIMEOUT_SECONDS:g}; 0: no limit)" in shown
    assert f"(default {MEMORY_LIMIT})" in shown
