"""Several AWS accounts in one moto sandbox, held to the cross-account rules of the real services.

moto lets any caller assume any role ARN and copies only snapshots of the caller's own account. Here,
as in AWS: AssumeRole needs the role to exist and its trust policy to name the caller's account (and
the external id it requires); CopySnapshot of another account's snapshot needs that snapshot shared
with the caller (createVolumePermission), a KMS grant to the caller on the source key when it is
encrypted, and a destination key of the caller's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
from moto.core.exceptions import _RESTError
from moto.ec2.exceptions import EC2ClientError, InvalidSnapshotIdError
from moto.ec2.models import ec2_backends
from moto.ec2.models.elastic_block_store import Snapshot
from moto.ec2.utils import random_snapshot_id
from moto.iam.models import iam_backends
from moto.kms.models import kms_backends
from moto.sts.models import STSBackend

SECURITY_ACCOUNT = "444455556666"  # where the responders' own credentials live
BOOTSTRAP_ROLE = "sandbox-bootstrap"  # the sandbox's own way into an account; never used by cloudir


class _AccessDeniedError(_RESTError):
    """STS's 403 AccessDenied (not a modelled STS error shape, so moto's modelled exceptions cannot send it)."""

    code = 403


def _trusts(document: str, caller: str, external_id: str | None) -> bool:
    """Whether a role's trust policy lets ``caller``'s account assume it with ``external_id``."""
    for statement in json.loads(document).get("Statement", []):
        principals = (statement.get("Principal") or {}).get("AWS", [])
        principals = [principals] if isinstance(principals, str) else principals
        if statement.get("Effect") != "Allow" or not {caller, f"arn:aws:iam::{caller}:root"} & set(principals):
            continue
        required = ((statement.get("Condition") or {}).get("StringEquals") or {}).get("sts:ExternalId")
        if required is None or required == external_id:
            return True
    return False


def strict_assume_role(original: Callable[..., Any]) -> Callable[..., Any]:
    """STSBackend.assume_role refusing a missing role or one whose trust does not name the caller."""

    def assume_role(backend: STSBackend, *args: Any, **kwargs: Any) -> Any:
        role_arn, external_id = kwargs["role_arn"], kwargs.get("external_id")
        account, name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[-1]
        if name != BOOTSTRAP_ROLE:
            denied = _AccessDeniedError(
                "AccessDenied",
                f"User: arn:aws:iam::{backend.account_id}:… is not authorized to perform: sts:AssumeRole on resource: "
                f"{role_arn}",
            )
            roles = [r for r in iam_backends[account]["aws"].get_roles() if r.arn == role_arn]
            if not roles or not _trusts(roles[0].assume_role_policy_document, backend.account_id, external_id):
                raise denied
        return original(backend, *args, **kwargs)

    return assume_role


def cross_account_copy(
    original: Callable[..., Any], register_blocks: Callable[[Any, Any, str, str, str], None]
) -> Callable[..., Any]:
    """Ec2 CopySnapshot that also copies a snapshot another account shared with the caller, as AWS allows.

    ``register_blocks(backend, copy, source account, source region, source snapshot id)`` gives the copy
    the source's disk blocks."""

    def copy_snapshot(
        backend: Any, source_snapshot_id: str, source_region: str, description: str, kms_key_id: str | None
    ) -> Any:
        caller = backend.account_id
        if source_snapshot_id in ec2_backends[caller][source_region].snapshots:
            copy = original(backend, source_snapshot_id, source_region, description, kms_key_id)
            register_blocks(backend, copy, caller, source_region, source_snapshot_id)
            return copy
        owner, source = _shared_snapshot(caller, source_region, source_snapshot_id)
        if source.encrypted:
            _require_grant(owner, source_region, source.kms_key_id, caller)
        if kms_key_id and not _own_key(caller, backend.region_name, kms_key_id):
            raise EC2ClientError("InvalidParameterValue", f"KMS key {kms_key_id} is not a key of account {caller}")
        copy = Snapshot(
            backend,
            random_snapshot_id(),
            volume=source.volume,
            description=description,
            encrypted=source.encrypted or bool(kms_key_id),
            kms_key_id=kms_key_id,
        )
        backend.snapshots[copy.id] = copy
        register_blocks(backend, copy, owner, source_region, source_snapshot_id)
        return copy

    return copy_snapshot


def _shared_snapshot(caller: str, region: str, snapshot_id: str) -> tuple[str, Any]:
    for account, regions in ec2_backends.items():
        snapshot = regions[region].snapshots.get(snapshot_id) if account != caller else None
        if snapshot is None:
            continue
        if caller in snapshot.create_volume_permission_userids or "all" in snapshot.create_volume_permission_groups:
            return account, snapshot
        break
    raise InvalidSnapshotIdError()


def _require_grant(owner: str, region: str, key_id: str | None, caller: str) -> None:
    key = kms_backends[owner][region].describe_key(str(key_id))
    if not any(g.grantee_principal in {caller, f"arn:aws:iam::{caller}:root"} for g in key.grants.values()):
        raise EC2ClientError(
            "InvalidParameter", f"The snapshot's KMS key {key.arn} does not grant account {caller} its use"
        )


def _own_key(account: str, region: str, key_id: str) -> bool:
    keys = kms_backends[account][region].keys.values()
    return any(key_id in {k.id, k.arn} for k in keys)


def account_session(account: str, region: str) -> boto3.Session:
    """A boto3 session with credentials of ``account`` (the sandbox's own bootstrap role)."""
    answer = boto3.client("sts", region_name=region).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{BOOTSTRAP_ROLE}", RoleSessionName="sandbox"
    )
    creds = answer["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )


def create_trusted_role(session: boto3.Session, name: str, trusted_account: str, external_id: str | None) -> str:
    """A role in ``session``'s account that ``trusted_account`` may assume (with ``external_id``); its ARN."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{trusted_account}:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    return str(session.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument=policy)["Role"]["Arn"])
