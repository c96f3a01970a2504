"""AWS adapter (boto3)."""

from typing import Any

import boto3

from cloudir.config import Config
from cloudir.provider import LogScope, Target, TargetKind
from providers.aws.provider import AwsProvider

OFFLINE_CONFIG: dict[str, Any] = {}  # the adapter needs no credentials to be built; plans for symbolic targets


def create_provider(**config: Any) -> AwsProvider:
    """Build the AWS provider: region, profile, session (boto3.Session), all_regions."""
    return AwsProvider(**config)


def credentials_found(**config: Any) -> bool:
    """Whether the standard credential chain (``--profile``/AWS_PROFILE, environment, files, SSO, IMDS) has any."""
    session = config.get("session") or boto3.Session(profile_name=config.get("profile"))
    return session.get_credentials() is not None


def trigger_config(account: str | None, region: str | None, config: Config) -> dict[str, Any]:
    """Settings for a finding from ``account``: its region, and the roles ``[roles.aws]`` maps it and the forensic
    account (``[forensic] aws``) to, with their external ids."""
    settings: dict[str, Any] = {"region": region} if region else {}
    member = config.role_for("aws", account)
    if member and account:
        settings |= {"role_arn": _role_arn(member, account), "external_id": config.external_id_for("aws", account)}
    forensic = config.forensic_for("aws", account)
    forensic_role = config.roles.get("aws", {}).get(forensic or "")
    if forensic and forensic_role:
        settings |= {
            "forensic_role_arn": _role_arn(forensic_role, forensic),
            "forensic_external_id": config.external_id_for("aws", forensic),
        }
    return settings


def _role_arn(role: str, account: str) -> str:
    """A configured role: an ARN as it is, a bare name in ``account``."""
    return role if role.startswith("arn:") else f"arn:aws:iam::{account}:role/{role}"


def offline_trigger_config(account: str | None, region: str | None) -> dict[str, Any]:
    """Settings to plan a finding's response offline (no credentials, never called): the finding's region."""
    return {"region": region or "us-east-1"}


def log_scope(target: Target) -> LogScope:
    """CloudTrail narrowed to a target: a key's own events, a principal's (a role: its sessions), an instance's
    resource events and its instance-role sessions (CloudTrail names them after the instance)."""
    if target.kind is TargetKind.ACCESS_KEY:
        return LogScope(access_keys=(target.id,))
    if target.kind is TargetKind.PRINCIPAL:
        return LogScope(principals=(target.id,))
    return LogScope(resources=(target.id,))
