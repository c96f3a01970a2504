"""Sample findings and helpers that point them at a sandbox's planted incident."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudir.provider import Provider
from cloudir.triggers import Trigger
from moto_fixtures.sandbox import PlantedIncident

DATA = Path(__file__).parent / "data"


def sample(name: str) -> Any:
    """A sample finding from tests/respond/data (a fresh copy)."""
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def guardduty_for(instance_id: str, account: str, region: str, time: str, finding_id: str = "gd-finding-1") -> Any:
    """The GuardDuty EC2 EventBridge sample, aimed at a sandbox instance."""
    event = sample("guardduty_ec2_eventbridge.json")
    detail = event["detail"]
    detail.update(id=finding_id, accountId=account, region=region, updatedAt=time)
    detail["resource"]["instanceDetails"]["instanceId"] = instance_id
    detail["service"]["eventLastSeen"] = time
    event.update(account=account, region=region)
    return copy.deepcopy(event)


@pytest.fixture
def case_root(tmp_path: Path) -> Path:
    """Where cases go in a test."""
    return tmp_path / "cases"


@dataclass
class AwsIncident:
    """A running AWS sandbox with a planted incident and CloudTrail activity, and a finding about it."""

    sandbox: Any
    incident: PlantedIncident
    finding: dict[str, Any]
    params: dict[str, Any]

    def provider_factory(self, trigger: Trigger) -> Provider:
        """The sandbox's provider (no polling delay), whatever the trigger."""
        provider: Provider = self.sandbox.provider()
        return provider


@pytest.fixture
def aws_incident() -> Iterator[AwsIncident]:
    """The AWS sandbox's planted incident, attacker CloudTrail planted, and a GuardDuty finding on the instance."""
    from moto_fixtures.cloudtrail import fake_cloudtrail, plant_attacker_trail
    from moto_fixtures.sandbox import open_sandbox

    with open_sandbox("aws") as sandbox, fake_cloudtrail() as store:
        incident = sandbox.plant_incident()
        now = datetime.now(UTC).replace(microsecond=0)
        account = sandbox.client("sts").get_caller_identity()["Account"]
        if not store.events:  # the sandbox did not plant CloudTrail itself
            role = sandbox.client("iam").get_role(RoleName=incident.extra["role"])["Role"]["Arn"]
            plant_attacker_trail(
                account_id=account,
                region=sandbox.region,
                instance_id=incident.target.value,
                role_arn=role,
                attacker_ip="203.0.113.66",
                start=now - timedelta(minutes=40),
                baseline_days=3,
            )
        finding = guardduty_for(
            incident.target.value, account, sandbox.region, (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        params = {
            "forensic_account": incident.forensic_account,
            "encryption_key": incident.encryption_key,
            "log_window_before_hours": 24 * 4,
        }
        yield AwsIncident(sandbox, incident, finding, params)
