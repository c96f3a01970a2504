"""Peer groups and peer divergence through ``cloudir analyze``: an attacker present from the first day of the logs."""

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from typer.testing import CliRunner

import cloudir.cli  # noqa: F401 - registers the commands
from cloudir.analyze import peers
from cloudir.cli.apps import app
from tests.analyze.builder import T0, event, routine, write_db

DAYS = 30
ROLE = "arn:aws:sts::111111111111:assumed-role/AWSReservedSSO_Developer_91c3"
ROUTINE = {
    "ec2": ["DescribeInstances", "DescribeVolumes", "DescribeSecurityGroups"],
    "s3": ["ListBuckets", "GetBucketLocation", "ListObjects"],
    "logs": ["FilterLogEvents", "DescribeLogGroups"],
    "lambda": ["ListFunctions20150331", "UpdateFunctionCode20150331v2"],
}
INTRUDER_CALLS = [
    ("secretsmanager", "ListSecrets"),
    ("secretsmanager", "GetSecretValue"),
    ("iam", "ListAccessKeys"),
    ("iam", "ListUsers"),
    ("sts", "GetCallerIdentity"),
]
PERSONAL = [("cloudformation", "DescribeStacks"), ("ecs", "DescribeServices"), ("dynamodb", "DescribeTable")]


def _developer(index: int, **context: Any) -> list[dict[str, Any]]:
    """A developer's month: the team routine from the office plus one operation of their own."""
    actor = f"{ROLE}/dev{index:02d}@corp.example"
    context = {"source_ip": f"198.51.100.{10 + index}", "user_agent": "aws-cli/2.15.0 Python/3.11.8"} | context
    rows = []
    for service, operations in ROUTINE.items():
        rows += routine(operations, days=DAYS, per_day=2, actor=actor, actor_type="AssumedRole", service=service,
                        **context)  # fmt: skip
    service, operation = PERSONAL[index % len(PERSONAL)]
    return rows + routine([operation], days=DAYS, per_day=1, actor=actor, actor_type="AssumedRole", service=service,
                          **context)  # fmt: skip


def _intruder_nights(actor: str) -> list[dict[str, Any]]:
    """Every night from the first day: secrets and IAM enumeration from a hosting address with a script."""
    rows = []
    for day in range(DAYS):
        night = T0 + timedelta(days=day, hours=2)
        for step, (service, operation) in enumerate(INTRUDER_CALLS):
            when = night + timedelta(minutes=step)
            intruder = {"source_ip": "203.0.113.66", "user_agent": "python-requests/2.31.0"}
            rows.append(event(operation, actor=actor, actor_type="AssumedRole", service=service, time=when, **intruder))
    return rows


def test_an_identity_unlike_its_peers_from_the_first_day_is_a_finding(tmp_path: Path) -> None:
    compromised = f"{ROLE}/dev07@corp.example"
    rows = [row for index in range(8) for row in _developer(index)]
    # a developer with a tool and a home network of their own: one divergent dimension is not a finding
    rows += _developer(8, source_ip="98.40.12.17", user_agent="Boto3/1.34.5 md/Botocore#1.34.5 os/linux")
    rows += _intruder_nights(compromised)
    db = write_db(tmp_path / "t.duckdb", rows)

    result = CliRunner().invoke(app, ["analyze", str(db), "--format", "json"])

    assert result.exit_code == 0, result.output
    with duckdb.connect(str(db), read_only=True) as con:
        divergent = con.execute(
            "SELECT identity, score, explanation, event_ids, event_count, first_time FROM findings "
            "WHERE rule = 'peer-divergence'"
        ).fetchall()
        peers = dict(con.execute("SELECT identity, count(*) FROM peer_groups GROUP BY identity").fetchall())
        intruder_ids = {
            row[0] for row in con.execute("SELECT event_id FROM events WHERE source_ip = '203.0.113.66'").fetchall()
        }
        learned = con.execute(
            "SELECT count(*) FROM events, analysis_window WHERE source_ip = '203.0.113.66' AND time < baseline_until"
        ).fetchone()
    assert [row[0] for row in divergent] == [compromised]
    _identity, score, explanation, event_ids, event_count, first_time = divergent[0]
    assert score >= 50
    assert first_time == T0 + timedelta(hours=2)
    assert "secretsmanager:GetSecretValue" in explanation
    assert "python-requests" in explanation
    assert "time of day 00-03h UTC" in explanation
    assert "dev0" in explanation  # the peers are named
    assert set(event_ids) <= intruder_ids
    assert len(event_ids) == 100
    assert learned == (5 * 23,)  # the last week is the incident window, not the reference
    assert event_count == 5 * 23
    assert all(count <= 10 for count in peers.values())
    assert peers[compromised] >= 3
    summary = json.loads(result.output)
    assert summary["summary"]["findings_by_analyzer"].get("peer_groups") == 1


def test_peer_candidates_grow_linearly_not_with_all_pairs() -> None:
    """120 identities of one role doing common operations: each is scored against a bounded set, never all."""
    identities = 120
    with duckdb.connect() as con:
        con.execute(
            f"CREATE TEMP TABLE identity_totals AS SELECT '{ROLE}/u' || i || '@corp.example' AS identity, "
            f"'111111111111' AS home_account FROM range({identities}) t(i)"
        )
        con.execute("CREATE TEMP TABLE ev AS SELECT identity, false AS aws_service FROM identity_totals")
        con.execute(
            "CREATE TEMP TABLE profile AS SELECT DISTINCT identity, 'operation' AS dim, "
            "'ec2:Describe' || (hash(identity || j) % 12) AS value, 5 AS n_events, 1 + j % 9 AS n_days "
            "FROM identity_totals, range(8) r(j)"
        )
        peers.build_peer_groups(con)
        candidates = con.execute("SELECT count(*) FROM peer_candidates").fetchone()
        per_identity = con.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM peer_groups GROUP BY identity)")
        assert per_identity.fetchone() == (peers.TOP_K,)
    bound = identities * (peers.STRUCTURE_CANDIDATES + peers.CANDIDATES_PER_IDENTITY)
    assert candidates is not None
    assert candidates[0] <= bound < identities * (identities - 1)
