import json
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

import cloudir.cli  # noqa: F401 - registers the commands
from cloudir.analyze import run_analysis
from cloudir.cli.analyze import _json_lines
from cloudir.cli.apps import app
from cloudir.cli.rows import json_value
from cloudir.errors import CloudirError
from tests.analyze.builder import T0, event, routine, write_db

INCIDENT = T0 + timedelta(days=21, hours=2)
INTRUDER = {"source_ip": "192.0.2.66", "user_agent": "curl/8.0"}


def _timeline(tmp_path: Path) -> tuple[Path, list[dict[str, object]]]:
    rows = routine(["ListBuckets", "DescribeInstances", "ListUsers"], days=22)
    for name in ("bob", "carol"):
        rows += routine(
            ["ListBuckets", "DescribeInstances", "ListUsers", "GetRole"],
            days=22,
            actor=f"arn:aws:iam::111111111111:user/{name}",
        )
    attack = [
        event("StopLogging", service="cloudtrail", time=INCIDENT, **INTRUDER),
        event("CreateUser", time=INCIDENT + timedelta(minutes=5), **INTRUDER),
        event("CreateAccessKey", time=INCIDENT + timedelta(minutes=6), **INTRUDER),
    ]
    return write_db(tmp_path / "t.duckdb", rows + attack), attack


def test_findings_and_one_incident_for_a_short_attack(tmp_path: Path) -> None:
    db, _attack = _timeline(tmp_path)
    summary = run_analysis(db, baseline_until=T0 + timedelta(days=21))
    with duckdb.connect(str(db), read_only=True) as con:
        incidents = con.execute(
            "SELECT identity, score, finding_count, analyzers, finding_ids FROM incidents"
        ).fetchall()
        finding_scores = [r[0] for r in con.execute("SELECT score FROM findings").fetchall()]
        unlinked = con.execute("SELECT count(*) FROM findings WHERE incident_id IS NULL").fetchone()
        peers = con.execute("SELECT identity, peer FROM peer_groups ORDER BY ALL").fetchall()
    assert summary.findings == len(finding_scores) >= 3
    assert len(incidents) == 1
    identity, score, count, analyzers, finding_ids = incidents[0]
    assert identity == "arn:aws:iam::111111111111:user/alice"
    assert score >= max(finding_scores)
    assert count == summary.findings == len(finding_ids)
    assert {"sensitive_actions", "pattern_of_life"} <= set(analyzers)
    assert unlinked == (0,)
    assert ("arn:aws:iam::111111111111:user/bob", "arn:aws:iam::111111111111:user/carol") in peers


def test_default_window_is_the_last_week_and_finds_the_attack(tmp_path: Path) -> None:
    db, _ = _timeline(tmp_path)
    summary = run_analysis(db)
    assert summary.window.basis == "last-week"
    assert summary.window.incident_since == summary.window.baseline_until < INCIDENT
    with duckdb.connect(str(db), read_only=True) as con:
        rules = {r[0] for r in con.execute("SELECT rule FROM findings").fetchall()}
    assert {"aws-trail-tampering", "novel-activity"} <= rules


def test_missing_or_empty_timeline_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CloudirError, match="does not exist"):
        run_analysis(tmp_path / "nope.duckdb")
    with pytest.raises(CloudirError, match="has no events to analyze"):
        run_analysis(write_db(tmp_path / "empty.duckdb", []))


def test_cli_json_and_table(tmp_path: Path) -> None:
    db, attack = _timeline(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(db), "--baseline-until", "2026-01-22", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["summary"]["baseline_until"] == "2026-01-22T00:00:00Z"
    ids = {i for finding in document["findings"] for i in finding["event_ids"]}
    assert {e["event_id"] for e in attack} <= ids
    table = runner.invoke(app, ["analyze", str(db), "--incident-since", "2026-01-22T00:00:00"])
    assert table.exit_code == 0
    assert "Incidents (1)" in table.stdout
    missing = runner.invoke(app, ["analyze", str(tmp_path / "nope.duckdb")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    assert "Traceback" not in missing.output


def test_cli_json_streams_every_finding_and_the_table_reads_only_the_top(tmp_path: Path) -> None:
    """The JSON document is written row by row, one line each: it still holds every incident and finding of the
    tables, in rank order, and parses with none; the table view reads only ``--limit`` rows of each."""
    db, _ = _timeline(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(db), "--baseline-until", "2026-01-22", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    with duckdb.connect(str(db), read_only=True) as con:
        findings = [
            r[0] for r in con.execute("SELECT finding_id FROM findings ORDER BY score DESC, first_time").fetchall()
        ]
        incidents = [r[0] for r in con.execute("SELECT incident_id FROM incidents ORDER BY score DESC").fetchall()]
    assert len(findings) >= 2
    assert [f["finding_id"] for f in document["findings"]] == findings
    assert [i["incident_id"] for i in document["incidents"]] == incidents
    assert document["summary"]["findings"] == len(findings)
    rows = [json.loads(line.rstrip(",")) for line in result.stdout.splitlines() if line.startswith("    {")]
    assert [row["finding_id"] for row in rows if "finding_id" in row] == findings
    table = runner.invoke(app, ["analyze", str(db), "--baseline-until", "2026-01-22", "--limit", "1"])
    assert table.exit_code == 0
    assert f"Findings ({len(findings)}, top 1)" in table.stdout
    quiet = write_db(tmp_path / "quiet.duckdb", routine(["ListBuckets", "DescribeInstances"], days=22))
    none = runner.invoke(app, ["analyze", str(quiet), "--baseline-until", "2026-01-22", "--format", "json"])
    assert none.exit_code == 0
    assert json.loads(none.stdout)["findings"] == []


def test_json_rows_are_the_values_hostile_text_included(tmp_path: Path) -> None:
    """DuckDB writes each row's JSON: an attacker-chosen title (quotes, backslashes, control characters, line
    separators, non-ASCII, a JSON-looking text) stays one escaped string on one line, times are ISO-8601 UTC as
    ``utc_iso`` writes them (microseconds only when present), a JSON column is its text: the values the Python
    encoder gave."""
    db = tmp_path / "rows.duckdb"
    hostile = 'a"b\\c\n</script>\x00\x1f\u2028 \u00e9\u4e2d\U0001f600 {"x": 1}'
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE findings (finding_id VARCHAR, score INTEGER, first_time TIMESTAMP, last_time TIMESTAMP, "
            "title VARCHAR, mitre VARCHAR[], event_count BIGINT, profile JSON, session VARCHAR)"
        )
        con.execute(
            "INSERT INTO findings VALUES ('f1', 90, TIMESTAMP '2026-01-02 03:04:05', "
            "TIMESTAMP '2026-01-02 03:04:05.000123', ?, [?, 'T1078'], 3, ?, NULL), "
            "('f2', 80, NULL, TIMESTAMP '2026-01-02 00:00:00.5', 'plain', [], 0, NULL, ?)",
            [hostile, hostile, json.dumps({"explanation": hostile}), hostile],
        )
        cursor = con.execute("SELECT * FROM findings ORDER BY score DESC")
        names = [d[0] for d in cursor.description]
        expected = [json_value(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]
    lines = list(_json_lines(db, "findings", "score DESC"))
    assert [json.loads(line) for line in lines] == expected
    assert all("\n" not in line and "\x00" not in line for line in lines)
    assert expected[0]["last_time"] == "2026-01-02T03:04:05.000123Z"
    assert expected[1]["last_time"] == "2026-01-02T00:00:00.500000Z"


def test_cli_lists_the_analyzers() -> None:
    result = CliRunner().invoke(app, ["analyzers"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in ("pattern_of_life", "peer_groups", "recon_burst", "beaconing", "sensitive_actions", "sigma"):
        assert name in result.stdout
