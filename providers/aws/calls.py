"""The one table of AWS API calls that acquisition and containment plans may make, with their IAM actions.

Every :class:`~cloudir.plan.PlannedCall` is built through :func:`planned`, which refuses a call missing
from the table, so :func:`required_permissions` always covers what the plans do.
"""

from __future__ import annotations

from typing import Any

from cloudir.plan import PlannedCall

_KMS_USE = ("kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext")

API_CALLS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sts", "GetCallerIdentity"): ("sts:GetCallerIdentity",),
    ("ec2", "DescribeRegions"): ("ec2:DescribeRegions",),
    ("ec2", "DescribeInstances"): ("ec2:DescribeInstances",),
    ("ec2", "DescribeInstanceAttribute"): ("ec2:DescribeInstanceAttribute",),
    ("ec2", "ModifyInstanceAttribute"): ("ec2:ModifyInstanceAttribute",),
    ("ec2", "DescribeVolumes"): ("ec2:DescribeVolumes",),
    ("ec2", "DescribeNetworkInterfaces"): ("ec2:DescribeNetworkInterfaces",),
    ("ec2", "DescribeSecurityGroups"): ("ec2:DescribeSecurityGroups",),
    ("ec2", "DescribeIamInstanceProfileAssociations"): ("ec2:DescribeIamInstanceProfileAssociations",),
    ("ec2", "GetConsoleOutput"): ("ec2:GetConsoleOutput",),
    ("ec2", "DescribeSnapshots"): ("ec2:DescribeSnapshots",),
    ("ec2", "CreateSnapshots"): ("ec2:CreateSnapshots", "ec2:CreateTags"),
    ("ec2", "CreateSnapshot"): ("ec2:CreateSnapshot", "ec2:CreateTags"),
    ("ec2", "CreateTags"): ("ec2:CreateTags",),
    ("ec2", "CopySnapshot"): ("ec2:CopySnapshot", "ec2:CreateTags", "kms:ReEncryptFrom", "kms:ReEncryptTo", *_KMS_USE),
    ("ec2", "ModifySnapshotAttribute"): ("ec2:ModifySnapshotAttribute",),
    ("ec2", "CreateSecurityGroup"): ("ec2:CreateSecurityGroup", "ec2:CreateTags"),
    ("ec2", "RevokeSecurityGroupEgress"): ("ec2:RevokeSecurityGroupEgress",),
    ("ec2", "RevokeSecurityGroupIngress"): ("ec2:RevokeSecurityGroupIngress",),
    ("ec2", "AuthorizeSecurityGroupIngress"): ("ec2:AuthorizeSecurityGroupIngress",),
    ("ec2", "ModifyNetworkInterfaceAttribute"): ("ec2:ModifyNetworkInterfaceAttribute",),
    ("ec2", "ReplaceIamInstanceProfileAssociation"): ("ec2:ReplaceIamInstanceProfileAssociation", "iam:PassRole"),
    ("autoscaling", "DescribeAutoScalingInstances"): ("autoscaling:DescribeAutoScalingInstances",),
    ("autoscaling", "DescribeAutoScalingGroups"): ("autoscaling:DescribeAutoScalingGroups",),
    ("autoscaling", "SetInstanceProtection"): ("autoscaling:SetInstanceProtection",),
    ("autoscaling", "EnterStandby"): ("autoscaling:EnterStandby",),
    ("autoscaling", "DetachInstances"): ("autoscaling:DetachInstances",),
    ("kms", "DescribeKey"): ("kms:DescribeKey",),
    ("kms", "CreateGrant"): ("kms:CreateGrant",),
    ("kms", "RevokeGrant"): ("kms:RevokeGrant",),
    ("sts", "AssumeRole"): ("sts:AssumeRole",),
    ("ebs", "ListSnapshotBlocks"): ("ebs:ListSnapshotBlocks", "kms:Decrypt"),
    ("ebs", "GetSnapshotBlock"): ("ebs:GetSnapshotBlock", "kms:Decrypt"),
    ("iam", "GetInstanceProfile"): ("iam:GetInstanceProfile",),
    ("iam", "CreateInstanceProfile"): ("iam:CreateInstanceProfile", "iam:TagInstanceProfile"),
    ("iam", "ListRolePolicies"): ("iam:ListRolePolicies",),
    ("iam", "GetRolePolicy"): ("iam:GetRolePolicy",),
    ("iam", "ListAttachedRolePolicies"): ("iam:ListAttachedRolePolicies",),
    ("iam", "GetPolicy"): ("iam:GetPolicy",),
    ("iam", "GetPolicyVersion"): ("iam:GetPolicyVersion",),
    ("iam", "PutRolePolicy"): ("iam:PutRolePolicy",),
    ("iam", "GetAccessKeyLastUsed"): ("iam:GetAccessKeyLastUsed",),
    ("iam", "GetUser"): ("iam:GetUser",),
    ("iam", "ListAccessKeys"): ("iam:ListAccessKeys",),
    ("iam", "ListUserPolicies"): ("iam:ListUserPolicies",),
    ("iam", "GetUserPolicy"): ("iam:GetUserPolicy",),
    ("iam", "ListAttachedUserPolicies"): ("iam:ListAttachedUserPolicies",),
    ("iam", "ListGroupsForUser"): ("iam:ListGroupsForUser",),
    ("iam", "ListMFADevices"): ("iam:ListMFADevices",),
    ("iam", "UpdateAccessKey"): ("iam:UpdateAccessKey",),
    ("iam", "PutUserPolicy"): ("iam:PutUserPolicy",),
    ("iam", "GetRole"): ("iam:GetRole",),
    ("iam", "ListInstanceProfilesForRole"): ("iam:ListInstanceProfilesForRole",),
    ("iam", "ListGroupPolicies"): ("iam:ListGroupPolicies",),
    ("iam", "GetGroupPolicy"): ("iam:GetGroupPolicy",),
    ("iam", "ListAttachedGroupPolicies"): ("iam:ListAttachedGroupPolicies",),
    ("iam", "GetLoginProfile"): ("iam:GetLoginProfile",),
    ("iam", "DeleteLoginProfile"): ("iam:DeleteLoginProfile",),
    ("iam", "ListSSHPublicKeys"): ("iam:ListSSHPublicKeys",),
    ("cloudtrail", "LookupEvents"): ("cloudtrail:LookupEvents",),
    ("s3", "GetObjectLockConfiguration"): ("s3:GetBucketObjectLockConfiguration",),
    ("s3", "PutObject"): ("s3:PutObject", "s3:PutObjectRetention"),
    ("s3", "CreateMultipartUpload"): ("s3:PutObject", "s3:PutObjectRetention"),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
    ("s3", "AbortMultipartUpload"): ("s3:AbortMultipartUpload",),
    ("s3", "HeadObject"): ("s3:GetObject",),
    ("s3", "PutObjectRetention"): ("s3:PutObjectRetention",),
}


def planned(service: str, operation: str, region: str | None = None, **params: Any) -> PlannedCall:
    """A planned call; raises KeyError for a call missing from :data:`API_CALLS`."""
    if (service, operation) not in API_CALLS:
        raise KeyError(f"{service}:{operation} is not in providers.aws.calls.API_CALLS")
    return PlannedCall(service, operation, region, params)


def required_permissions() -> list[str]:
    """Every IAM action any acquisition or containment plan may need."""
    return sorted({action for actions in API_CALLS.values() for action in actions})
