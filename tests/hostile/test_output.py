"""Attacker-chosen values reach the terminal as text: no markup, no escape sequences, no crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from cloudir.cli import app
from tests.respond.conftest import sample

runner = CliRunner()
CLOUDIR = [sys.executable, "-m", "cloudir"]
LINK = "[link=https://evil.example]docs[/link]"
CLEAR = "\x1b[2J\x1b[HFAKE: custody verified OK"
CLOSE = "[/bold]"


def _planted_trail(folder: Path) -> Path:
    record = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "arn": f"arn:aws:iam::111122223333:user/{CLEAR}",
            "accountId": "111122223333",
        },
        "eventTime": "2026-11-20T10:00:00Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": f"{CLOSE}ListUsers",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "userAgent": LINK,
        "requestID": "r-1",
        "eventID": "e-1",
        "eventType": "AwsApiCall",
        "recipientAccountId": "111122223333",
    }
    path = folder / "trail.json"
    path.write_text(json.dumps({"Records": [record]}), encoding="utf-8")
    return path


def test_query_table_on_a_terminal_shows_planted_markup_and_escapes_as_text(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    ingested = runner.invoke(app, ["timeline", "ingest", str(_planted_trail(tmp_path)), "--db", str(db)])
    assert ingested.exit_code == 0, ingested.output
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "400", "TERM": "xterm-256color"}
    shown = subprocess.run(
        [*CLOUDIR, "timeline", "query", str(db), "SELECT actor, operation, user_agent FROM events"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "\x1b]8;" not in shown.stdout  # no live hyperlink
    assert "\x1b[2J" not in shown.stdout  # no screen clearing
    assert "\x1b[H" not in shown.stdout  # no cursor move
    assert "\\x1b[2J\\x1b[HFAKE" in shown.stdout
    assert LINK in shown.stdout
    assert f"{CLOSE}ListUsers" in shown.stdout


def test_playbook_plan_for_a_hostile_finding_prints_it_as_text(tmp_path: Path) -> None:
    finding = sample("guardduty_ec2_eventbridge.json")
    finding["detail"]["id"] = f"{CLOSE}{CLEAR}"
    finding["detail"]["resource"]["instanceDetails"]["instanceId"] = f"i-{LINK}"
    path = tmp_path / "finding.json"
    path.write_text(json.dumps(finding), encoding="utf-8")
    result = runner.invoke(app, ["playbook", "plan", "--trigger", str(path)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert f"finding {CLOSE}\\x1b[2J\\x1b[HFAKE" in result.output
    assert f"i-{LINK}" in result.output


def test_an_error_naming_hostile_input_is_one_line_not_a_traceback() -> None:
    result = runner.invoke(
        app, ["playbook", "plan", "--cloud", "aws", "--instance", "i-1", "--param", f"{CLOSE}\x1b[2J=1"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --param {CLOSE}\\x1b[2J: unknown parameter")
    assert "Traceback" not in result.output


def test_query_csv_neutralizes_formulas_and_markdown_escapes_cells(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    assert runner.invoke(app, ["timeline", "ingest", str(_planted_trail(tmp_path)), "--db", str(db)]).exit_code == 0
    sql = (
        "SELECT '=cmd|'' /C calc''!A0' AS a, '+1+1' AS b, '-2+3' AS c, '@SUM(A1)' AS d, chr(9) || '=1' AS e, "
        "chr(13) || '=1' AS f, 'x|y' || chr(10) || '| z |' AS g, -5 AS n, user_agent FROM events"
    )
    csv_out = runner.invoke(app, ["timeline", "query", str(db), sql, "--format", "csv"])
    assert csv_out.exit_code == 0, csv_out.output
    header, row = csv_out.output.splitlines()
    assert header == "a,b,c,d,e,f,g,n,user_agent"
    assert row == (
        "'=cmd|' /C calc'!A0,'+1+1,'-2+3,'@SUM(A1),'\\t=1,'\\r=1,x|y\\n| z |,-5,[link=https://evil.example]docs[/link]"
    )
    md_out = runner.invoke(app, ["timeline", "query", str(db), sql, "--format", "markdown"])
    assert md_out.exit_code == 0, md_out.output
    lines = md_out.output.splitlines()
    assert len(lines) == 3  # the planted newline did not start a row
    assert "| x\\|y\\n\\| z \\| |" in lines[2]


def test_analyze_prints_a_hostile_sigma_rule_and_its_findings_as_text(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    ingested = runner.invoke(app, ["timeline", "ingest", str(_planted_trail(tmp_path)), "--db", str(db)])
    assert ingested.exit_code == 0, ingested.output
    rules = tmp_path / "rules"
    rules.mkdir()
    rule = {
        "title": f"{LINK} {CLEAR} {CLOSE}",
        "id": "5f0b3c2e-1111-4a4a-8c8c-000000000001",
        "status": "test",
        "logsource": {"product": "aws", "service": "cloudtrail"},
        "detection": {"selection": {"eventSource": "iam.amazonaws.com"}, "condition": "selection"},
        "level": "high",
    }
    (rules / "hostile.yml").write_text(json.dumps(rule), encoding="utf-8")
    (rules / "[bold]broken.yml").write_text(json.dumps({**rule, "detection": {"condition": CLOSE}}))
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "400", "TERM": "xterm-256color"}
    printed = ""
    for args in (["analyze", str(db), "--sigma-rules", str(rules)], ["analyzers"]):
        shown = subprocess.run([*CLOUDIR, *args], capture_output=True, text=True, env=env, check=False)
        assert shown.returncode == 0, shown.stderr
        printed += shown.stdout + shown.stderr
    assert "\x1b]8;" not in printed  # no live hyperlink
    assert "\x1b[2J" not in printed  # no screen clearing
    assert "\\x1b[2J\\x1b[HFAKE" in printed  # the rule's title, shown as text in its finding
    assert "[bold]broken.yml" in printed  # the rule that failed to convert, named as text


def test_verify_names_a_tampered_hostile_artifact_as_text(tmp_path: Path) -> None:
    from cloudir.case import Case

    root = tmp_path / f"case{LINK.replace('/', '_')}\x1b[2J"
    case = Case.create(root)
    name = f"artifacts/{CLOSE}{CLEAR.replace('/', '_')}.txt"  # an artifact named after attacker data
    case.write_bytes(name, b"genuine")
    case.close()
    (root / name).write_bytes(b"tampered")
    result = runner.invoke(app, ["verify", str(root)], env={"COLUMNS": "400"})
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert "\x1b" not in result.output  # neither the folder's nor the artifact's escapes reach the terminal
    assert f"{CLOSE}\\x1b[2J\\x1b[HFAKE" in result.output  # the tampered artifact, named as text


def test_the_internal_error_handler_prints_hostile_text_as_text(tmp_path: Path) -> None:
    from tests.respond.conftest import guardduty_for

    finding = tmp_path / "finding.json"
    finding.write_text(
        json.dumps(guardduty_for("i-0123456789abcdef0", "123456789012", "us-east-1", "2026-11-20T10:00:00Z"))
    )
    hostile = f"{CLOSE}{LINK}{CLEAR}"  # an adapter setting nobody expects: the adapter raises TypeError naming it
    env = {
        **os.environ,
        "FORCE_COLOR": "1",
        "COLUMNS": "400",
        "TERM": "xterm-256color",
        "CLOUDIR_PROVIDER_CONFIG": json.dumps({"aws": {hostile: 1}}),
    }
    env.pop("CLOUDIR_DEBUG", None)
    shown = subprocess.run(
        [*CLOUDIR, "respond", "--trigger", str(finding), "--case", str(tmp_path / "case")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 1, shown.stderr
    assert "Traceback" not in shown.stderr
    assert "internal error:" in shown.stderr
    assert "TypeError" in shown.stderr
    assert "\x1b]8;" not in shown.stderr  # no live hyperlink
    assert "\x1b[2J" not in shown.stderr  # no screen clearing
    assert f"{CLOSE}{LINK}\\x1b[2J\\x1b[HFAKE" in shown.stderr
