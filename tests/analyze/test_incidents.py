"""Incidents: findings grouped per identity and time, with ids and columns that depend only on the findings."""

from datetime import timedelta
from pathlib import Path

import duckdb

from cloudir.analyze import run_analysis
from tests.analyze.builder import T0, event, routine, write_db

INCIDENT_DAY = T0 + timedelta(days=21)


def test_an_identity_whose_name_ends_in_digits_never_shares_another_identitys_incident(tmp_path: Path) -> None:
    """``user/u`` has eleven incidents and ``user/u1`` one: identity and incident number spelt together (``u`` +
    ``11``, ``u1`` + ``1``) are the same text, and each incident still holds one identity's findings."""
    many, one = "arn:aws:iam::111111111111:user/u", "arn:aws:iam::111111111111:user/u1"
    rows = routine(["ListBuckets"], days=21, actor=many) + routine(["ListBuckets"], days=21, actor=one)
    rows += [
        event("StopLogging", service="cloudtrail", actor=many, time=INCIDENT_DAY + timedelta(hours=3 * n))
        for n in range(11)
    ]
    rows.append(event("StopLogging", service="cloudtrail", actor=one, time=INCIDENT_DAY))
    db = write_db(tmp_path / "t.duckdb", rows)
    run_analysis(db, baseline_until=INCIDENT_DAY)
    with duckdb.connect(str(db), read_only=True) as con:
        per_identity = con.execute("SELECT identity, count(*) FROM incidents GROUP BY ALL ORDER BY ALL").fetchall()
        mixed = con.execute(
            "SELECT count(*) FROM findings f JOIN incidents i USING (incident_id) WHERE f.identity <> i.identity"
        ).fetchone()
    assert per_identity == [(many, 11), (one, 1)]
    assert mixed == (0,)


def test_a_finding_of_a_role_used_by_two_sessions_names_the_same_session_whatever_the_order(tmp_path: Path) -> None:
    """A role's two sessions in one enumeration burst, one run of sensitive calls and one unusual day: each finding
    names the session sorting first, not the one whose rows DuckDB happened to read first (the other is listed
    first here)."""
    role = "arn:aws:sts::111111111111:assumed-role/deploy/"
    first, second = role + "alpha", role + "zeta"
    rows = routine(["ListBuckets"], days=21, actor=first, actor_type="AssumedRole")
    burst = INCIDENT_DAY + timedelta(hours=2)
    names = ("Users", "Roles", "Groups", "Policies", "Keys", "Aliases", "Secrets", "Functions", "Tables", "Topics")
    operations = [f"List{name}" for name in (*names, "Queues", "Clusters")]
    for actor in (second, first):
        rows += [
            event(op, actor=actor, actor_type="AssumedRole", time=burst + timedelta(seconds=n), source_ip="192.0.2.66")
            for n, op in enumerate(operations)
        ]
        rows.append(event("StopLogging", service="cloudtrail", actor=actor, actor_type="AssumedRole", time=burst))
    db = write_db(tmp_path / "t.duckdb", rows)
    run_analysis(db, baseline_until=INCIDENT_DAY)
    with duckdb.connect(str(db), read_only=True) as con:
        named = con.execute("SELECT analyzer, rule, actor FROM findings ORDER BY ALL").fetchall()
    assert {"recon_burst", "sensitive_actions", "pattern_of_life"} <= {analyzer for analyzer, _, _ in named}
    assert {actor for _, _, actor in named} == {first}, named
