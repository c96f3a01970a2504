"""pytest fixtures for the aws sandbox: the planted incident and smaller scenarios."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from moto_fixtures.aws import (
    AwsSandbox,
    create_customer_key,
    create_user_with_key,
    launch_instance,
    mark_aws_managed,
)
from moto_fixtures.sandbox import PlantedIncident


@pytest.fixture
def aws_sandbox() -> Iterator[AwsSandbox]:
    """A running moto sandbox (us-east-1 default, us-west-2 as forensic region)."""
    with AwsSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def aws_incident(aws_sandbox: AwsSandbox) -> PlantedIncident:
    """The planted incident: ASG web server, aws/ebs data volume, instance role, leaked access key."""
    return aws_sandbox.plant_incident()


@pytest.fixture
def multi_volume_instance(aws_sandbox: AwsSandbox) -> str:
    """A standalone instance with a root volume and three data volumes."""
    return launch_instance(aws_sandbox, extra_volumes=3)


@pytest.fixture
def customer_key_instance(aws_sandbox: AwsSandbox) -> tuple[str, str]:
    """(instance id, key ARN): an instance whose data volume is encrypted with a customer-managed key."""
    key = create_customer_key(aws_sandbox, aws_sandbox.region, "app-data")
    return launch_instance(aws_sandbox, extra_volumes=1, encrypted_key=key), key


@pytest.fixture
def aws_managed_key_instance(aws_sandbox: AwsSandbox) -> str:
    """An instance whose data volume is encrypted with the AWS-managed aws/ebs key."""
    key = create_customer_key(aws_sandbox, aws_sandbox.region, "ebs-default-stand-in")
    mark_aws_managed(aws_sandbox, key, aws_sandbox.region)
    return launch_instance(aws_sandbox, extra_volumes=1, encrypted_key=key)


@pytest.fixture
def remote_region_instance(aws_sandbox: AwsSandbox) -> str:
    """An instance in eu-west-1 (for --all-regions searches)."""
    aws_sandbox.regions.add("eu-west-1")
    return launch_instance(aws_sandbox, region="eu-west-1", extra_volumes=1)


@pytest.fixture
def compromised_user(aws_sandbox: AwsSandbox) -> tuple[str, str]:
    """(user name, leaked key id): an IAM user with two active access keys."""
    create_user_with_key(aws_sandbox, "build-bot", keys=2)
    key = aws_sandbox.client("iam").list_access_keys(UserName="build-bot")["AccessKeyMetadata"][0]["AccessKeyId"]
    return "build-bot", str(key)
