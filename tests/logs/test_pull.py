"""The CloudTrail pull plan end to end against moto: raw pages, resume, S3 files, custody, coverage."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from cloudir.case import Case
from cloudir.custody import read_records, verify_case
from cloudir.plan import Step, run_plan
from moto_fixtures.cloudtrail import STORE, CloudTrailStore, activity_records, plant_attacker_trail, write_trail_files
from providers.aws.logs import TokenBucket, plan_pull_logs
from providers.aws.session import AwsClients
from tests.logs.conftest import ACCOUNT, BUCKET, REGION, T0, pages, pull_request, read_json, run_pull, session

INSTANCE = "i-0123456789abcdef0"
VALIDATION = "logs/aws/digest-validation.json"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/web-app-role"


def _plant(bucket: str | None = BUCKET) -> list[dict[str, Any]]:
    return plant_attacker_trail(
        account_id=ACCOUNT,
        region=REGION,
        instance_id=INSTANCE,
        role_arn=ROLE,
        attacker_ip="203.0.113.66",
        start=T0,
        bucket=bucket,
        baseline_days=1,
    )


def test_full_pull_keeps_raw_pages_files_and_validates(cloudtrail_store: CloudTrailStore, logs_case: Case) -> None:
    records = _plant()
    result = run_pull(logs_case, pull_request(T0 - timedelta(hours=12), T0 + timedelta(hours=2), resources=[INSTANCE]))
    assert result.ok, result.outcomes
    # LookupEvents pages are the response bodies: Events with CloudTrailEvent strings, and NextToken.
    session_pages = pages(logs_case, REGION, f"Username={INSTANCE}")
    bodies = [json.loads(p.read_bytes()) for p in session_pages]
    assert all(set(body) <= {"Events", "NextToken"} for body in bodies)
    assert all(isinstance(e["CloudTrailEvent"], str) for body in bodies for e in body["Events"])
    expected = {
        r["eventID"]
        for r in records
        if r["awsRegion"] == REGION
        and r["managementEvent"]
        and r["userIdentity"].get("arn", "").rsplit("/", 1)[-1] == INSTANCE  # what Username= matches
        and T0 - timedelta(hours=12) <= datetime.fromisoformat(r["eventTime"]) <= T0 + timedelta(hours=2)
    }
    assert {e["EventId"] for body in bodies for e in body["Events"]} == expected
    # The attacker's IAM calls are global: they come from us-east-1.
    us_east = pages(logs_case, "us-east-1", f"Username={INSTANCE}")
    names = {e["EventName"] for p in us_east for e in json.loads(p.read_bytes())["Events"]}
    assert {"CreateUser", "CreateAccessKey", "AttachUserPolicy"} <= names
    validation = read_json(logs_case, "logs/aws/digest-validation.json")
    assert validation["counts"]["verified"] > 0
    assert {row["status"] for row in validation["log_files"]} == {"verified"}
    # The S3 data events (exfiltration) exist only in the trail files.
    s3_names = Counter(
        rec["eventName"]
        for path in (logs_case.root / "logs/aws/s3" / BUCKET).rglob("*_CloudTrail_*.json.gz")
        for rec in json.loads(gzip.decompress(path.read_bytes()))["Records"]
    )
    assert s3_names["GetObject"] == 12
    verdict = verify_case(logs_case.root)
    assert verdict.ok, verdict.problems
    assert verdict.warnings == []


def test_resume_after_a_failure_mid_pagination_fetches_no_page_twice(
    cloudtrail_store: CloudTrailStore, logs_case: Case
) -> None:
    cloudtrail_store.add(activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=12, per_hour=4))
    cloudtrail_store.fail_calls = {4: ("InternalFailure", 400)}
    request = pull_request(T0, T0 + timedelta(hours=12), extra={"page_size": 5})
    first = run_pull(logs_case, request)
    assert first.failed is not None
    assert first.failed.step_id == "lookup-events"
    coverage = read_json(logs_case, "logs/aws/coverage.json")  # the READ steps after the failure still ran
    stopped = next(s for s in coverage["sources"] if s["location"] == REGION)
    assert stopped["status"] == "stopped"
    assert stopped["stopped_reason"].startswith("error: ")
    assert "InternalFailure" in stopped["stopped_reason"]
    stored = pages(logs_case, REGION, "all")
    assert len(stored) == 3
    cursor = json.loads(stored[-1].read_bytes())["NextToken"]
    requests_before = len(cloudtrail_store.requests)

    second = run_pull(logs_case, request)
    assert second.ok, second.outcomes
    resumed = cloudtrail_store.requests[requests_before:]
    assert resumed[0]["NextToken"] == cursor  # continued from the stored cursor, not from page 1
    assert len(resumed) == 10 - 3  # 48 events / 5 per page = 10 pages; 3 were already stored
    stored = pages(logs_case, REGION, "all")
    assert [p.name for p in stored] == [f"page-{n:05d}.json" for n in range(1, 11)]
    ids = [e["EventId"] for p in stored for e in json.loads(p.read_bytes())["Events"]]
    assert len(ids) == len(set(ids)) == 48
    written = Counter(
        artifact["path"]
        for record in read_records(logs_case.root / "custody.jsonl")
        for artifact in record["artifacts"]
    )
    assert all(count == 1 for path, count in written.items() if "/page-" in path)
    assert verify_case(logs_case.root).ok


def test_access_denied_stops_a_source_loudly(cloudtrail_store: CloudTrailStore, logs_case: Case) -> None:
    cloudtrail_store.add(activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=2))
    cloudtrail_store.fail_calls = {1: ("AccessDeniedException", 400)}
    result = run_pull(logs_case, pull_request(T0, T0 + timedelta(hours=3)))
    assert result.ok  # an access-denied source does not fail the pull, it is reported
    coverage = read_json(logs_case, "logs/aws/coverage.json")
    stopped = [s for s in coverage["sources"] if s["status"] == "stopped"]
    assert [(s["location"], s["stopped_reason"].split(":")[0]) for s in stopped] == [(REGION, "access_denied")]
    assert any("stopped early: access_denied" in w for w in coverage["warnings"])
    assert any("no CloudTrail trail" in w for w in coverage["warnings"])
    assert any(s["source"] == "cloudtrail:s3" and s["status"] == "unavailable" for s in coverage["sources"])


def test_custody_records_every_lookup_call_with_its_request_id(
    cloudtrail_store: CloudTrailStore, logs_case: Case
) -> None:
    cloudtrail_store.add(activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=6, per_hour=5))
    cloudtrail_store.throttle_calls = {2}  # botocore's adaptive retry absorbs it; the pull counts it
    run_pull(logs_case, pull_request(T0, T0 + timedelta(hours=6), principals=["alice"], extra={"page_size": 10}))
    records = read_records(logs_case.root / "custody.jsonl")
    step = next(r for r in records if r["details"].get("step") == "lookup-events")
    calls = [c for c in step["api_calls"] if c["operation"] == "LookupEvents"]
    assert len(calls) == len(pages(logs_case, REGION, "Username=alice")) + len(
        pages(logs_case, "us-east-1", "Username=alice")
    )
    assert len(calls) == 4  # 30 events in 3 pages, plus one empty page in us-east-1
    assert all(c["request_id"] and c["outcome"] == "ok" for c in calls)
    page_artifacts = [a["path"] for a in step["artifacts"] if "/page-" in a["path"]]
    assert len(page_artifacts) == len(calls)
    assert cloudtrail_store.calls == len(calls) + 1
    coverage = read_json(logs_case, "logs/aws/coverage.json")
    source = next(s for s in coverage["sources"] if s["location"] == REGION)
    assert source["details"] == {"pages": 3, "throttled_responses": 1}
    assert source["items"] == 30


def test_all_regions_are_discovered_and_pulled(cloudtrail_store: CloudTrailStore, logs_case: Case) -> None:
    cloudtrail_store.add(activity_records(account_id=ACCOUNT, region="ap-south-1", start=T0, hours=2))
    request = pull_request(T0, T0 + timedelta(hours=2), extra={"all_regions": True})
    request.locations = []
    result = run_pull(logs_case, request)
    assert result.ok, result.outcomes
    regions = result.results["discover"]["regions"]
    assert {"ap-south-1", "eu-west-1", "us-east-1"} <= set(regions)
    assert len(regions) > 10
    coverage = read_json(logs_case, "logs/aws/coverage.json")
    counts = {s["location"]: s["items"] for s in coverage["sources"] if s["source"] == "cloudtrail:lookup-events"}
    assert counts["ap-south-1"] == 4
    assert sum(counts.values()) == 4
    assert len(counts) == len(regions)


def test_token_bucket_spaces_calls() -> None:
    bucket = TokenBucket(rate=20)
    started = time.monotonic()
    for _ in range(6):
        bucket.acquire()
    assert time.monotonic() - started >= 0.25 - 0.01  # 5 intervals of 50 ms after the first slot


def test_s3_listing_by_day_prefix_includes_org_trail_layout(
    cloudtrail_store: CloudTrailStore, s3: Any, logs_case: Case
) -> None:
    signer = STORE.signer
    window_day = T0 - timedelta(days=1)
    mine = activity_records(account_id=ACCOUNT, region=REGION, start=window_day, hours=6)
    old = activity_records(account_id=ACCOUNT, region=REGION, start=window_day - timedelta(days=5), hours=3)
    other = activity_records(account_id="210987654321", region=REGION, start=window_day, hours=6)
    write_trail_files(s3, BUCKET, ACCOUNT, REGION, mine, signer, org_id="o-abc123def4")
    write_trail_files(s3, BUCKET, ACCOUNT, REGION, old, signer, org_id="o-abc123def4")
    write_trail_files(s3, BUCKET, "210987654321", REGION, other, signer, org_id="o-abc123def4")
    result = run_pull(
        logs_case,
        pull_request(window_day, window_day + timedelta(hours=6), extra={"trail_bucket": BUCKET}),
    )
    assert result.ok, result.outcomes
    listing = read_json(logs_case, "logs/aws/s3-listing.json")
    folders = {folder for _, folder in listing["folders"]}
    assert f"AWSLogs/o-abc123def4/{ACCOUNT}/CloudTrail/{REGION}/{window_day:%Y/%m/%d}/" in folders
    assert not any("210987654321" in folder for folder in folders)  # only the caller's account
    assert not any(f"{window_day - timedelta(days=5):%Y/%m/%d}" in folder for folder in folders)
    downloaded = [o for o in listing["objects"] if o["in_window"]]
    assert {o["kind"] for o in downloaded} == {"log", "digest"}
    assert sum(1 for o in downloaded if o["kind"] == "log") == 6
    assert read_json(logs_case, "logs/aws/digest-validation.json")["counts"]["verified"] == 6


def test_parallel_downloads_match_the_bucket_byte_for_byte(
    cloudtrail_store: CloudTrailStore, s3: Any, logs_case: Case
) -> None:
    records = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=24, per_hour=3)
    write_trail_files(s3, BUCKET, ACCOUNT, REGION, records, STORE.signer)
    result = run_pull(logs_case, pull_request(T0, T0 + timedelta(hours=24), extra={"trail_bucket": BUCKET}))
    assert result.ok, result.outcomes
    recorded = {
        a["path"]: a["sha256"]
        for r in read_records(logs_case.root / "custody.jsonl")
        if r["details"].get("step") == "s3-download"
        for a in r["artifacts"]
    }
    client = boto3.client("s3", region_name=REGION)
    keys = [
        o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET) for o in page["Contents"]
    ]
    in_window = [k for k in keys if f"logs/aws/s3/{BUCKET}/{k}" in recorded]
    assert len(in_window) >= 48
    for key in in_window:
        body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert recorded[f"logs/aws/s3/{BUCKET}/{key}"] == hashlib.sha256(body).hexdigest()
    assert result.results["s3-download"]["downloaded"] == len(in_window)
    again = run_pull(logs_case, pull_request(T0, T0 + timedelta(hours=24), extra={"trail_bucket": BUCKET}))
    assert all(o.status == "resumed" for o in again.outcomes)


def test_coverage_report_fields(cloudtrail_store: CloudTrailStore, logs_case: Case) -> None:
    _plant()
    start = T0 - timedelta(hours=6)
    run_pull(logs_case, pull_request(start, T0 + timedelta(hours=6)))
    coverage = read_json(logs_case, "logs/aws/coverage.json")
    assert coverage["cloud"] == "aws"
    assert coverage["account"] == ACCOUNT
    region = coverage["locations"][REGION]
    assert region["trails"] == ["management-events"]
    assert region["data_events"] is True
    assert region["logging"] == []  # the attacker stopped the only trail
    assert any("management-events is not logging" in w for w in coverage["warnings"])
    assert any(f"trail files in {REGION} end at" in w for w in coverage["warnings"])
    (retention,) = coverage["retention"]
    oldest = datetime.fromisoformat(retention["oldest_event"].replace("Z", "+00:00"))
    age_days = (datetime.now(UTC) - oldest).total_seconds() / 86400
    assert retention["retention_days"] == 90
    assert abs(retention["days_left"] - (90 - age_days)) < 0.05
    assert start <= oldest < T0
    lookups = {(s["location"], s["scope"]): s for s in coverage["sources"] if s["source"] == "cloudtrail:lookup-events"}
    assert lookups[(REGION, "all")]["status"] == "complete"
    assert lookups[(REGION, "all")]["items"] > 0
    assert coverage["covered"]["first_event"] <= coverage["covered"]["last_event"]


def test_a_file_gone_between_listing_and_download_is_reported(
    cloudtrail_store: CloudTrailStore, s3: Any, logs_case: Case
) -> None:
    records = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=4)
    keys = write_trail_files(s3, BUCKET, ACCOUNT, REGION, records, STORE.signer)
    log_key = next(k for k in keys if "/CloudTrail/" in k)
    clients = AwsClients(region=REGION, session=session())
    clients.bind(logs_case)
    plan = plan_pull_logs(clients, pull_request(T0, T0 + timedelta(hours=4), extra={"trail_bucket": BUCKET}))

    def delete_after_listing(step: Step, status: str) -> None:
        if step.id == "s3-list" and status == "done":
            s3.delete_object(Bucket=BUCKET, Key=log_key)

    result = run_plan(plan, logs_case, observer=delete_after_listing, raise_on_failure=False)
    assert result.failed is not None
    assert result.failed.step_id == "s3-download"
    assert "NoSuchKey" in (result.failed.error or "")
    coverage = read_json(logs_case, "logs/aws/coverage.json")
    (trail_files,) = [s for s in coverage["sources"] if s["source"] == "cloudtrail:s3"]
    assert trail_files["status"] == "partial"
    assert trail_files["stopped_reason"] == "1 of 4 listed files not downloaded"
    assert any("cloudtrail:s3" in w and "incomplete" in w for w in coverage["warnings"])
    statuses = {row["key"]: row["status"] for row in read_json(logs_case, VALIDATION)["log_files"]}
    assert statuses.pop(log_key) == "missing"  # named by its digest, listed, then gone from the bucket
    assert set(statuses.values()) == {"verified"}
