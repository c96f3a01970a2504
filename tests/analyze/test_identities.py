"""Identities resolved once: principals without an ARN, services, and the instance's own agents."""

from datetime import timedelta
from pathlib import Path

import duckdb

from cloudir.analyze import run_analysis
from tests.analyze.builder import T0, event, routine, write_db

NODE = "arn:aws:sts::111111111111:assumed-role/web-role/i-0123456789abcdef0"
TEAM = [f"arn:aws:iam::111111111111:user/dev{index}" for index in range(6)]


def _findings(db: Path) -> list[tuple[str, str, list[str]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [tuple(r) for r in con.execute("SELECT rule, identity, event_ids FROM findings").fetchall()]


def test_a_principal_id_and_a_bare_user_name_are_the_identity_not_new_ones(tmp_path: Path) -> None:
    rows = []
    for actor in TEAM:
        rows += routine(["ListBuckets", "GetCallerIdentity"], days=20, per_day=2, actor=actor)
    alice = routine(
        ["ListBuckets"],
        days=20,
        actor="arn:aws:iam::111111111111:user/alice",
        raw={"userIdentity": {"principalId": "AIDAEXAMPLEALICE"}},
    )
    last_day = T0 + timedelta(days=19, hours=16)
    bare = [
        event("CheckMfa", actor="AIDAEXAMPLEALICE", service="signin", time=last_day),
        event("ListBuckets", actor="alice", time=last_day + timedelta(minutes=1)),
        event("ListBuckets", actor="AIDAUNKNOWNPRINCIPAL", time=last_day + timedelta(minutes=2)),
    ]
    db = write_db(tmp_path / "t.duckdb", [*rows, *alice, *bare])
    run_analysis(db, min_score=0)
    identities = {identity for _, identity, _ in _findings(db)}
    assert "AIDAEXAMPLEALICE" not in identities
    assert "alice" not in identities
    checkmfa = next(f for f in _findings(db) if bare[0]["event_id"] in f[2])
    assert checkmfa[1] == "arn:aws:iam::111111111111:user/alice"  # the principal id joined to its user


def test_service_linked_roles_and_service_agents_are_services_not_new_identities(tmp_path: Path) -> None:
    rows = []
    for actor in TEAM:
        rows += routine(["ListBuckets"], days=20, per_day=2, actor=actor)
    services = [
        event(
            f"Op{n}",
            actor="arn:aws:sts::111111111111:assumed-role/AWSServiceRoleForRDS/RDS",
            actor_type="AssumedRole",
            time=T0 + timedelta(days=19, hours=15, minutes=n),
            source_ip="rds.amazonaws.com",
            user_agent="rds.amazonaws.com",
        )
        for n in range(5)
    ] + [
        event(
            "google.iam.admin.v1.ListServiceAccounts",
            cloud="gcp",
            service="iam.googleapis.com",
            actor="service-123@gcp-sa-cloudbuild.iam.gserviceaccount.com",
            time=T0 + timedelta(days=19, hours=15),
        )
    ]
    db = write_db(tmp_path / "t.duckdb", [*rows, *services])
    run_analysis(db, min_score=0)
    assert _findings(db) == []


def test_the_instance_agent_is_recognised_by_evidence_and_stolen_use_is_not(tmp_path: Path) -> None:
    agent = "amazon-ssm-agent/3.3.40.0"
    rows = [
        event(
            "UpdateInstanceInformation",
            actor=NODE,
            actor_type="AssumedRole",
            service="ssm",
            user_agent=agent,
            source_ip="54.200.1.9",
            time=T0 + timedelta(hours=hour),
        )
        for hour in range(12)
    ]
    spoofed = event(
        "ListBuckets",
        actor=NODE,
        actor_type="AssumedRole",
        service="s3",
        user_agent=agent,
        source_ip="203.0.113.9",
        time=T0 + timedelta(hours=5),
    )
    db = write_db(tmp_path / "t.duckdb", [*rows, spoofed])
    summary = run_analysis(db)
    assert summary.window.history == "tenant"
    found = [f for f in _findings(db) if f[0] == "aws-instance-credentials-elsewhere"]
    # twelve hours of agent calls from one network are the instance; a short call from elsewhere, even with the
    # agent's user agent, is not
    assert [f[2] for f in found] == [[spoofed["event_id"]]]


def test_events_without_an_actor_type_or_user_agent_are_all_analyzed(tmp_path: Path) -> None:
    """Identity and user-agent family are judged once per distinct value and joined back: an event whose actor,
    actor type or user agent is missing or empty is still one event of the analysis, not lost in the join."""
    rows = routine(["ListBuckets"], days=3)
    odd = [
        event("GetObject", actor_type=None, user_agent=None),  # type: ignore[arg-type]
        event("GetObject", actor="", actor_type=None, user_agent=""),  # type: ignore[arg-type]
        event("GetObject", actor=None, user_agent="%' OR 1=1 --"),  # type: ignore[arg-type]
    ]
    db = write_db(tmp_path / "t.duckdb", rows + odd)
    assert run_analysis(db).events == len(rows) + len(odd)
