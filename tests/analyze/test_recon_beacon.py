import random
from datetime import timedelta

from tests.analyze.builder import T0, event, routine
from tests.analyze.conftest import Analyze

INCIDENT = T0 + timedelta(days=21, hours=11)
BASE = ["ListBuckets", "DescribeInstances", "ListUsers"]
DESCRIBES = [
    f"Describe{name}"
    for name in (
        "Instances",
        "Volumes",
        "Snapshots",
        "Images",
        "Vpcs",
        "Subnets",
        "SecurityGroups",
        "KeyPairs",
        "Addresses",
        "Regions",
        "RouteTables",
        "NetworkAcls",
    )
]


def _burst(start, actor="arn:aws:iam::111111111111:user/alice"):  # type: ignore[no-untyped-def]
    return [
        event(op, service="ec2", actor=actor, time=start + timedelta(seconds=5 * i)) for i, op in enumerate(DESCRIBES)
    ]


def test_enumeration_burst_is_flagged(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    burst = _burst(INCIDENT)
    _, findings = analyze([*rows, *burst])
    recon = [f for f in findings if f["rule"] == "enumeration-burst"]
    assert len(recon) == 1
    assert {e["event_id"] for e in burst} <= set(recon[0]["event_ids"])


def test_burst_the_identity_makes_every_day_is_tempered(analyze: Analyze) -> None:
    ci = "arn:aws:sts::111111111111:assumed-role/terraform-ci/run"
    rows = []
    for day in range(22):
        rows += _burst(T0 + timedelta(days=day, hours=11), actor=ci)
    _, findings = analyze(rows)
    assert [f for f in findings if f["analyzer"] == "recon_burst"] == []


def test_authorization_failure_burst(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    denied = [
        event(
            "GetPasswordData",
            service="ec2",
            time=INCIDENT + timedelta(seconds=i),
            error_code="Client.UnauthorizedOperation",
        )
        for i in range(10)
    ]
    _, findings = analyze([*rows, *denied])
    burst = [f for f in findings if f["rule"] == "failure-burst"]
    assert len(burst) == 1
    assert "10 AccessDenied/Unauthorized failures" in burst[0]["explanation"]


def _beacon(start, period, count, actor, jitter=0.05, skip=()):  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    return [
        event(
            "GetCallerIdentity",
            service="sts",
            actor=actor,
            user_agent="Go-http-client/1.1",
            time=start + timedelta(seconds=i * period + rng.uniform(-jitter, jitter) * period),
        )
        for i in range(count)
        if i not in skip
    ]


def test_new_beacon_with_jitter_and_missed_beats_is_flagged(analyze: Analyze) -> None:
    rows = routine(BASE, days=22)
    beacon = _beacon(INCIDENT, 300, 40, "arn:aws:iam::111111111111:user/alice", skip=(5, 6, 20))
    _, findings = analyze([*rows, *beacon])
    found = [f for f in findings if f["analyzer"] == "beaconing"]
    assert len(found) == 1
    assert "missed beats" in found[0]["explanation"]
    assert set(found[0]["event_ids"]) == {e["event_id"] for e in beacon}


def test_periodic_job_known_from_the_baseline_and_random_activity_are_not_beacons(analyze: Analyze) -> None:
    job = "arn:aws:sts::111111111111:assumed-role/backup-job/lambda"
    rows = routine(BASE, days=22) + _beacon(T0, 600, 22 * 144, job)
    rng = random.Random(3)
    rows += [
        event(
            "GetCallerIdentity",
            service="sts",
            user_agent="Go-http-client/1.1",
            time=INCIDENT + timedelta(seconds=rng.uniform(0, 20000)),
        )
        for _ in range(40)
    ]
    _, findings = analyze(rows)
    assert [f for f in findings if f["analyzer"] == "beaconing"] == []
