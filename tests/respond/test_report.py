"""The report: self-contained HTML, attacker strings escaped, loads in a real browser without console errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.analyze.base import FINDINGS_DDL, INCIDENTS_DDL
from cloudir.case import Case
from cloudir.cli import app
from cloudir.custody import ApiCall, verify_case
from cloudir.report import incident_summary, write_report
from cloudir.report.data import load_report_data
from cloudir.timeline.schema import EVENTS_DDL

runner = CliRunner()
HOSTILE_UA = '"><script>console.error("PWNED-UA")</script><img src=x onerror="console.error(\'PWNED-IMG\')">'
HOSTILE_ACTOR = "arn:aws:iam::123456789012:user/<b onmouseover=alert(1)>evil</b>"
HOSTILE_TITLE = "</td></tr></table><script>console.error('PWNED-TITLE')</script>"


@pytest.fixture
def hostile_case(tmp_path: Path) -> Path:
    """A case whose timeline, findings, triggers and coverage carry attacker-controlled markup."""
    case = Case.create(tmp_path / "case", description="report test")
    with case.action("acquire.read", target="aws:123456789012:us-east-1:i-0abc", step="capture.instance") as act:
        act.api_calls.append(ApiCall("ec2", "DescribeInstances", "us-east-1", "req-1", "ok"))
        case.write_json("artifacts/aws/i-0abc/instance.json", {"Tags": [{"Key": "Name", "Value": HOSTILE_TITLE}]})
    trigger = {
        "source": "guardduty",
        "cloud": "aws",
        "account": "123456789012",
        "region": "us-east-1",
        "target": {"kind": "instance", "value": "i-0abc<script>", "location": "us-east-1"},
        "time": "2026-11-20T14:05:41Z",
        "severity": "high",
        "finding_type": "Backdoor:EC2/C&CActivity.B",
        "finding_id": "gd-1",
        "title": HOSTILE_TITLE,
        "principal": None,
        "raw": {},
    }
    case.write_json("triggers/gd-1.json", trigger)
    case.custody.append("trigger.received", target="gd-1", details={"finding_id": "gd-1"})
    case.write_json("logs/aws/coverage.json", {"regions": {"us-east-1": {"gaps": [HOSTILE_UA]}}})
    db = case.root / "timeline.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(EVENTS_DDL)
        con.execute(FINDINGS_DDL)
        con.execute(INCIDENTS_DDL)
        con.execute(
            """
            INSERT INTO events (event_uid, time, cloud, source_format, account, region, service, operation, actor,
                                user_agent, source_ip, status, event_id, is_responder)
            SELECT 'aws:' || i, TIMESTAMP '2026-11-20 12:00:00' + INTERVAL (i) MINUTE, 'aws', 'cloudtrail',
                   '123456789012', 'us-east-1', 'iam', CASE WHEN i % 3 = 0 THEN 'ListUsers' ELSE 'GetUser' END,
                   CASE WHEN i % 4 = 0 THEN ? ELSE 'arn:aws:iam::123456789012:user/admin' END, ?, '203.0.113.9',
                   'success', 'e' || i, i % 10 = 0
            FROM range(200) t(i)
            """,
            [HOSTILE_ACTOR, HOSTILE_UA],
        )
        con.execute(
            """
            INSERT INTO findings BY NAME SELECT 'f1' AS finding_id, 'recon' AS analyzer, 'burst' AS rule, 91 AS score,
                'critical' AS severity, ?::VARCHAR AS actor, ?::VARCHAR AS identity, 'ASIAX' AS session,
                TIMESTAMP '2026-11-20 12:40:00' AS first_time, TIMESTAMP '2026-11-20 13:00:00' AS last_time,
                ?::VARCHAR AS title, ?::VARCHAR AS explanation, ['T1087'] AS mitre, ['e40', 'e44'] AS event_ids,
                250 AS event_count, 'i1' AS incident_id
            """,
            [HOSTILE_ACTOR, HOSTILE_ACTOR, HOSTILE_TITLE, f"user agent {HOSTILE_UA} listed every user"],
        )
        con.execute(
            """
            INSERT INTO incidents VALUES ('i1', 91, 'critical', ?, ['ASIAX'], TIMESTAMP '2026-11-20 12:40:00',
                TIMESTAMP '2026-11-20 13:00:00', 1, ['recon'], ['T1087'], ['f1'], ?)
            """,
            [HOSTILE_ACTOR, HOSTILE_TITLE],
        )
    with case.action("analyze", target="timeline.duckdb"):
        case.record_existing("timeline.duckdb")
    return case.root


def test_a_finding_counts_all_its_events_not_only_the_ids_it_lists(hostile_case: Path) -> None:
    [finding] = load_report_data(hostile_case).findings
    assert finding["event_count"] == 250  # event_ids is capped; event_count is the whole count


def test_html_report_escapes_attacker_strings_and_is_self_contained(hostile_case: Path) -> None:
    out = write_report(hostile_case, hostile_case / "reports" / "report.html")
    html = out.read_text(encoding="utf-8")
    assert html.count("<script>") == 1  # only the report's own script
    for marker in ("PWNED-UA", "PWNED-IMG", "PWNED-TITLE"):
        assert marker in html  # the text is there, as text
    assert "<img" not in html
    assert "<b onmouseover" not in html
    assert "&lt;script&gt;console.error(&#34;PWNED-UA&#34;)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"@import|url\(", html)
    for section in (
        "What happened",
        "Impact",
        "Attack timeline",
        "Incidents",
        "Evidence",
        "Log coverage",
        "What cloudir did",
        "Appendix: cited events",
    ):
        assert section in html
    assert "<svg" in html
    assert "finding (score 91)" in html
    assert "VERIFIED" in html
    assert "artifacts/aws/i-0abc/instance.json" in html
    assert verify_case(hostile_case).ok  # the report itself was hashed into custody


def test_a_hostile_beacon_destination_is_drawn_as_text(hostile_case: Path) -> None:
    """The network view of a beacon finding: its destination (written by whoever wrote the flow records) is text."""
    with duckdb.connect(str(hostile_case / "timeline.duckdb")) as con:
        con.execute(
            """
            INSERT INTO findings BY NAME SELECT 'f2' AS finding_id, 'beaconing' AS analyzer, 'flow-beacon' AS rule,
                80 AS score, 'critical' AS severity, ?::VARCHAR AS actor, ?::VARCHAR AS identity, ?::VARCHAR AS session,
                TIMESTAMP '2026-11-20 12:00:00' AS first_time, TIMESTAMP '2026-11-20 14:00:00' AS last_time,
                ?::VARCHAR AS title, 'beacon' AS explanation, ['T1071'] AS mitre, [] AS event_ids, 0 AS event_count,
                json_object('op_key', 'flow:' || ? || ':443/6') AS profile, 'i1' AS incident_id
            """,
            [HOSTILE_ACTOR, HOSTILE_ACTOR, HOSTILE_ACTOR, HOSTILE_TITLE, HOSTILE_UA],
        )
        con.execute(
            """
            CREATE TABLE network_beacons AS SELECT ?::VARCHAR AS workload, ?::VARCHAR AS dst_addr, 443 AS dst_port,
                6 AS protocol, 600.0 AS period, TIMESTAMP '2026-11-20 12:00:00' AS first_time,
                TIMESTAMP '2026-11-20 14:00:00' AS last_time,
                [{'hour': TIMESTAMP '2026-11-20 12:00:00', 'connections': 6},
                 {'hour': TIMESTAMP '2026-11-20 13:00:00', 'connections': 5}] AS series
            """,
            [HOSTILE_ACTOR, HOSTILE_UA],
        )
    with Case.open(hostile_case) as case, case.action("analyze", target="timeline.duckdb"):
        case.record_existing("timeline.duckdb")
    html = write_report(hostile_case, hostile_case / "reports" / "report.html").read_text(encoding="utf-8")
    beacon = re.search(r'<tr class="beacon">(.*?)</tr>', html, re.S)
    assert beacon is not None, "the hostile beacon's network view is drawn"
    assert beacon.group(1).count("connections per hour to &#34;&gt;&lt;script&gt;") == 2  # aria-label and caption
    assert html.count("<script>") == 1  # only the report's own script
    assert "<img" not in html
    assert verify_case(hostile_case).ok


def test_summary_formats(hostile_case: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(hostile_case), "--format", "md", "--out", str(tmp_path / "s.md")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "s.md").read_text()
    assert "## When detected" in markdown
    assert "## What is affected" in markdown
    assert "## Evidence" in markdown
    assert "<script>" not in markdown
    assert "\\<script\\>" in markdown
    summary = incident_summary(hostile_case)
    assert summary["detected"]["earliest_suspicious_activity"] == "2026-11-20T12:40:00Z"
    assert summary["affected"]["identities"] == [HOSTILE_ACTOR]
    assert summary["evidence"]["custody_verified"] is True
    result = runner.invoke(app, ["report", str(hostile_case), "--format", "json", "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s.json").read_text())["affected"]["incidents"][0]["incident_id"] == "i1"


def test_report_of_a_case_without_timeline(tmp_path: Path) -> None:
    case = Case.create(tmp_path / "empty")
    html = write_report(case.root, tmp_path / "out.html").read_text()
    assert "no timeline events" in html
    assert "VERIFIED" in html
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "is not a cloudir case" in result.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install -y chromium); in CI (CI set) this test always runs",
)
def test_report_loads_in_headless_chromium_without_console_errors(hostile_case: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None, "CI must install chromium (.ci/run does)"
    out = write_report(hostile_case, tmp_path / "report.html")
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console_lines = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console_lines == [], console_lines  # no script error, no CSP violation, no injected script ran
    assert 'data-ready="true"' in proc.stdout  # the report's own script ran to the end
    assert "What happened" in proc.stdout
    assert "PWNED-TITLE" in proc.stdout
