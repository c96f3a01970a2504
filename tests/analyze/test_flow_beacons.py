"""Beacons in flow logs (through ingest and run_analysis), peer groups, explanations, incidents; API bursts."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cloudir.analyze import run_analysis
from cloudir.timeline.ingest import ingest_paths
from moto_fixtures.flow_background import T0 as FLEET_START
from moto_fixtures.flow_background import Fleet, add_beacon, generate, write_s3_layout
from moto_fixtures.gcp_flows import beacon_entries
from tests.analyze.builder import T0, event, write_db
from tests.analyze.conftest import Analyze

FLEET = Fleet(instances=16, days=2, beacons=3, window=60, seed=5)
STEADY_HOST, STEADY_REMOTE = "i-000000000000003ea", "45.98.7.7"  # a web instance, a beacon without any jitter


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A small generated fleet with three planted beacons, plus API calls of one beaconing instance's role."""
    folder = tmp_path_factory.mktemp("fleet")
    with duckdb.connect() as con:
        generate(con, FLEET)
        add_beacon(con, FLEET, [STEADY_HOST], STEADY_REMOTE, period=965.4, jitter=0.0)
        write_s3_layout(con, FLEET, folder / "flows")
        cursor = con.execute("SELECT * FROM gen_beacons ORDER BY beacon")
        names = [d[0] for d in cursor.description]
        truth = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    implant = truth[0]["instance_id"]
    role = f"arn:aws:sts::111122223333:assumed-role/web-role/{implant}"
    start = FLEET_START.replace(tzinfo=None)
    rows = [
        event("GetCallerIdentity", service="sts", actor=role, actor_type="AssumedRole", time=start + timedelta(hours=h))
        for h in range(0, 48, 4)
    ]
    rows.append(
        event(
            "StopLogging", service="cloudtrail", actor=role, actor_type="AssumedRole", time=start + timedelta(hours=46)
        )
    )
    db = write_db(folder / "timeline.duckdb", rows)
    stats = ingest_paths(db, [folder / "flows"])
    assert stats.flows.quarantined == 0
    assert stats.flows.instances == FLEET.instances
    run_analysis(db)
    return db, truth


def _findings(db: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(db), read_only=True) as con:
        cursor = con.execute("SELECT * FROM findings WHERE rule = 'flow-beacon' ORDER BY score DESC")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_planted_beacons_are_found_and_cron_common_to_the_fleet_are_not(
    fleet_db: tuple[Path, list[dict[str, Any]]],
) -> None:
    db, truth = fleet_db
    findings = _findings(db)
    found = {(f["actor"], f["title"].rsplit(" -> ", 1)[1].rsplit(":", 1)[0]) for f in findings}
    planted = {(b["instance_id"], b["remote"]) for b in truth}
    assert planted <= found
    # the only other finding allowed is the documented singleton exporter polling its SaaS API every 5 minutes
    assert {title for f in findings if (title := f["title"]) and "45." not in title} <= {
        f["title"] for f in findings if ":443" in f["title"] and "192.0.2.20" in f["title"]
    }
    with duckdb.connect(str(db), read_only=True) as con:
        cron = con.execute(
            "SELECT count(*), max(peer_factor * estate_factor), min(peers_contacted = n_peers) FROM network_beacons "
            "WHERE dst_addr = '203.0.113.10'"
        ).fetchone()
    assert cron is not None
    assert cron[0] > 0  # the hourly ETL cron job is as regular as a beacon on each batch-etl member ...
    assert cron[1] < 0.5  # ... but every peer calls that partner API too, so it is discounted
    assert cron[2] is True


def test_a_beacon_without_jitter_is_found_though_whole_seconds_make_its_intervals_two_valued(
    fleet_db: tuple[Path, list[dict[str, Any]]],
) -> None:
    """Every 965.4 s exactly is logged 965 or 966 s apart: quartiles a second apart are not skew."""
    db, _ = fleet_db
    with duckdb.connect(str(db), read_only=True) as con:
        quartiles = con.execute(
            "SELECT dq, interval_skew_score FROM network_beacons WHERE dst_addr = ?", [STEADY_REMOTE]
        ).fetchone()
    assert quartiles is not None
    assert quartiles[0][2] - quartiles[0][0] <= 1
    assert quartiles[1] == 1
    assert [f["actor"] for f in _findings(db) if STEADY_REMOTE in f["title"]] == [STEADY_HOST]


def test_explanation_in_words_and_the_incident_joins_api_findings(fleet_db: tuple[Path, list[dict[str, Any]]]) -> None:
    db, truth = fleet_db
    implant = truth[0]["instance_id"]
    finding = next(f for f in _findings(db) if f["actor"] == implant)
    words = finding["explanation"]
    assert f"connections to {truth[0]['remote']}:" in words
    assert "about every" in words
    assert "jitter" in words
    assert "of 2 days" in words
    assert "bytes out" in words
    assert "peers (group web-" in words
    assert "API activity with its credentials (arn:aws:iam::111122223333:role/web-role): 13 calls" in words, words
    assert finding["identity"] == "arn:aws:iam::111122223333:role/web-role"
    with duckdb.connect(str(db), read_only=True) as con:
        incident = con.execute(
            "SELECT analyzers FROM incidents WHERE incident_id = ?", [finding["incident_id"]]
        ).fetchone()
        series = con.execute(
            "SELECT len(series), list_sum(list_transform(series, lambda s: s.connections)) = n_connections "
            "FROM network_beacons WHERE workload = ? AND dst_addr = ?",
            [implant, truth[0]["remote"]],
        ).fetchone()
    assert incident is not None
    assert "beaconing" in incident[0]
    assert len(incident[0]) > 1  # the StopLogging by the same role is in the same incident
    assert series == (48, True)  # a beacon from the first hour, 2 days of hourly buckets


def test_a_destination_the_peers_also_contact_is_discounted(tmp_path: Path) -> None:
    """The same regular beacon, once on one ASG member only and once on every member: only the first is found."""
    results = []
    fleet = Fleet(instances=12, days=2, beacons=0, window=60, seed=9)
    for everyone in (False, True):
        folder = tmp_path / str(everyone)
        with duckdb.connect() as con:
            generate(con, fleet)
            members = [
                r[0] for r in con.execute("SELECT instance_id FROM gen_instances WHERE grp = 'web-b'").fetchall()
            ]
            add_beacon(con, fleet, members if everyone else members[:1], "45.99.1.1", period=600)
            write_s3_layout(con, fleet, folder / "flows")
        db = write_db(folder / "t.duckdb", [event("ListBuckets", service="s3", time=FLEET_START.replace(tzinfo=None))])
        ingest_paths(db, [folder / "flows"])
        run_analysis(db)
        results.append([f["actor"] for f in _findings(db) if "45.99.1.1" in f["title"]])
    assert len(results[0]) == 1
    assert results[1] == []


def test_in_a_small_estate_a_destination_two_workloads_beacon_to_is_not_common(tmp_path: Path) -> None:
    """Two unrelated instances (other subnets, no peers) beaconing to one operator: both found, not discounted
    as a destination common to the estate (two workloads are no estate to be common in)."""
    first = datetime(2026, 11, 20, 8, 3, tzinfo=UTC)
    entries = [
        entry
        for index, (name, address) in enumerate((("web-a", "10.0.1.5"), ("batch-b", "10.0.2.9")))
        for entry in beacon_entries(
            "p1",
            {"vm_name": name, "zone": "z-a", "region": "r", "vpc": "default", "subnet": f"subnet-{index}"},
            address,
            "203.0.113.66",
            first + timedelta(minutes=index),
        )
    ]
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "vpc_flows-page-00001.json").write_text(json.dumps({"entries": entries}))
    db = write_db(tmp_path / "t.duckdb", [event("ListBuckets", service="s3", time=first.replace(tzinfo=None))])
    ingest_paths(db, [tmp_path / "flows"])
    run_analysis(db)
    beacons = sorted(f["actor"] for f in _findings(db) if f["rule"] == "flow-beacon")
    assert beacons == ["batch-b", "web-a"]


def test_a_burst_of_automation_is_not_a_beacon(analyze: Analyze) -> None:
    """A deployment calling every 15 s for ten minutes is regular, but too short to be a beacon."""
    start = T0 + timedelta(days=21, hours=11)
    rng = random.Random(2)
    ci = "arn:aws:iam::111111111111:user/deployer"
    burst = [
        event(
            "DescribeStacks",
            service="cloudformation",
            actor=ci,
            time=start + timedelta(seconds=15 * i + rng.uniform(-1, 1)),
        )
        for i in range(40)
    ]
    baseline = [event("ListBuckets", actor=ci, time=start - timedelta(days=d)) for d in range(2, 20)]
    _, findings = analyze([*baseline, *burst])
    assert [f for f in findings if f["analyzer"] == "beaconing"] == []


def test_the_same_calls_every_5_minutes_over_hours_are_a_beacon(analyze: Analyze) -> None:
    start = T0 + timedelta(days=21, hours=11)
    rng = random.Random(2)
    ci = "arn:aws:iam::111111111111:user/deployer"
    baseline = [event("ListBuckets", actor=ci, time=start - timedelta(days=d)) for d in range(2, 20)]
    slow = [
        event(
            "DescribeStacks",
            service="cloudformation",
            actor=ci,
            time=start + timedelta(seconds=300 * i + rng.uniform(-5, 5)),
        )
        for i in range(40)
    ]
    _, findings = analyze([*baseline, *slow])
    assert [f["rule"] for f in findings if f["analyzer"] == "beaconing"] == ["api-beacon"]
