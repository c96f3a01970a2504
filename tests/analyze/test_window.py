"""The default window: from the case's trigger, else the data; short history falls back to tenant rarity."""

import json
from datetime import timedelta
from pathlib import Path

import duckdb
from typer.testing import CliRunner

import cloudir.cli  # noqa: F401 - registers the commands
from cloudir.analyze import run_analysis
from cloudir.case import Case
from cloudir.cli.apps import app
from tests.analyze.builder import T0, event, routine, write_db

STRANGER = {"source_ip": "192.0.2.66", "user_agent": "curl/8.0"}
TEAM = [f"arn:aws:iam::111111111111:user/dev{index}" for index in range(6)]


def _team(days: int, *, start: timedelta = timedelta(0)) -> list[dict[str, object]]:
    rows = []
    for actor in TEAM:
        rows += routine(["ListBuckets", "DescribeInstances"], days=days, per_day=2, start=T0 + start, actor=actor)
    return rows


def _stored(db: Path) -> tuple[object, ...]:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT basis, history, incident_since, reason FROM analysis_window").fetchone()
    assert row is not None
    return tuple(row)


def test_long_history_scores_the_last_week_and_says_so_through_the_cli(tmp_path: Path) -> None:
    early = event("CreateAccessKey", actor=TEAM[0], time=T0 + timedelta(days=13, hours=13), **STRANGER)
    db = write_db(tmp_path / "t.duckdb", [*_team(20), early])
    result = CliRunner().invoke(app, ["analyze", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    summary = document["summary"]
    assert summary["window_basis"] == "last-week"
    assert summary["history"] == "identity"
    assert summary["incident_since"] == "2026-01-13T10:01:00Z"  # 7 days before the last event
    assert _stored(db)[:2] == ("last-week", "identity")
    # six days before the end: scored by rarity (new network and user agent), not only by the catalog
    found = {(f["analyzer"], f["rule"]) for f in document["findings"] if early["event_id"] in f["event_ids"]}
    assert {("sensitive_actions", "aws-access-key-created"), ("pattern_of_life", "novel-activity")} <= found
    table = CliRunner().invoke(app, ["analyze", str(db)], env={"COLUMNS": "300"})
    assert "last-week: no change point in the last week: the last 7 days" in table.stdout
    assert "per-identity baselines" in table.stdout


def test_ten_days_of_history_score_the_last_day(tmp_path: Path) -> None:
    db = write_db(tmp_path / "t.duckdb", _team(10))
    summary = run_analysis(db)
    assert (summary.window.basis, summary.window.history) == ("last-day", "identity")
    assert summary.window.incident_since == T0 + timedelta(days=8, hours=10, minutes=1)  # 24 h before the last event
    assert "too little history before it for a baseline: the last 24 h" in summary.window.reason


def test_a_burst_of_first_seen_activity_in_the_last_week_is_the_change_point(tmp_path: Path) -> None:
    intruder = [
        event(op, actor=TEAM[1], time=T0 + timedelta(days=16, hours=3, minutes=i), **STRANGER)
        for i, op in enumerate(f"Op{n}" for n in range(30))
    ]
    db = write_db(tmp_path / "t.duckdb", [*_team(20), *intruder])
    summary = run_analysis(db)
    assert summary.window.basis == "change-point"
    assert summary.window.incident_since == T0 + timedelta(days=16)
    assert "30 first-seen principal/operation pairs" in summary.window.reason


def test_a_short_log_is_scored_whole_with_tenant_rarity_not_everyone_new(tmp_path: Path) -> None:
    rows = _team(1)
    first_hit = event("StopLogging", service="cloudtrail", actor=TEAM[2], time=T0 + timedelta(hours=9), **STRANGER)
    odd = [
        event(f"Get{n}", service="secretsmanager", actor=TEAM[3], time=T0 + timedelta(hours=10, minutes=n), **STRANGER)
        for n in range(3)
    ]
    db = write_db(tmp_path / "t.duckdb", [*rows, first_hit, *odd])
    summary = run_analysis(db)
    assert (summary.window.basis, summary.window.history) == ("short-history", "tenant")
    assert summary.window.incident_since == T0 + timedelta(hours=9)
    assert "rarity is judged against peer groups and the other identities" in summary.window.history_reason
    assert "a history: events on 1 of the 1 days it spans" in summary.window.history_reason  # one continuous log
    with duckdb.connect(str(db), read_only=True) as con:
        findings = con.execute("SELECT rule, identity, event_ids, explanation FROM findings").fetchall()
    rules = {(rule, identity) for rule, identity, _, _ in findings}
    assert ("aws-trail-tampering", TEAM[2]) in rules  # the first event of the log is scored
    assert ("tenant-rarity", TEAM[3]) in rules  # what no other identity of the account does
    assert not any(rule == "new-identity" for rule, _ in rules)
    assert {identity for _, identity in rules} <= {TEAM[2], TEAM[3]}
    tenant = next(f for f in findings if f[0] == "tenant-rarity" and f[1] == TEAM[3])
    assert "secretsmanager:Get0 (1 events): no baseline; unseen for its peer group (0 of 5 peers)" in tenant[3]


def test_the_case_trigger_sets_the_window(tmp_path: Path) -> None:
    case = tmp_path / "case"
    Case.create(case).close()  # a real case: analyze records the database it rewrites in its custody log
    (case / "triggers").mkdir()
    trigger_time = T0 + timedelta(days=12, hours=6)
    (case / "triggers" / "f1.json").write_text(
        json.dumps({"finding_id": "gd-1[bold]", "source": "guardduty", "time": trigger_time.isoformat() + "Z"})
    )
    db = write_db(case / "timeline.duckdb", _team(20))
    summary = run_analysis(db)
    assert summary.window.basis == "trigger"
    assert summary.window.incident_since == trigger_time - timedelta(hours=24)
    assert "guardduty gd-1[bold]" in summary.window.reason
    assert _stored(db)[2] == trigger_time - timedelta(hours=24)
    result = CliRunner().invoke(app, ["analyze", str(db)], env={"COLUMNS": "300"})
    assert "gd-1[bold]" in result.stdout  # printed as text, never as console markup


def test_familiarity_needs_several_days_over_a_week_and_never_goes_below_the_floor(tmp_path: Path) -> None:
    burst = [
        event("GetPasswordData", service="ec2", actor=TEAM[4], time=T0 + timedelta(days=3, minutes=m))
        for m in range(0, 12, 2)
    ]
    habit = [
        event("CreateAccessKey", actor=TEAM[5], time=T0 + timedelta(days=day, hours=15)) for day in range(0, 20, 2)
    ]
    db = write_db(tmp_path / "t.duckdb", [*_team(20), *burst, *habit])
    run_analysis(db, baseline_until=T0 + timedelta(days=19), min_score=0)
    with duckdb.connect(str(db), read_only=True) as con:
        scores = dict(
            con.execute(
                "SELECT rule, max(score) FROM findings WHERE analyzer = 'sensitive_actions' GROUP BY rule"
            ).fetchall()
        )
        habit_scores = [
            r[0] for r in con.execute("SELECT score FROM findings WHERE rule = 'aws-access-key-created'").fetchall()
        ]
        words = con.execute("SELECT explanation FROM findings WHERE rule = 'aws-password-data'").fetchone()
    assert scores["aws-password-data"] >= 60  # six calls in 12 minutes of one day are not a habit
    assert words is not None
    assert "never seen for this identity on another baseline day" in words[0]
    assert set(habit_scores) == {55 // 2}  # a familiar key rotation sinks to the floor, not below


def test_findings_cap_their_evidence_with_a_count_a_short_explanation_and_the_profile(tmp_path: Path) -> None:
    sweep = [
        event(
            "Describe" + chr(65 + n // 26) + chr(97 + n % 26),
            service="ec2",
            actor=TEAM[0],
            time=T0 + timedelta(days=19, hours=13, seconds=n),
            **STRANGER,
        )
        for n in range(150)
    ]
    db = write_db(tmp_path / "t.duckdb", [*_team(20), *sweep])
    first = run_analysis(db)
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT rule, event_ids, event_count, explanation, profile FROM findings ORDER BY finding_id"
        ).fetchall()
    run_analysis(db)
    with duckdb.connect(str(db), read_only=True) as con:
        again = con.execute(
            "SELECT rule, event_ids, event_count, explanation, profile FROM findings ORDER BY finding_id"
        ).fetchall()
    assert first.findings == len(rows) > 0
    assert [r[:4] for r in rows] == [r[:4] for r in again]  # the same evidence, in the same order, every run
    recon = next(r for r in rows if r[0] == "enumeration-burst")
    sweep_ids = [e["event_id"] for e in sweep]
    assert recon[1] == sweep_ids[: len(recon[1])]  # by time: the first ones of the burst
    assert len(recon[1]) == 100
    assert recon[2] == 150
    novel = next(r for r in rows if r[0] == "novel-activity")
    assert len(novel[3]) <= 400
    profile = json.loads(novel[4])
    assert len(profile["explanation"]) > 400  # 150 new operations spelt out in full
    assert profile["event_count"] == novel[2] >= 150


def test_a_new_hire_doing_the_groups_routine_is_not_raised_but_what_the_group_never_does_is(tmp_path: Path) -> None:
    role = "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Developer_91c3"
    team = [f"{role}/dev{index}@corp.example" for index in range(5)]
    rows = []
    for actor in team:
        rows += routine(["ListFunctions20150331"], days=28, per_day=2, actor=actor, actor_type="AssumedRole",
                        service="lambda")  # fmt: skip
        rows += [
            event("UpdateFunctionCode20150331v2", actor=actor, actor_type="AssumedRole", service="lambda",
                  time=T0 + timedelta(days=day, hours=15))
            for day in range(0, 28, 3)
        ]  # fmt: skip
    newcomer = f"{role}/dev9@corp.example"
    deploy = event("UpdateFunctionCode20150331v2", actor=newcomer, actor_type="AssumedRole", service="lambda",
                   time=T0 + timedelta(days=25, hours=11))  # fmt: skip
    key = event("CreateAccessKey", actor=newcomer, actor_type="AssumedRole", time=T0 + timedelta(days=26, hours=11))
    db = write_db(tmp_path / "t.duckdb", [*rows, deploy, key])
    result = CliRunner().invoke(app, ["analyze", str(db), "--format", "json", "--min-score", "0"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["summary"]["window_basis"] == "last-week"
    by_event = {f["event_ids"][0]: f for f in document["findings"] if f["analyzer"] == "sensitive_actions"}
    assert by_event[deploy["event_id"]]["score"] < 50
    assert "routine for 5 of the 5 identities of its group" in by_event[deploy["event_id"]]["explanation"]
    assert by_event[key["event_id"]]["score"] >= 50


def _fragments(*, days_apart: float, repeats: int) -> list[dict[str, object]]:
    """Eight identities, each seen in one short stretch of its own ``days_apart`` after the previous one, doing
    its operations ``repeats`` times; the seventh also lists secrets no other identity reads."""
    rows = []
    for index in range(8):
        actor = f"arn:aws:iam::111111111111:user/fixture{index}"
        start = T0 + timedelta(days=days_apart * index)
        operations = ["ListBuckets", f"Describe{index}", f"Get{index}"]
        if index == 6:
            operations += [f"GetSecretValue{n}" for n in range(3)]
        rows += [
            event(op, actor=actor, service="secretsmanager" if "Secret" in op else "s3",
                  time=start + timedelta(minutes=10 * r + position), **STRANGER)
            for r in range(repeats) for position, op in enumerate(operations)
        ]  # fmt: skip
    return rows


def test_fragments_years_apart_or_one_off_events_are_no_history_and_rarity_abstains_through_the_cli(
    tmp_path: Path,
) -> None:
    tampering = event("StopLogging", service="cloudtrail", actor=TEAM[2], time=T0 + timedelta(days=300), **STRANGER)
    scattered = write_db(tmp_path / "scattered.duckdb", [*_fragments(days_apart=90, repeats=3), tampering])
    result = CliRunner().invoke(app, ["analyze", str(scattered), "--format", "json", "--min-score", "0"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["summary"]["history"] == _stored(scattered)[1] == "none"
    assert "nor is the whole timeline a history: events on 9 of the 631 days" in document["summary"]["history_reason"]
    analyzers = {f["analyzer"] for f in document["findings"]}
    assert not analyzers & {"pattern_of_life", "peer_groups"}
    assert "aws-trail-tampering" in {f["rule"] for f in document["findings"]}  # signatures still score every event
    table = CliRunner().invoke(app, ["analyze", str(scattered)], env={"COLUMNS": "400"})
    assert "the rarity detectors (pattern of life, peer divergence) abstain" in " ".join(table.stdout.split())
    # one log, but every event the only one of its kind: nothing repeats, so nothing can be rare
    one_offs = run_analysis(write_db(tmp_path / "one-offs.duckdb", _fragments(days_apart=0.02, repeats=1)))
    assert one_offs.window.history == "none"
    assert "27 of 27 identity events (100%) the only time" in one_offs.window.history_reason
    assert "pattern_of_life" not in one_offs.findings_by_analyzer
