"""AWS adapter (boto3)."""

from typing import Any

from providers.aws.provider import AwsProvider


def create_provider(**config: Any) -> AwsProvider:
    """Build the AWS provider: region, profile, session (boto3.Session), all_regions."""
    return AwsProvider(**config)
