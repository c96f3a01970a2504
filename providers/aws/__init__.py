"""AWS adapter (boto3)."""

from typing import Any

import boto3

from providers.aws.provider import AwsProvider

OFFLINE_CONFIG: dict[str, Any] = {}  # the adapter needs no credentials to be built; plans for symbolic targets


def create_provider(**config: Any) -> AwsProvider:
    """Build the AWS provider: region, profile, session (boto3.Session), all_regions."""
    return AwsProvider(**config)


def credentials_found(**config: Any) -> bool:
    """Whether the standard credential chain (``--profile``/AWS_PROFILE, environment, files, SSO, IMDS) has any."""
    session = config.get("session") or boto3.Session(profile_name=config.get("profile"))
    return session.get_credentials() is not None
