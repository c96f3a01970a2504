"""Finding the target: instance id, private IP, public IP, ENI id, all regions, access key."""

import pytest

from cloudir.errors import CloudirError, TargetNotFoundError
from cloudir.provider import TargetKind, TargetQuery
from moto_fixtures.aws import AwsSandbox
from moto_fixtures.sandbox import PlantedIncident
from providers.aws import AwsProvider


def test_every_alternate_name_resolves_to_the_same_instance(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident):
    provider = aws_sandbox.provider()
    expected = provider.find_target(aws_incident.target)
    assert expected.id == aws_incident.extra["instance_id"]
    assert expected.ref == f"aws:123456789012:us-east-1:{expected.id}"
    values = {q.value for q in aws_incident.alternate_targets}
    assert any(v.startswith("eni-") for v in values)
    assert len(values) == 3
    for query in aws_incident.alternate_targets:
        assert provider.find_target(query).ref == expected.ref, query.value


def test_all_regions_finds_an_instance_elsewhere(aws_sandbox: AwsSandbox, remote_region_instance: str):
    local = aws_sandbox.provider()
    with pytest.raises(TargetNotFoundError, match="--all-regions"):
        local.find_target(TargetQuery(TargetKind.INSTANCE, remote_region_instance, "us-east-1"))
    everywhere = AwsProvider(session=aws_sandbox.session, all_regions=True)
    target = everywhere.find_target(TargetQuery(TargetKind.INSTANCE, remote_region_instance))
    assert (target.id, target.location) == (remote_region_instance, "eu-west-1")


def test_unknown_and_malformed_targets_fail_clearly(aws_sandbox: AwsSandbox):
    provider = aws_sandbox.provider()
    with pytest.raises(TargetNotFoundError, match="i-0123456789abcdef0"):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "i-0123456789abcdef0", "us-east-1"))
    with pytest.raises(TargetNotFoundError, match=r"10\.9\.9\.9"):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "10.9.9.9", "us-east-1"))
    with pytest.raises(CloudirError, match="not an instance id"):
        provider.find_target(TargetQuery(TargetKind.INSTANCE, "web-server", "us-east-1"))


def test_access_key_resolves_to_its_user(aws_sandbox: AwsSandbox, compromised_user: tuple[str, str]):
    user, key = compromised_user
    target = aws_sandbox.provider().find_target(TargetQuery(TargetKind.ACCESS_KEY, key))
    assert (target.kind, target.name, target.details["user"]) == (TargetKind.ACCESS_KEY, user, user)
    with pytest.raises(TargetNotFoundError):
        aws_sandbox.provider().find_target(TargetQuery(TargetKind.ACCESS_KEY, "AKIAXXXXXXXXXXXXXXXX"))


def test_throttling_is_retried_with_backoff(aws_sandbox: AwsSandbox, aws_incident: PlantedIncident):
    provider = aws_sandbox.provider()
    with aws_sandbox.throttle("DescribeInstances", times=1):
        target = provider.find_target(aws_incident.target)
    assert target.id == aws_incident.extra["instance_id"]
    assert aws_sandbox.throttled == ["DescribeInstances"]
