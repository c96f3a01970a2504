"""The fake LookupEvents behind moto: real boto3 paginator, filters, throttling, tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from moto_fixtures.cloudtrail import CloudTrailStore, activity_records
from tests.logs.conftest import ACCOUNT, REGION, T0, session


def _client() -> Any:
    retries: Any = {"mode": "standard", "max_attempts": 5}
    return session().client("cloudtrail", region_name=REGION, config=Config(retries=retries))


def test_paginator_walks_many_pages_through_a_throttling_response(cloudtrail_store: CloudTrailStore) -> None:
    records = activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=24, per_hour=5)
    cloudtrail_store.add(records)
    cloudtrail_store.throttle_calls = {3}
    client = _client()
    paginator = client.get_paginator("lookup_events")
    result = list(paginator.paginate(StartTime=T0, EndTime=T0 + timedelta(days=1), PaginationConfig={"PageSize": 10}))
    ids = [event["EventId"] for page in result for event in page["Events"]]
    assert len(result) == 12
    assert sorted(ids) == sorted(r["eventID"] for r in records)
    assert cloudtrail_store.calls == 13  # 12 pages + one throttled attempt retried by botocore
    times = [event["EventTime"] for page in result for event in page["Events"]]
    assert times == sorted(times, reverse=True)  # newest first, as CloudTrail returns them
    assert all(isinstance(event["CloudTrailEvent"], str) for page in result for event in page["Events"])


def test_window_and_attribute_filters(cloudtrail_store: CloudTrailStore) -> None:
    cloudtrail_store.add(activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=10, user="alice"))
    cloudtrail_store.add(activity_records(account_id=ACCOUNT, region=REGION, start=T0, hours=10, user="bob", seed=2))
    client = _client()
    window = {"StartTime": T0 + timedelta(hours=2), "EndTime": T0 + timedelta(hours=4)}
    everyone = client.lookup_events(**window)["Events"]
    bob = client.lookup_events(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "bob"}], **window)[
        "Events"
    ]
    assert len(everyone) == 8
    assert len(bob) == 4
    assert {event["Username"] for event in bob} == {"bob"}
    assert all(window["StartTime"] <= event["EventTime"] <= window["EndTime"] for event in everyone)
    named = client.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "DescribeVolumes"}])[
        "Events"
    ]
    assert named
    assert {event["EventName"] for event in named} == {"DescribeVolumes"}
    assert client.lookup_events(**window, MaxResults=3)["NextToken"]
    other_region = session().client("cloudtrail", region_name="ap-south-1")
    assert other_region.lookup_events()["Events"] == []


def test_api_limits_are_enforced(cloudtrail_store: CloudTrailStore) -> None:
    client = _client()
    two = [
        {"AttributeKey": "Username", "AttributeValue": "a"},
        {"AttributeKey": "EventName", "AttributeValue": "b"},
    ]
    with pytest.raises(ClientError, match="InvalidLookupAttributesException"):
        client.lookup_events(LookupAttributes=two)
    with pytest.raises(ClientError, match="InvalidNextTokenException"):
        client.lookup_events(NextToken="bm90LWEtdG9rZW4=")


def test_list_public_keys_is_served(cloudtrail_store: CloudTrailStore) -> None:
    fingerprint = cloudtrail_store.publish_key(cloudtrail_store.signer)
    keys = session().client("cloudtrail", region_name=REGION).list_public_keys()["PublicKeyList"]
    assert [key["Fingerprint"] for key in keys] == [fingerprint]
    assert keys[0]["Value"].startswith(b"0\x82")  # DER, base64-decoded by botocore
