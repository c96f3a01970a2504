"""Output for people and programs: the main commands at 80 columns on a terminal and piped, and progress."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudir.case import Case
from cloudir.cli import app
from cloudir.cli.common import console, err_console
from cloudir.cli.rows import cell_text, json_value, unique_columns
from cloudir.timeline.ingest import ingest_paths

DATA = Path(__file__).parents[1] / "timeline" / "data"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BOX = set("│┃┏┓┗┛━─┌┐└┘├┤┬┴┼╭╮╯╰")
runner = CliRunner()


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("out") / "t.duckdb"
    ingest_paths(
        path, [DATA / "cloudtrail_records.json.gz", DATA / "gcp_audit.jsonl", DATA / "entra_signin_graph.json"]
    )
    return path


@pytest.fixture(autouse=True)
def eighty_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles as on an 80-column terminal (``TTY_COMPATIBLE`` says whether stdout is one)."""
    monkeypatch.setenv("NO_COLOR", "1")
    for out in (console, err_console):
        monkeypatch.setattr(out, "_width", 80)


@pytest.fixture
def case_dir(tmp_path: Path, no_credentials: None) -> Path:
    """A case holding one CloudTrail file under logs/ (a signing key of its own, no cloud credentials)."""
    root = tmp_path / "case"
    with Case.create(root, description="output test") as case:
        case.write_bytes("logs/aws/cloudtrail/records.json.gz", (DATA / "cloudtrail_records.json.gz").read_bytes())
    return root


def _cli(*args: str, terminal: bool) -> str:
    """Run the CLI in this process with stdout a terminal or a pipe; its standard output."""
    done = runner.invoke(app, list(args), env={"TTY_COMPATIBLE": "1" if terminal else "0"})
    assert done.exit_code == 0, done.output + str(done.exception)
    return ANSI.sub("", done.stdout)


def test_piped_through_a_real_process_is_tab_separated(db: Path) -> None:
    sql = "SELECT time, actor FROM events ORDER BY time LIMIT 3"
    done = subprocess.run(
        [sys.executable, "-m", "cloudir", "timeline", "query", str(db), sql],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "time\tactor"
    assert len(lines) == 4
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z\t.*", line) for line in lines[1:])


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
    return dict(pairs)


def _plans(case_dir: Path) -> list[list[str]]:
    """Commands that print a plan (dry runs without credentials, a playbook's plan), verify and iam-policy --explain."""
    pull = ["logs", "pull", "gcp", "--project", "prod-1", "--case", str(case_dir), "--around", "2026-11-20T10:00Z"]
    return [
        ["acquire", "aws", "--target", "i-0abc", "--region", "eu-west-1", "--dry-run"],
        ["contain", "azure", "--target", "web-1", "--subscription", "6f1c2a9e", "--dry-run"],
        [*pull, "--dry-run"],
        ["playbook", "plan", "--cloud", "aws", "--instance", "i-0abc", "--location", "eu-west-1"],
        ["verify", str(case_dir)],
        ["iam-policy", "aws", "--explain"],
    ]


def _commands(db: Path, case_dir: Path) -> list[list[str]]:
    sql = "SELECT time, actor, operation, actor AS actor, raw FROM events ORDER BY time"
    return [
        ["timeline", "query", str(db), sql],
        ["timeline", "show", str(db)],
        ["analyze", str(db)],
        ["analyzers"],
        ["playbook", "list"],
        *_plans(case_dir),
    ]


def test_terminal_at_80_columns_never_wraps_a_table(db: Path, case_dir: Path) -> None:
    for command in _commands(db, case_dir):
        out = _cli(*command, terminal=True)
        assert out.strip()
        for line in out.splitlines():
            assert len(line) <= 80, f"{command[:2]}: {line!r}"
        table_lines = [line for line in out.splitlines() if line[:1] in BOX]
        for line in table_lines:  # a table is drawn whole or not at all: every body line closes its box
            assert line.rstrip()[-1] in BOX, f"{command[:2]} wrapped: {line!r}"


def test_piped_output_is_plain_text_with_whole_values(db: Path, case_dir: Path) -> None:
    for command in _commands(db, case_dir):
        out = _cli(*command, terminal=False)
        assert not BOX & set(out), command
        blocks = [b for b in out.split("\n#") if "\t" in b]
        for block in blocks:
            lines = [line for line in block.splitlines() if "\t" in line]
            assert len({line.count("\t") for line in lines}) == 1, f"{command[:2]}: a row was split"


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_outputs_parse_with_unique_keys_and_utc_times(db: Path, case_dir: Path, fmt: str) -> None:
    sql = "SELECT time, actor, actor, operation FROM events ORDER BY time LIMIT 5"
    for command in [
        ["timeline", "query", str(db), sql],
        ["timeline", "show", str(db)],
        ["analyzers"],
        ["playbook", "list"],
        *_plans(case_dir),
    ]:
        out = _cli(*command, "--format", fmt, terminal=False)
        documents = [out] if fmt == "json" else out.splitlines()
        for text in documents:
            json.loads(text, object_pairs_hook=_unique_keys)
    records = json.loads(_cli("timeline", "query", str(db), sql, "--format", "json", terminal=False))
    assert set(records[0]) == {"time", "actor", "actor_2", "operation"}
    assert records[0]["actor"] == records[0]["actor_2"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", records[0]["time"])
    analysis = _cli("analyze", str(db), "--format", "json", terminal=False)
    json.loads(analysis, object_pairs_hook=_unique_keys)


def test_timeline_show_says_how_many_matched_and_pages_newest_first(db: Path) -> None:
    first = json.loads(_cli("timeline", "show", str(db), "--limit", "2", "--format", "json", terminal=False))
    second = json.loads(
        _cli("timeline", "show", str(db), "--limit", "2", "--page", "2", "--format", "json", terminal=False)
    )
    times = [row["time"] for row in first + second]
    assert times == sorted(times, reverse=True)
    assert len(first) == 2
    header = _cli("timeline", "show", str(db), "--limit", "2", terminal=False).splitlines()[0]
    assert re.fullmatch(r"# 6 events match; showing 1-2, newest first; next: --page 2", header)


def test_cells_and_json_values() -> None:
    assert unique_columns(["a", "b", "a", "a", "a_2"]) == ["a", "b", "a_2", "a_3", "a_2_2"]
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert cell_text(naive) == "2026-01-02T03:04:05Z"
    assert json_value({"t": datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))}) == {
        "t": "2026-01-02T03:04:05Z"
    }
    assert json_value([datetime(2026, 1, 2, tzinfo=UTC)]) == ["2026-01-02T00:00:00Z"]


def test_plans_and_verify_as_records(case_dir: Path) -> None:
    plan = json.loads(_cli(*_plans(case_dir)[0], "--format", "json", terminal=False))
    assert {"step", "title", "kind", "alongside", "api_call"} == set(plan[0])
    assert any(row["api_call"].startswith("ec2:CreateSnapshots") for row in plan)
    verdict = json.loads(_cli("verify", str(case_dir), "--format", "json", terminal=False))
    assert verdict[-1]["level"] == "ok"
    (case_dir / "logs/aws/cloudtrail/records.json.gz").write_bytes(b"tampered")
    broken = runner.invoke(app, ["verify", str(case_dir), "--format", "jsonl"], env={"TTY_COMPATIBLE": "0"})
    assert broken.exit_code == 1
    rows = [json.loads(line) for line in broken.stdout.splitlines()]
    assert rows[-1]["level"] == "broken"
    assert any(row["level"] == "problem" and "records.json.gz" in row["message"] for row in rows)


def test_ingest_and_verify_show_progress_on_a_terminal_only(case_dir: Path) -> None:
    for terminal in (True, False):
        for command, label in ((["timeline", "build"], "timeline: ingesting"), (["verify"], "verify: hashing")):
            done = runner.invoke(app, [*command, str(case_dir)], env={"TTY_COMPATIBLE": "1" if terminal else "0"})
            assert done.exit_code == 0, done.output
            assert (label in ANSI.sub("", done.stderr)) is terminal, (command, terminal, done.stderr)
