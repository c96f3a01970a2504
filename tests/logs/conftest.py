"""Shared helpers for the CloudTrail collection tests."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from cloudir.case import Case
from cloudir.plan import RunResult, run_plan
from cloudir.provider import LogPullRequest
from providers.aws.logs import plan_pull_logs
from providers.aws.session import AwsClients

ACCOUNT = "123456789012"
REGION = "eu-west-1"
BUCKET = "trail-bucket"
# A fixed hour, a few days back, so that LookupEvents' 90 days and "now" defaults never interfere.
T0 = (datetime.now(UTC) - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)


@functools.cache
def session() -> boto3.Session:
    """One boto3 session for every test (created inside the sandbox): cached service models keep tests quick."""
    return boto3.Session()


def pull_request(start: datetime, end: datetime, **kwargs: Any) -> LogPullRequest:
    """A pull of REGION (and us-east-1) at a test-friendly LookupEvents rate."""
    extra = {"lookup_rate": 200, **kwargs.pop("extra", {})}
    return LogPullRequest(start=start.isoformat(), end=end.isoformat(), locations=[REGION], extra=extra, **kwargs)


def run_pull(case: Case, request: LogPullRequest) -> RunResult:
    """Run the pull plan against moto with recording clients bound to ``case``."""
    clients = AwsClients(region=REGION, session=session())
    clients.bind(case)
    return run_plan(plan_pull_logs(clients, request), case, raise_on_failure=False)


def read_json(case: Case, rel: str) -> Any:
    """A JSON artifact of the case."""
    return json.loads((case.root / rel).read_text(encoding="utf-8"))


def pages(case: Case, region: str, scope: str) -> list[Path]:
    """Stored LookupEvents pages of one series, in order."""
    return sorted((case.root / "logs/aws/lookup-events" / region / scope).glob("page-*.json"))


def make_bucket(name: str = BUCKET) -> Any:
    """An S3 client with ``name`` created in REGION."""
    s3 = session().client("s3", region_name=REGION)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


@pytest.fixture
def s3(cloudtrail_store: Any) -> Any:
    """moto S3 with the trail bucket."""
    return make_bucket()
