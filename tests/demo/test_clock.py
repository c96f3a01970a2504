"""The sandboxes plant their incidents at fixed offsets from a fixed time of day, so the demo's findings do not
depend on when it runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from moto_fixtures import clock
from moto_fixtures.aws import AwsSandbox
from moto_fixtures.azure import AzureSandbox
from moto_fixtures.cloudtrail import STORE

MORNING = dt.datetime(2026, 11, 30, 3, 10, 5, tzinfo=dt.UTC)
EVENING = dt.datetime(2026, 11, 30, 21, 40, 55, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("now", "anchor"),
    [
        (MORNING, dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)),
        (EVENING, dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)),
        (dt.datetime(2026, 11, 30, 13, 0, tzinfo=dt.UTC), dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)),
        (dt.datetime(2026, 11, 30, 12, 59, 59, tzinfo=dt.UTC), dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)),
    ],
)
def test_the_incident_clock_is_the_latest_noon_at_least_an_hour_ago(now: dt.datetime, anchor: dt.datetime):
    assert clock.incident_clock(now) == anchor


def _shape(times_and_names: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(time relative to the first event, name) for each event, in time order: the incident's shape."""
    parsed = sorted((dt.datetime.fromisoformat(when.replace("Z", "+00:00")), name) for when, name in times_and_names)
    first = parsed[0][0]
    return [(f"{when.time()} +{when - first}", name) for when, name in parsed]


def _azure_activity(monkeypatch: pytest.MonkeyPatch, now: dt.datetime) -> list[tuple[str, str]]:
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    with AzureSandbox() as sandbox:
        sandbox.plant_incident()
        events: list[dict[str, Any]] = [e for log in sandbox.fake.activity.values() for e in log]
        return _shape([(e["eventTimestamp"], e["operationName"]["value"]) for e in events])


def _aws_trail(monkeypatch: pytest.MonkeyPatch, now: dt.datetime) -> list[tuple[str, str]]:
    monkeypatch.setattr(clock, "utc_now", lambda: now)
    with AwsSandbox() as sandbox:
        sandbox.plant_incident()
        return _shape([(r["eventTime"], r["eventName"]) for log in STORE.events.values() for r in log])


def test_azure_plants_the_same_incident_in_the_morning_and_in_the_evening(monkeypatch: pytest.MonkeyPatch):
    morning = _azure_activity(monkeypatch, MORNING)
    assert morning == _azure_activity(monkeypatch, EVENING)
    assert len(morning) > 10


def test_aws_plants_the_same_incident_in_the_morning_and_in_the_evening(monkeypatch: pytest.MonkeyPatch):
    morning = _aws_trail(monkeypatch, MORNING)
    assert morning == _aws_trail(monkeypatch, EVENING)
    assert len(morning) > 10
