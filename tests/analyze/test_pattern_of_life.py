from datetime import timedelta

from tests.analyze.builder import T0, event, routine
from tests.analyze.conftest import Analyze

ALICE_OPS = ["ListBuckets", "GetObject", "DescribeInstances", "ListUsers"]


def test_routine_day_gives_no_finding(analyze: Analyze) -> None:
    rows = routine(ALICE_OPS, days=25)
    _, findings = analyze(rows)
    assert findings == []


def test_new_operation_network_and_agent_together_are_flagged_and_explained(analyze: Analyze) -> None:
    rows = routine(ALICE_OPS, days=22)
    odd = event(
        "CreateAccessKey",
        time=T0 + timedelta(days=21, hours=3),
        source_ip="203.0.113.50",
        user_agent="python-requests/2.31",
    )
    rows.append(odd)
    _, findings = analyze(rows)
    pol = [f for f in findings if f["analyzer"] == "pattern_of_life"]
    assert len(pol) == 1
    assert odd["event_id"] in pol[0]["event_ids"]
    assert "never seen for this identity in 20 baseline days" in pol[0]["explanation"]
    assert "iam:CreateAccessKey" in pol[0]["explanation"]
    assert "python-requests" in pol[0]["explanation"]


def test_single_new_operation_that_peers_do_is_below_threshold(analyze: Analyze) -> None:
    ops = [*ALICE_OPS, "GetBucketPolicy"]
    rows = routine(ALICE_OPS, days=22)
    for name in ("bob", "carol", "dave"):
        rows += routine(ops, days=22, actor=f"arn:aws:iam::111111111111:user/{name}")
    rows.append(event("GetBucketPolicy", time=T0 + timedelta(days=21, hours=10)))
    summary, findings = analyze(rows)
    assert [f for f in findings if f["analyzer"] == "pattern_of_life"] == []
    assert summary.events == len(rows)


def test_new_identity_with_tools_never_seen_in_the_organisation(analyze: Analyze) -> None:
    rows = routine(ALICE_OPS, days=22)
    intruder = [
        event(
            op,
            actor="arn:aws:iam::999999999999:user/x",
            account="999999999999",
            time=T0 + timedelta(days=21, hours=2, minutes=i),
            source_ip="192.0.2.66",
            user_agent="stratus-red-team_abc",
        )
        for i, op in enumerate(["GetCallerIdentity", "ListRoles", "CreateUser"])
    ]
    _, findings = analyze(rows + intruder)
    new = [f for f in findings if f["rule"] == "new-identity"]
    assert len(new) == 1
    assert set(new[0]["event_ids"]) == {e["event_id"] for e in intruder}
    assert "identity not seen in the baseline" in new[0]["explanation"]


def test_known_identity_stolen_credentials_score_high_and_its_routine_work_does_not(analyze: Analyze) -> None:
    """Stolen credentials of a known identity: new network, new tool and new operations on the same day as
    the owner's routine work; only the thief's calls support the finding."""
    rows = routine(ALICE_OPS, days=22)
    routine_today = [e for e in rows if e["time"] >= T0 + timedelta(days=21)]
    theft = [
        event(
            op,
            time=T0 + timedelta(days=21, hours=2, minutes=i),
            service=service,
            source_ip="203.0.113.50",
            user_agent="aws-sdk-go/1.44.0 (go1.21; linux; amd64)",
        )
        for i, (service, op) in enumerate([("iam", "ListRoles"), ("iam", "CreateUser"), ("ec2", "DescribeSnapshots")])
    ]
    _, findings = analyze(rows + theft)
    pol = [f for f in findings if f["analyzer"] == "pattern_of_life"]
    assert len(pol) == 1
    assert pol[0]["rule"] == "novel-activity"
    assert pol[0]["score"] >= 60
    assert set(pol[0]["event_ids"]) == {e["event_id"] for e in theft}
    assert routine_today
    assert not {e["event_id"] for e in routine_today} & set(pol[0]["event_ids"])
    assert "network 203.0.113.0/24" in pol[0]["explanation"]


def test_most_novel_events_come_first_in_the_event_ids(analyze: Analyze) -> None:
    """A travel day (one new network for ordinary calls) and stolen-credential calls on the same day: the calls
    with the most novel values lead the supporting events, ahead of earlier ordinary calls."""
    rows = routine(ALICE_OPS, days=21)
    travel = routine(ALICE_OPS, days=1, per_day=8, start=T0 + timedelta(days=21), source_ip="100.64.7.9")
    theft = [
        event(op, time=T0 + timedelta(days=21, hours=20, minutes=i), source_ip="203.0.113.50", user_agent="curl/8")
        for i, op in enumerate(["CreateUser", "CreateAccessKey"])
    ]
    _, findings = analyze(rows + travel + theft)
    pol = [f for f in findings if f["analyzer"] == "pattern_of_life"]
    assert len(pol) == 1
    assert len(pol[0]["event_ids"]) == len(travel) + len(theft)
    assert set(pol[0]["event_ids"][:2]) == {e["event_id"] for e in theft}
