"""The responder's IAM policy, statement by statement: every write action scoped so the role cannot escalate.

Each action the provider declares lands in exactly one statement. Reads (Describe/Get/List/Lookup) are on ``*``:
many of them support no resource-level permissions, and they change nothing. Every write action is scoped to the
resources the tool creates (tagged ``cloudir:case-id`` at creation) or the targets of its own account; no write is
on a bare ``*``. A fixed deny keeps the role from changing its own permissions or those of the roles it assumes
(``cloudir-*``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cloudir.serverless.policy import require_scoped

TAG_CASE = "cloudir:case-id"  # the tag the AWS provider puts on what it creates (a test holds the two equal)
QUARANTINE_PROFILE = "cloudir-quarantine"  # the empty instance profile of an EC2 containment (likewise)

ACCOUNT = "*"  # resources of the responder's own account: the statements carry the aws:ResourceAccount condition
OWN_ACCOUNT = {"aws:ResourceAccount": "${aws:PrincipalAccount}"}
QUARANTINE_ROLE_PATH = "/cloudir/quarantine/"
CASE_PREFIX = "cir-"  # case ids, the key prefix of every evidence-bucket object
_READ_VERBS = ("Describe", "Get", "List", "Lookup", "Filter")
_READ_ACTIONS = frozenset({"logs:StartQuery"})  # starts a Logs Insights query: IAM's access level for it is Read
_HAS_CASE_TAG = {"Null": {f"aws:ResourceTag/{TAG_CASE}": "false"}}
_TAGS_CASE_AT_CREATION = {"Null": {f"aws:RequestTag/{TAG_CASE}": "false"}}
_EC2 = f"arn:aws:ec2:*:{ACCOUNT}"


@dataclass(frozen=True)
class Statement:
    """One policy statement and why it exists (printed by ``cloudir iam-policy aws --explain``)."""

    sid: str
    why: str
    actions: frozenset[str]
    resources: tuple[str, ...]
    condition: dict[str, Any] = field(default_factory=dict)
    effect: str = "Allow"
    own_account: bool = True  # only resources of the account the responder acts in (each role: its own)

    def document(self, actions: list[str]) -> dict[str, Any]:
        """The statement as IAM JSON, for ``actions`` (the declared ones it covers)."""
        resource: str | list[str] = self.resources[0] if len(self.resources) == 1 else list(self.resources)
        body: dict[str, Any] = {"Sid": self.sid, "Effect": self.effect, "Action": actions, "Resource": resource}
        condition = dict(self.condition)
        if self.own_account:
            condition["StringEquals"] = {**condition.get("StringEquals", {}), **OWN_ACCOUNT}
        return body | ({"Condition": condition} if condition else {})


STATEMENTS: tuple[Statement, ...] = (
    Statement(
        "PreserveAutoScalingMembers",
        "keep the target's Auto Scaling group from terminating it (protection, standby, detach), own account only",
        frozenset({"autoscaling:DetachInstances", "autoscaling:EnterStandby", "autoscaling:SetInstanceProtection"}),
        (f"arn:aws:autoscaling:*:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/*",),
    ),
    Statement(
        "SnapshotTargetVolumes",
        "snapshot the target's volumes; the snapshots must be tagged with the case at creation",
        frozenset({"ec2:CreateSnapshot", "ec2:CreateSnapshots"}),
        (f"{_EC2}:instance/*", f"{_EC2}:volume/*", "arn:aws:ec2:*::snapshot/*"),
        _TAGS_CASE_AT_CREATION,
    ),
    Statement(
        "CopyCaseSnapshots",
        "copy case snapshots (re-encrypted to the forensic key); the copy must be tagged with the case",
        frozenset({"ec2:CopySnapshot"}),
        ("arn:aws:ec2:*::snapshot/*",),
        _TAGS_CASE_AT_CREATION,
    ),
    Statement(
        "TagAtCreation",
        "tags only as part of creating a snapshot, a snapshot copy or the quarantine security group",
        frozenset({"ec2:CreateTags"}),
        ("arn:aws:ec2:*::snapshot/*", f"{_EC2}:security-group/*"),
        {
            "StringEquals": {
                "ec2:CreateAction": ["CreateSnapshot", "CreateSnapshots", "CopySnapshot", "CreateSecurityGroup"]
            }
        },
    ),
    Statement(
        "TagCaseSnapshots",
        "add the volume tag to snapshots the tool created (already tagged with the case)",
        frozenset({"ec2:CreateTags"}),
        ("arn:aws:ec2:*::snapshot/*",),
        _HAS_CASE_TAG,
    ),
    Statement(
        "ShareCaseSnapshots",
        "share only case snapshots (tagged with the case) with the forensic account",
        frozenset({"ec2:ModifySnapshotAttribute"}),
        ("arn:aws:ec2:*::snapshot/*",),
        _HAS_CASE_TAG,
    ),
    Statement(
        "CreateQuarantineSecurityGroup",
        "create the quarantine security group, tagged with the case at creation, in the target's VPC",
        frozenset({"ec2:CreateSecurityGroup"}),
        (f"{_EC2}:security-group/*", f"{_EC2}:vpc/*"),
        _TAGS_CASE_AT_CREATION,
    ),
    Statement(
        "ConfigureQuarantineSecurityGroup",
        "change rules only of security groups the tool created (tagged with the case)",
        frozenset(
            {"ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress"}
        ),
        (f"{_EC2}:security-group/*",),
        _HAS_CASE_TAG,
    ),
    Statement(
        "IsolateTarget",
        "isolate the target: termination protection, security groups, instance profile swap, own account only",
        frozenset(
            {
                "ec2:ModifyInstanceAttribute",
                "ec2:ModifyNetworkInterfaceAttribute",
                "ec2:ReplaceIamInstanceProfileAssociation",
            }
        ),
        (f"{_EC2}:instance/*", f"{_EC2}:network-interface/*", f"{_EC2}:security-group/*"),
    ),
    Statement(
        "QuarantineInstanceProfile",
        f"create and tag only the empty instance profile {QUARANTINE_PROFILE}",
        frozenset({"iam:CreateInstanceProfile", "iam:TagInstanceProfile"}),
        (f"arn:aws:iam::{ACCOUNT}:instance-profile/{QUARANTINE_PROFILE}",),
    ),
    Statement(
        "PassOnlyTheQuarantineRole",
        f"pass no role but one under {QUARANTINE_ROLE_PATH}, and only to EC2 (the quarantine profile holds none)",
        frozenset({"iam:PassRole"}),
        (f"arn:aws:iam::{ACCOUNT}:role{QUARANTINE_ROLE_PATH}*",),
        {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    ),
    Statement(
        "RevokeCompromisedCredentials",
        "deny-all inline policies, key deactivation and console password removal for compromised principals",
        frozenset({"iam:PutRolePolicy", "iam:PutUserPolicy", "iam:UpdateAccessKey", "iam:DeleteLoginProfile"}),
        (f"arn:aws:iam::{ACCOUNT}:role/*", f"arn:aws:iam::{ACCOUNT}:user/*"),
    ),
    Statement(
        "KmsThroughEbsOnly",
        "use KMS keys only through EC2 / EBS (snapshot copy and reads of encrypted snapshots)",
        frozenset({"kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}),
        ("arn:aws:kms:*:*:key/*",),
        {"StringLike": {"kms:ViaService": ["ec2.*.amazonaws.com", "ebs.*.amazonaws.com"]}},
        own_account=False,  # the forensic account's key too
    ),
    Statement(
        "KmsGrantsForEbsOnly",
        "grants on KMS keys only for AWS resources (EBS snapshot copy), and only through EC2 / EBS",
        frozenset({"kms:CreateGrant", "kms:RevokeGrant"}),
        ("arn:aws:kms:*:*:key/*",),
        {
            "Bool": {"kms:GrantIsForAWSResource": "true"},
            "StringLike": {"kms:ViaService": ["ec2.*.amazonaws.com", "ebs.*.amazonaws.com"]},
        },
        own_account=False,
    ),
    Statement(
        "WriteEvidenceUnderCasePrefix",
        f"write evidence and its retention only under a case prefix ({CASE_PREFIX}…) of a bucket",
        frozenset({"s3:PutObject", "s3:PutObjectRetention", "s3:AbortMultipartUpload"}),
        (f"arn:aws:s3:::*/{CASE_PREFIX}*",),
        own_account=False,  # the evidence bucket is in the forensic account
    ),
    Statement(
        "AssumeCloudirRoles",
        "assume only roles named cloudir-* (the configured cross-account responder roles)",
        frozenset({"sts:AssumeRole"}),
        ("arn:aws:iam::*:role/cloudir-*",),
        own_account=False,
    ),
)

SELF_PROTECTION = Statement(
    "NeverChangeResponderPermissions",
    "whatever the statements above allow, no cloudir-* role or user (the responder itself, the roles it assumes) "
    "can have its policies or trust changed by it",
    frozenset(
        {
            "iam:AttachRolePolicy",
            "iam:AttachUserPolicy",
            "iam:DeleteRolePermissionsBoundary",
            "iam:DeleteRolePolicy",
            "iam:DeleteUserPolicy",
            "iam:PutRolePolicy",
            "iam:PutUserPolicy",
            "iam:UpdateAssumeRolePolicy",
        }
    ),
    ("arn:aws:iam::*:role/cloudir-*", "arn:aws:iam::*:user/cloudir-*"),
    effect="Deny",
    own_account=False,
)


def is_read(action: str) -> bool:
    """Whether an action only reads (Describe/Get/List/Lookup...)."""
    return action in _READ_ACTIONS or action.split(":", 1)[1].startswith(_READ_VERBS)


def statements_for(actions: list[str]) -> list[Statement]:
    """The statements that grant ``actions``: a read statement on ``*`` and the scoped write statements."""
    writes = sorted(action for action in actions if not is_read(action))
    require_scoped("aws", writes, (s.actions for s in STATEMENTS))
    reads = Statement(
        "ReadOnly",
        "describe, list and read the target, its logs and its identities; these change nothing",
        frozenset(action for action in actions if is_read(action)),
        ("*",),
        own_account=False,
    )
    used = [s for s in STATEMENTS if s.actions & set(writes)]
    return [reads, *used, SELF_PROTECTION]


def document(actions: list[str]) -> dict[str, Any]:
    """The IAM policy granting ``actions`` (as declared by the provider), statement by statement."""
    wanted = set(actions)
    statements = [
        s.document(sorted(s.actions if s.effect == "Deny" else s.actions & wanted)) for s in statements_for(actions)
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def explain(actions: list[str]) -> list[tuple[str, str, str, list[str], list[str]]]:
    """One row per statement: sid, effect, why, actions, resources and conditions."""
    rows = []
    for statement, body in zip(statements_for(actions), document(actions)["Statement"], strict=True):
        resources = body["Resource"] if isinstance(body["Resource"], list) else [body["Resource"]]
        scope = [*resources, *([json.dumps(body["Condition"])] if "Condition" in body else [])]
        rows.append((statement.sid, statement.effect, statement.why, list(body["Action"]), scope))
    return rows
