"""CloudTrail digest validation at acquisition: every status, with digests the tests sign themselves."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from typing import Any

import pytest

from cloudir.case import Case
from moto_fixtures.cloudtrail import (
    STORE,
    CloudTrailStore,
    activity_records,
    generate_signing_key,
    sign_digest,
    write_trail_files,
)
from providers.aws.digest import StoredDigest, signing_string, validate
from tests.logs.conftest import ACCOUNT, BUCKET, REGION, T0, pull_request, read_json, run_pull

HOURS = 6


@pytest.fixture
def trail(cloudtrail_store: CloudTrailStore, s3: Any) -> tuple[Any, list[str], list[str]]:
    """Six hourly log files and their chained, signed digests: (s3 client, log keys, digest keys)."""
    records = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=HOURS)
    keys = write_trail_files(s3, BUCKET, ACCOUNT, REGION, records, STORE.signer)
    logs = [k for k in keys if "/CloudTrail/" in k]
    digests = [k for k in keys if "/CloudTrail-Digest/" in k]
    assert len(logs) == len(digests) == HOURS
    return s3, logs, digests


def _pull(case: Case, start_hour: int = 0) -> dict[str, Any]:
    result = run_pull(
        case,
        pull_request(T0 + timedelta(hours=start_hour), T0 + timedelta(hours=HOURS), extra={"trail_bucket": BUCKET}),
    )
    assert result.ok, result.outcomes
    report: dict[str, Any] = read_json(case, "logs/aws/digest-validation.json")
    return report


def _status(report: dict[str, Any]) -> dict[str, str]:
    return {row["key"]: row["status"] for row in report["log_files"]}


def _read_digest(s3: Any, key: str) -> tuple[dict[str, Any], dict[str, str]]:
    obj = s3.get_object(Bucket=BUCKET, Key=key)
    return json.loads(gzip.decompress(obj["Body"].read())), obj["Metadata"]


def _put_digest(s3: Any, key: str, digest: dict[str, Any], metadata: dict[str, str]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps(digest).encode()), Metadata=metadata)


def test_untouched_trail_verifies(trail: Any, logs_case: Case) -> None:
    _, logs, _ = trail
    report = _pull(logs_case)
    assert _status(report) == dict.fromkeys(logs, "verified")
    assert report["digest_counts"] == {"valid": HOURS, "bad_signature": 0, "chain_broken": 0, "chain_gaps": 0}


def test_window_starting_mid_chain_checks_the_link_to_the_previous_digest(trail: Any, logs_case: Case) -> None:
    _, logs, digests = trail
    report = _pull(logs_case, start_hour=3)
    statuses = _status(report)
    assert set(statuses.values()) == {"verified"}
    assert logs[0] not in statuses
    anchors = [row["key"] for row in report["digests"] if row["chain"] == "anchor"]
    assert len(anchors) == 1
    assert anchors[0] in digests
    assert (logs_case.root / f"logs/aws/s3/{BUCKET}/{anchors[0]}").is_file()


def test_tampered_log_file_is_a_hash_mismatch(trail: Any, logs_case: Case) -> None:
    s3, logs, _ = trail
    original = json.loads(gzip.decompress(s3.get_object(Bucket=BUCKET, Key=logs[2])["Body"].read()))
    original["Records"].pop()  # the attacker removes their own record
    s3.put_object(Bucket=BUCKET, Key=logs[2], Body=gzip.compress(json.dumps(original).encode()))
    statuses = _status(_pull(logs_case))
    assert statuses.pop(logs[2]) == "hash_mismatch"
    assert set(statuses.values()) == {"verified"}


def test_log_file_without_digest(trail: Any, logs_case: Case) -> None:
    s3, logs, _ = trail
    planted = logs[1].replace(".json.gz", "0.json.gz")
    s3.put_object(Bucket=BUCKET, Key=planted, Body=gzip.compress(b'{"Records": []}'))
    statuses = _status(_pull(logs_case))
    assert statuses[planted] == "no_digest"
    assert statuses[logs[1]] == "verified"


def test_deleted_log_file_is_reported_missing(trail: Any, logs_case: Case) -> None:
    s3, logs, _ = trail
    s3.delete_object(Bucket=BUCKET, Key=logs[4])
    statuses = _status(_pull(logs_case))
    assert statuses[logs[4]] == "missing"


def test_digest_resigned_with_another_key_is_a_bad_signature_and_breaks_the_chain(trail: Any, logs_case: Case) -> None:
    s3, logs, digests = trail
    digest, metadata = _read_digest(s3, digests[2])
    forged = sign_digest(generate_signing_key(), digest, json.dumps(digest).encode())
    _put_digest(s3, digests[2], digest, {**metadata, "signature": forged})
    statuses = _status(_pull(logs_case))
    assert statuses[logs[2]] == "bad_signature"
    assert statuses[logs[3]] == "chain_broken"  # its predecessor's signature is not the one it names
    assert [statuses[k] for k in (logs[0], logs[1], logs[4], logs[5])] == ["verified"] * 4


def test_altered_digest_is_a_bad_signature_and_breaks_the_chain(trail: Any, logs_case: Case) -> None:
    s3, logs, digests = trail
    digest, metadata = _read_digest(s3, digests[1])
    digest["logFiles"][0]["hashValue"] = "0" * 64  # cover up a change in the log file
    _put_digest(s3, digests[1], digest, metadata)
    report = _pull(logs_case)
    statuses = _status(report)
    assert statuses[logs[1]] == "bad_signature"
    assert statuses[logs[2]] == "chain_broken"
    broken = next(row for row in report["digests"] if row["key"] == digests[2])
    assert "content differs" in broken["chain_reason"]


def test_deleted_digest_breaks_the_chain(trail: Any, logs_case: Case) -> None:
    s3, logs, digests = trail
    s3.delete_object(Bucket=BUCKET, Key=digests[3])
    statuses = _status(_pull(logs_case))
    assert statuses[logs[3]] == "no_digest"
    assert statuses[logs[4]] == "chain_broken"
    assert statuses[logs[5]] == "verified"


def test_unknown_public_key_is_a_bad_signature(cloudtrail_store: CloudTrailStore, s3: Any, logs_case: Case) -> None:
    records = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=2)
    write_trail_files(s3, BUCKET, ACCOUNT, REGION, records, generate_signing_key())  # never published
    report = _pull(logs_case)
    assert set(_status(report).values()) == {"bad_signature"}
    assert all("no CloudTrail public key" in row["reason"] for row in report["digests"])


def test_signing_string_follows_the_documented_format() -> None:
    data = {
        "digestEndTime": "2026-01-01T01:00:00Z",
        "digestS3Bucket": "b",
        "digestS3Object": "AWSLogs/1/CloudTrail-Digest/x.json.gz",
        "previousDigestSignature": None,
    }
    expected = (
        b"2026-01-01T01:00:00Z\nb/AWSLogs/1/CloudTrail-Digest/x.json.gz\n"
        b"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\nnull"
    )
    assert signing_string(data, b"{}") == expected
    assert (
        validate([StoredDigest("b", "k", b"not gzip", None, None)], {}, {})["digests"][0]["status"] == "bad_signature"
    )


def test_restarted_logging_is_a_gap_not_a_break(cloudtrail_store: CloudTrailStore, s3: Any, logs_case: Case) -> None:
    before = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=2)
    after = activity_records(account_id=ACCOUNT, region=REGION, start=T0 + timedelta(hours=4), hours=2, seed=3)
    write_trail_files(s3, BUCKET, ACCOUNT, REGION, before, STORE.signer)
    write_trail_files(s3, BUCKET, ACCOUNT, REGION, after, STORE.signer)  # a new chain: logging was off in between
    report = _pull(logs_case)
    assert set(_status(report).values()) == {"verified"}
    assert report["digest_counts"]["chain_gaps"] == 1
    assert report["digest_counts"]["chain_broken"] == 0
