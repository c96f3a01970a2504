"""Multi-event rules as data: every rule's own positive and negative event sets, findings that list exactly the
events of the pattern, hostile values as data, and the engine reached through ``cloudir analyze``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from cloudir.analyze.base import CANDIDATES_DDL, AnalysisWindow
from cloudir.analyze.catalog import PLATFORMS, TECHNIQUES, build_rule_events
from cloudir.analyze.correlation import MAX_SHOWN, load_rules, run
from cloudir.analyze.prepare import build_event_view
from cloudir.cli import app
from tests.analyze.builder import T0, event, write_db
from tests.analyze.test_catalog import PLATFORM_DEFAULTS

SET_SPACING = timedelta(days=1)
"""Each sample set starts a day after the one before: longer than any rule's window and sequence time."""


def _substitute(value: Any, index: int) -> Any:
    if isinstance(value, str):
        return value.replace("{n}", str(index))
    if isinstance(value, dict):
        return {key: _substitute(item, index) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, index) for item in value]
    return value


def _sample_set(platform: str, samples: list[dict[str, Any]], start: Any) -> list[dict[str, Any]]:
    """Timeline rows of one sample set: ``repeat`` copies ``every`` seconds apart from ``at``, ``{n}`` = index."""
    rows = []
    for sample in samples:
        fields = {**PLATFORM_DEFAULTS[platform], **sample}
        repeat, every, at = fields.pop("repeat", 1), fields.pop("every", 30), fields.pop("at", 0)
        for index in range(repeat):
            concrete = _substitute(fields, index)
            when = start + timedelta(seconds=at + index * every)
            rows.append(event(concrete.pop("operation"), time=when, **concrete))
    return rows


def _candidates(tmp_path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    db = write_db(tmp_path / "sets.duckdb", rows)
    with duckdb.connect(str(db)) as con:
        build_event_view(con, AnalysisWindow(T0, T0))
        con.execute(CANDIDATES_DDL)
        run(con, build_rule_events(con, "ev", [load_rules().rule_set()])["correlation"])
        cursor = con.execute("SELECT * FROM candidates ORDER BY rule, first_time")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_every_rule_fires_on_each_positive_set_with_exactly_its_events_and_never_on_a_negative(
    tmp_path: Path,
) -> None:
    rows: list[dict[str, Any]] = []
    sets: list[tuple[str, str, set[str]]] = []
    for rule in load_rules().rules:
        for kind in ("positive", "negative"):
            for samples in rule.samples[kind]:
                made = _sample_set(rule.platform, samples, T0 + SET_SPACING * len(sets))
                rows.extend(made)
                sets.append((rule.rule_id, kind, {row["event_id"] for row in made}))
    found = _candidates(tmp_path, rows)
    for rule_id, kind, ids in sets:
        fired = [c for c in found if c["rule"] == rule_id and set(c["event_ids"]) & ids]
        if kind == "negative":
            assert fired == [], (rule_id, "negative set fired")
            continue
        assert len(fired) == 1, (rule_id, "positive set")
        [candidate] = fired
        assert set(candidate["event_ids"]) <= ids
        assert candidate["event_count"] == len(candidate["event_ids"])
        assert len(candidate["explanation"]) <= 300
        assert "\n" not in candidate["explanation"]


def test_rules_are_well_formed_and_name_known_techniques() -> None:
    rules = load_rules().rules
    assert {rule.platform for rule in rules} <= set(PLATFORMS)
    assert all(rule.references and rule.mitre in TECHNIQUES for rule in rules)
    assert {rule.kind for rule in rules} == {"threshold", "travel"}
    assert any(rule.then_sql for rule in rules)


def _brute_force(actor: str, source_ip: str, user_agent: str, start: Any) -> list[dict[str, Any]]:
    failures = [
        event(
            "ConsoleLogin",
            actor=actor,
            service="signin",
            source_ip=source_ip,
            user_agent=user_agent,
            time=start + timedelta(seconds=15 * i),
            raw={"responseElements": {"ConsoleLogin": "Failure"}, "errorMessage": "Failed authentication"},
        )
        for i in range(6)
    ]
    success = event(
        "ConsoleLogin",
        actor=actor,
        service="signin",
        source_ip=source_ip,
        user_agent=user_agent,
        time=start + timedelta(minutes=5),
        raw={"responseElements": {"ConsoleLogin": "Success"}},
    )
    return [*failures, success]


def test_findings_list_the_pattern_events_in_time_order_and_capped(tmp_path: Path) -> None:
    carol = "arn:aws:iam::111111111111:user/carol"
    success = {"responseElements": {"ConsoleLogin": "Success"}}
    noise = event("ConsoleLogin", service="signin", time=T0 + timedelta(seconds=40), actor=carol, raw=success)
    rows = _brute_force("arn:aws:iam::111111111111:user/alice", "203.0.113.9", "Mozilla/5.0", T0)
    deletions = [event("DeleteObject", service="s3", time=T0 + timedelta(hours=3, seconds=i)) for i in range(600)]
    found = {c["rule"]: c for c in _candidates(tmp_path, [*rows, noise, *deletions])}
    brute = found["aws-console-brute-force-success"]
    assert brute["event_ids"] == [row["event_id"] for row in rows]
    assert noise["event_id"] not in brute["event_ids"]
    assert brute["explanation"].startswith(
        "6 failed console sign-ins for arn:aws:iam::111111111111:user/alice in 1 min"
    )
    assert "then signin:ConsoleLogin" in brute["explanation"]
    mass = found["aws-mass-deletion"]
    assert mass["event_count"] == 600
    assert mass["event_ids"] == [row["event_id"] for row in deletions][:500]


@pytest.mark.parametrize(
    "hostile",
    [
        "arn:aws:iam::111111111111:user/o'brien'); DROP TABLE events; --",
        "arn:aws:iam::111111111111:user/<b>{count}</b>\n{group}" + "x" * 300,
    ],
)
def test_attacker_values_stay_data_in_sql_and_explanation(tmp_path: Path, hostile: str) -> None:
    rows = _brute_force(hostile, "203.0.113.9'; --", "curl/8\r\n<b>ua</b>", T0)
    [finding] = [c for c in _candidates(tmp_path, rows) if c["rule"] == "aws-console-brute-force-success"]
    assert finding["identity"] == hostile
    assert finding["event_ids"] == [row["event_id"] for row in rows]
    shown = hostile.replace("\n", " ")[:MAX_SHOWN]
    assert shown in finding["explanation"]
    assert "\n" not in finding["explanation"]
    assert len(finding["explanation"]) < 300


def _cloudtrail(name: str, when: Any, user: str, result: str | None, source_ip: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "signin.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": source_ip,
        "userAgent": "Mozilla/5.0",
        "eventID": f"{user}-{when.timestamp():.0f}-{result}",
        "eventType": "AwsConsoleSignIn",
        "recipientAccountId": "111111111111",
        "userIdentity": {"type": "IAMUser", "accountId": "111111111111",
                         "arn": f"arn:aws:iam::111111111111:user/{user}", "userName": user},
        "responseElements": {"ConsoleLogin": result},
    }  # fmt: skip
    if result == "Failure":
        record["errorMessage"] = "Failed authentication"
    return record


def test_cloudir_analyze_reports_a_password_spray_from_a_cloudtrail_file(tmp_path: Path) -> None:
    users = [f"user{i}" for i in range(7)]
    records = [
        _cloudtrail("ConsoleLogin", T0 + timedelta(minutes=2 * i), user, "Failure", "198.51.100.66")
        for i, user in enumerate(users)
    ]
    records.append(_cloudtrail("ConsoleLogin", T0 + timedelta(hours=5), "user0", "Success", "192.0.2.10"))
    log = tmp_path / "trail.json"
    log.write_text(json.dumps({"Records": records}), encoding="utf-8")
    db = tmp_path / "timeline.duckdb"
    runner = CliRunner()
    ingest = runner.invoke(app, ["timeline", "ingest", str(log), "--db", str(db)])
    assert ingest.exit_code == 0, ingest.output
    result = runner.invoke(app, ["analyze", str(db)])
    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT f.explanation, list(e.source_position ORDER BY e.source_position) FROM findings f, "
            "unnest(f.event_ids) u(id) JOIN events e ON e.event_id = u.id "
            "WHERE f.rule = 'aws-console-password-spraying' GROUP BY f.explanation"
        ).fetchall()
    assert rows == [
        (
            (
                "from 198.51.100.66: failed console sign-ins for 7 identities in 12 min "
                "(arn:aws:iam::111111111111:user/user0, arn:aws:iam::111111111111:user/user1, "
                "arn:aws:iam::111111111111:user/user2, ...)"
            ),
            list(range(7)),
        )
    ]
